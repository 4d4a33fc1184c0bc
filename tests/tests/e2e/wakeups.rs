//! Catalog notifications wake the coordinator (issue 15, item 2): with the
//! lease poll set to an hour, a task queued after the worker connected is
//! still leased at once, a schedule change still reaches the worker, and
//! `--wait` follows the task on a WatchTask stream — or polls when the
//! coordinator's `admin.max_watch_streams` are taken.
use std::time::Duration;

use pgsnapman_proto::v1;
use pgsnapman_tests::{Coordinator, CoordinatorOptions, PgCluster, Worker, WorkerOptions, wait};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_work_and_schedule_changes_need_no_poll() {
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let source = PgCluster::start(PG_MAJOR).unwrap();
    let coordinator = Coordinator::start(CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        env: vec![
            // Only a notification can hand out work or schedule changes.
            ("PGSNAPMAN_LEASE__POLL_INTERVAL".into(), "1h".into()),
            ("PGSNAPMAN_ADMIN__MAX_WATCH_STREAMS".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let cli = coordinator.cli();
    register_worker(&cli, "w-wake");
    let mut worker = Worker::start(WorkerOptions {
        name: "w-wake".into(),
        coordinator: coordinator.access(),
        data_dir: None,
        env: vec![],
    })
    .unwrap();
    coordinator.wait_worker_connected("w-wake").await;

    // A schedule change after the worker connected reaches it.
    let instance = add_instance(&cli, "src", source.port, "w-wake", None);
    let job = add_job(&cli, instance, "postgres");
    let version = |field: &str| {
        cli.json(&["worker", "show", "w-wake"]).unwrap()[field]
            .as_u64()
            .unwrap_or(0)
    };
    wait::until(
        "the worker to confirm the new schedule",
        Duration::from_secs(60),
        || async {
            let v = version("schedule_version");
            (v > 0 && version("confirmed_schedule_version") == v).then_some(())
        },
    )
    .await;

    // A task queued after the worker granted its credit is leased and
    // followed to the end (on the one WatchTask slot).
    dump_and_show(&cli, job);

    // With the only WatchTask slot taken, --wait polls instead.
    let mut admin = coordinator.admin().await.unwrap();
    let task = dump_now(&cli, job);
    let mut held = admin
        .watch_task(v1::IdRequest { id: task })
        .await
        .unwrap()
        .into_inner();
    let first = held.message().await.unwrap().unwrap();
    assert_eq!(first.id, task);
    let busy = admin
        .watch_task(v1::IdRequest { id: task })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(busy.code(), tonic::Code::ResourceExhausted, "{busy:?}");
    assert!(
        busy.message().contains("admin.max_watch_streams"),
        "{busy:?}"
    );
    dump_and_show(&cli, job);
    // The held stream saw its task through to the end, then closed.
    let mut last = first;
    while let Some(t) = held.message().await.unwrap() {
        last = t;
    }
    assert_eq!(last.state(), v1::TaskState::Succeeded, "{last:?}");
    let unknown = admin
        .watch_task(v1::IdRequest { id: 987_654 })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");

    worker.process.stop_clean().await;
    let mut coordinator = coordinator;
    coordinator.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    coordinator.process.assert_no_unexpected_errors(&[]);
}
