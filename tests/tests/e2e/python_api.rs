//! Programmatic integration via proto, from Python: tests/python/test_api.py
//! (pytest, a client generated from proto/ with grpcio-tools) registers and
//! starts a worker, adds an instance and a job, dumps now, follows the task
//! by the WatchTask stream, reads the catalog and restores — against the real
//! coordinator this test starts.
use std::path::PathBuf;
use std::process::Command;

use pgsnapman_tests::{Coordinator, CoordinatorOptions, PgCluster};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_dumps_and_restores() {
    let python = test_python();
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let mut coordinator = Coordinator::start(CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        ..Default::default()
    })
    .await
    .unwrap();
    let source = PgCluster::start(PG_MAJOR).unwrap();
    source.create_database("py db").unwrap();
    source
        .script(
            "py db",
            "CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 42) g;",
        )
        .unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"])
        .arg(root.join("python/test_api.py"))
        .env("PGSNAPMAN_API_TARGET", &coordinator.addr)
        .env("PGSNAPMAN_API_CA", coordinator.ca_file.as_ref().unwrap())
        .env("PGSNAPMAN_API_TOKEN", coordinator.token.as_ref().unwrap())
        .env(
            "PGSNAPMAN_API_WORKER_BIN",
            pgsnapman_tests::binary("pgsnapman-worker"),
        )
        .env("PGSNAPMAN_API_SOURCE_PORT", source.port.to_string())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest failed:\n{text}");
    assert!(text.contains("3 passed"), "{text}");
    let restored = source
        .query("py restored", "SELECT count(*) FROM items")
        .unwrap();
    assert_eq!(restored, "42");
    coordinator.process.stop_clean().await;
    coordinator.process.assert_no_unexpected_errors(&[]);
}
