//! The coordinator restarts while a worker is connected: the worker reconnects
//! by itself and the next task runs.
use pgsnapman_tests::{Coordinator, CoordinatorOptions};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_reconnects_after_coordinator_restart() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let catalog = pgsnapman_tests::PgCluster::start(PG_MAJOR).unwrap();
    let opts = CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        listen: Some(listen.clone()),
        ..Default::default()
    };
    let mut coordinator = Coordinator::start(opts.clone()).await.unwrap();
    let cli = coordinator.cli();
    register_worker(&cli, "w-re");
    let mut worker = pgsnapman_tests::Worker::start(pgsnapman_tests::WorkerOptions {
        name: "w-re".into(),
        coordinator: coordinator.access(),
        ..Default::default()
    })
    .unwrap();
    coordinator.wait_worker_connected("w-re").await;
    let source = pgsnapman_tests::PgCluster::start(PG_MAJOR).unwrap();
    let inst = add_instance(&cli, "src", source.port, "w-re", None);
    let job = add_job(&cli, inst, "postgres");
    let first = wait_task_done(&cli, dump_now(&cli, job)).await;
    assert_eq!(first["state"], "SUCCEEDED", "{first}");

    coordinator.process.stop_clean().await;
    coordinator.process.assert_no_unexpected_errors(&[]);
    // While it is down, the worker keeps running and retrying.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        worker.process.is_running(),
        "worker died with its coordinator"
    );

    let mut again = Coordinator::start(opts).await.unwrap();
    // Queued right after the restart; only a reconnected worker can run it.
    let second = wait_task_done(&cli, dump_now(&cli, job)).await;
    assert_eq!(second["state"], "SUCCEEDED", "{second}");
    assert_eq!(catalog_of_job(&cli, job).len(), 2);

    worker.process.stop_clean().await;
    again.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    again.process.assert_no_unexpected_errors(&[]);
}

/// `pgsnap dump now --wait` keeps waiting through a coordinator restart and
/// reports the task's real end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_now_wait_survives_a_coordinator_restart() {
    use std::process::Stdio;

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let catalog = pgsnapman_tests::PgCluster::start(PG_MAJOR).unwrap();
    let opts = CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        listen: Some(format!("127.0.0.1:{port}")),
        ..Default::default()
    };
    let mut coordinator = Coordinator::start(opts.clone()).await.unwrap();
    let cli = coordinator.cli();
    register_worker(&cli, "w-wait");
    let mut worker = pgsnapman_tests::Worker::start(pgsnapman_tests::WorkerOptions {
        name: "w-wait".into(),
        coordinator: coordinator.access(),
        ..Default::default()
    })
    .unwrap();
    coordinator.wait_worker_connected("w-wait").await;
    let source = pgsnapman_tests::PgCluster::start(PG_MAJOR).unwrap();
    source.create_database("held").unwrap();
    source
        .script("held", "CREATE TABLE h AS SELECT 1 AS id;")
        .unwrap();
    // Hold a lock so that the dump waits while the coordinator restarts.
    let lock = TableLock::hold(&source, "held", "h").await;
    let inst = add_instance(&cli, "src", source.port, "w-wait", None);
    let job = add_job(&cli, inst, "held");
    let waiting = cli
        .command(&["dump", "now", &job.to_string(), "--wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    TableLock::wait_dump_blocked(&source).await;
    coordinator.process.stop_clean().await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let mut again = Coordinator::start(opts).await.unwrap();
    // Release the lock: the dump finishes, the waiting client sees it.
    drop(lock);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pgsnap dump now --wait: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(catalog_of_job(&cli, job).len(), 1);
    worker.process.stop_clean().await;
    again.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    again.process.assert_no_unexpected_errors(&[]);
}
