//! A real catalog cluster for the coordinator's integration tests: the
//! coordinator's own embedded catalog in a temporary directory, stopped on
//! drop.
use std::os::unix::fs::PermissionsExt;

use pgsnapman_coordinator::config::Config;
use pgsnapman_coordinator::embedded::EmbeddedCatalog;
use sqlx::postgres::PgConnectOptions;

pub struct Cluster {
    pub options: PgConnectOptions,
    embedded: Option<EmbeddedCatalog>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        // The embedded cluster's OS user (when run as root) must reach it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("make the directory traversable");
        let mut cfg = Config::default();
        cfg.catalog.embedded_fallback_dir = dir.path().join("fallback");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("create the data directory");
        let catalog_cfg = cfg.catalog.clone();
        let embedded =
            tokio::task::spawn_blocking(move || EmbeddedCatalog::start(&data, &catalog_cfg))
                .await
                .expect("embedded catalog start-up panicked")
                .expect("start the embedded catalog");
        let options = embedded.catalog_options().await.expect("catalog options");
        Cluster {
            options,
            embedded: Some(embedded),
            _dir: dir,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(e) = self.embedded.take() {
            e.stop();
        }
    }
}
