//! Helpers shared by the worker's integration tests (each test binary
//! includes this module).
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pgsnapman_tests::PgCluster;

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

/// A session holding an ACCESS EXCLUSIVE lock on `table` until dropped.
#[allow(dead_code)] // not every test binary takes locks
pub struct Locker {
    child: std::process::Child,
}

#[allow(dead_code)]
impl Locker {
    pub fn hold(pg: &PgCluster, db: &str, table: &str) -> Self {
        let mut child = pg
            .psql_cmd(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT 1;"
        )
        .unwrap();
        stdin.flush().unwrap();
        let locked = format!(
            "SELECT count(*) FROM pg_locks WHERE relation = to_regclass('{table}') AND mode = 'AccessExclusiveLock' AND granted"
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while pg.query(db, &locked).unwrap() != "1" {
            assert!(Instant::now() < deadline, "{table} never locked");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
