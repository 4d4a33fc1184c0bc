//! Without a catalog URL the coordinator creates, starts and stops its own
//! catalog cluster under its data directory; data survives a restart.
use std::os::unix::fs::PermissionsExt;

use pgsnapman_tests::{Coordinator, CoordinatorOptions, PgCluster, Worker, WorkerOptions};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_catalog_is_created_used_and_stopped() {
    let dir = pgsnapman_tests::shared_tempdir("pgsnapman-embedded-");
    let data_dir = dir.path().join("coordinator");
    let opts = CoordinatorOptions {
        catalog_url: None,
        data_dir: Some(data_dir.clone()),
        ..Default::default()
    };
    let mut coordinator = Coordinator::start(opts.clone()).await.unwrap();
    let cli = coordinator.cli();
    register_worker(&cli, "w-emb");
    let password_file = data_dir.join("catalog.password");
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "catalog password file is readable by others: {mode:o}"
    );

    // The whole flow works on the embedded catalog.
    let mut worker = Worker::start(WorkerOptions {
        name: "w-emb".into(),
        coordinator: coordinator.access(),
        ..Default::default()
    })
    .unwrap();
    coordinator.wait_worker_connected("w-emb").await;
    let source = PgCluster::start(PG_MAJOR).unwrap();
    let inst = add_instance(&cli, "src", source.port, "w-emb", None);
    let job = add_job(&cli, inst, "postgres");
    let t = wait_task_done(&cli, dump_now(&cli, job)).await;
    assert_eq!(t["state"], "SUCCEEDED", "{t}");
    worker.process.stop_clean().await;

    coordinator.process.stop_clean().await;
    let catalog_dir = data_dir.join("catalog");
    let running: Vec<_> = process_command_lines()
        .into_iter()
        .filter(|(_, c)| c.contains("postgres") && c.contains(&*catalog_dir.to_string_lossy()))
        .collect();
    assert!(
        running.is_empty(),
        "embedded catalog still running: {running:?}"
    );

    // Second start reuses the same catalog: the worker and the dump are there.
    let mut again = Coordinator::start(opts).await.unwrap();
    let cli = again.cli();
    let workers = cli.json(&["worker", "list"]).unwrap();
    assert!(
        workers
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "w-emb"),
        "{workers}"
    );
    assert_eq!(catalog_of_job(&cli, job).len(), 1);
    again.process.stop_clean().await;
    again.process.assert_no_unexpected_errors(&[]);
    worker.process.assert_no_unexpected_errors(&[]);
}

/// Run as root from a 0700 home (the README's first command on a fresh VM):
/// the catalog's OS user cannot enter the data directory, so the cluster
/// goes under the fallback directory, and initdb does not trip over the
/// working directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_catalog_works_from_a_private_root_home() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this scenario needs root (the e2e suite runs as root)"
    );
    let home = tempfile::Builder::new()
        .prefix("pgsnapman-home-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let fallback = pgsnapman_tests::shared_tempdir("pgsnapman-fallback-");
    let opts = CoordinatorOptions {
        catalog_url: None,
        data_dir: Some(home.path().join("coordinator")),
        cwd: Some(home.path().to_path_buf()),
        env: vec![(
            "PGSNAPMAN_CATALOG__EMBEDDED_FALLBACK_DIR".into(),
            fallback.path().to_string_lossy().into_owned(),
        )],
        ..Default::default()
    };
    let mut coordinator = Coordinator::start(opts.clone()).await.unwrap();
    let cli = coordinator.cli();
    register_worker(&cli, "w-home");
    let clusters: Vec<_> = std::fs::read_dir(fallback.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        clusters.len() == 1 && clusters[0].starts_with("catalog-"),
        "{clusters:?}"
    );
    coordinator.process.stop_clean().await;
    coordinator.process.assert_no_unexpected_errors(&[]);

    // A restart finds the same cluster and its data.
    let mut again = Coordinator::start(opts).await.unwrap();
    let workers = again.cli().json(&["worker", "list"]).unwrap();
    assert!(
        workers
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "w-home"),
        "{workers}"
    );
    again.process.stop_clean().await;
    again.process.assert_no_unexpected_errors(&[]);
}
