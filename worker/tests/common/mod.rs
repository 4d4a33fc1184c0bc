//! Helpers shared by the worker's integration tests (each test binary
//! includes this module).
use std::path::Path;
use std::time::Duration;

use pgsnapman_worker::Config;
use pgsnapman_worker::config::default_bin_dirs;
use pgsnapman_worker::runner::Runner;
use pgsnapman_worker::runner::client::Clients;

/// A runner with its pack store, spool and tmp under `dir` (no coordinator),
/// with the default configuration but for a 2 s kill grace period.
pub async fn runner(dir: &Path) -> Runner {
    let mut config = Config::default();
    config.dump.kill_grace_period = Duration::from_secs(2);
    runner_with(dir, &config).await
}

/// `runner` with the timeouts and limits of `config`.
pub async fn runner_with(dir: &Path, config: &Config) -> Runner {
    let clients = Clients::discover(&default_bin_dirs()).await;
    assert!(
        !clients.majors().is_empty(),
        "no pg_dump found: install postgresql-client"
    );
    let dir = dir.canonicalize().expect("the test directory exists");
    let store = pgsnapman_store::Store::open(&dir, pgsnapman_store::StoreOptions::default())
        .expect("open the pack store");
    Runner::new(clients, &dir, store, config).expect("create the runner")
}
