//! `restore.max_concurrent`: a leased restore holds its dump and waits for
//! a restore slot (phase `restore-wait`), starts once one is free, and a
//! cancellation while it waits reports nothing and lets the dump go.
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pgsnapman_proto::v1::{DumpFormat, DumpType, RestoreStatus, TaskRef, event};
use pgsnapman_tests::PgCluster;
use pgsnapman_worker::progress::TaskProgress;
use pgsnapman_worker::task::Registry;
use pgsnapman_worker::{Config, Shared, mirror::Mirror, outbox::Outbox, state::State};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;

async fn shared(dir: &std::path::Path) -> Arc<Shared> {
    let state = State::open(&dir.join("state")).unwrap();
    let outbox = Arc::new(Outbox::open(&state).unwrap());
    let mut config = Config::default();
    config.worker.name = "w-slots".into();
    Arc::new(Shared {
        config,
        runner: crate::common::runner(dir).await,
        mirror: Mirror::open(&state).unwrap(),
        outbox,
        registry: Registry::default(),
        semaphore: Arc::new(Semaphore::new(2)),
        restore_slots: Arc::new(Semaphore::new(1)),
        acked: watch::channel(0).0,
        tasks: TaskTracker::new(),
        tasks_token: CancellationToken::new(),
        drain: CancellationToken::new(),
        backlog_warned: AtomicBool::new(false),
        store_changed: Notify::new(),
        retention_lock: tokio::sync::Mutex::new(()),
        standalone: Default::default(),
        runs: pgsnapman_worker::scheduler::Runs::new(2),
    })
}

/// Starts the task for `spec` and waits until it waits for a slot.
async fn start_waiting(
    shared: &Arc<Shared>,
    spec: RestoreSpec,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<Option<event::Body>> {
    let progress = Arc::new(TaskProgress::default());
    let handle = {
        let (shared, progress) = (Arc::clone(shared), Arc::clone(&progress));
        let task = TaskRef {
            task_id: spec.run_id,
            lease_id: "l".into(),
        };
        tokio::spawn(async move {
            pgsnapman_worker::restore::task(
                &shared.restore_slots,
                &shared.runner,
                Arc::clone(&shared.outbox),
                &task,
                &spec,
                &cancel,
                &progress,
            )
            .await
        })
    };
    pgsnapman_tests::wait::until(
        "the restore to wait for a slot",
        std::time::Duration::from_secs(30),
        || {
            let phase = progress.phase();
            async move { (phase == "restore-wait").then_some(()) }
        },
    )
    .await;
    handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_waits_for_a_restore_slot() {
    let pg = PgCluster::start(15).unwrap();
    pg.create_database("slot db").unwrap();
    pg.query("slot db", "CREATE TABLE t AS SELECT 1 AS x")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path()).await;
    let d = dump_with(
        &shared.runner,
        &pg,
        "slot db",
        DumpType::Full,
        DumpFormat::Custom,
        0,
    )
    .await;

    // The only slot is taken: the restore waits, and has not started; its
    // dump is held already (retention leaves it alone).
    let held = shared.restore_slots.clone().acquire_owned().await.unwrap();
    let waiting = spec(&d, &pg, to("slot copy"));
    let uuid = waiting.dump_uuid.clone();
    let handle = start_waiting(&shared, waiting, CancellationToken::new()).await;
    assert!(shared.runner.in_use().is_held(&uuid), "held while waiting");
    assert_eq!(
        pg.query(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'slot copy%'"
        )
        .unwrap(),
        "0"
    );
    drop(held);
    match handle.await.unwrap() {
        Some(event::Body::RestoreFinished(f)) => {
            assert_eq!(f.status(), RestoreStatus::Succeeded, "{}", f.error)
        }
        other => panic!("expected a RestoreFinished: {other:?}"),
    }
    assert_eq!(pg.query("slot copy", "SELECT x FROM t").unwrap(), "1");
    assert!(!shared.runner.in_use().is_held(&uuid), "let go at the end");

    // Cancelled while waiting: nothing is reported.
    let held = shared.restore_slots.clone().acquire_owned().await.unwrap();
    let cancel = CancellationToken::new();
    let handle = start_waiting(&shared, spec(&d, &pg, to("never")), cancel.clone()).await;
    assert!(shared.runner.in_use().is_held(&uuid));
    cancel.cancel();
    assert!(handle.await.unwrap().is_none());
    assert!(
        !shared.runner.in_use().is_held(&uuid),
        "let go when cancelled"
    );
    drop(held);
}
