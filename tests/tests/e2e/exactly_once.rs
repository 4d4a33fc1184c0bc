//! Two coordinator processes share one catalog. Tasks are queued many times in
//! parallel through both; two processes of the same worker identity lease
//! from the two coordinators at once. Claims rely only on the database
//! (FOR UPDATE SKIP LOCKED), so every task runs to completion exactly once.
use std::collections::BTreeSet;

use pgsnapman_tests::{
    Coordinator, CoordinatorOptions, PgCluster, Pgsnap, PkiSource, Worker, WorkerOptions,
};

use crate::common::*;

const TASKS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_queued_in_parallel_run_exactly_once() {
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let source = PgCluster::start(PG_MAJOR).unwrap();
    source.create_database("small").unwrap();
    source
        .script(
            "small",
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g;",
        )
        .unwrap();
    let opts = || CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        // A CA of their own, shared the way docs/security-tls.md says:
        // b starts with a copy of a's pki/.
        pki: PkiSource::Own,
        ..Default::default()
    };
    let mut a = Coordinator::start(opts()).await.unwrap();
    let mut b = Coordinator::start(CoordinatorOptions {
        pki: PkiSource::From(a.data_dir.clone()),
        ..opts()
    })
    .await
    .unwrap();
    // One CA file reaches both coordinators.
    let b_with_a_ca = a.access().with_url(b.url());
    let cli_a = a.cli();
    let cli_b = Pgsnap::new(b_with_a_ca.clone());
    register_worker(&cli_a, "w-once");
    let inst = add_instance(&cli_b, "src", source.port, "w-once", None);
    let job = add_job(&cli_a, inst, "small");

    let mut w1 = Worker::start(WorkerOptions {
        name: "w-once".into(),
        coordinator: a.access(),
        ..Default::default()
    })
    .unwrap();
    let mut w2 = Worker::start(WorkerOptions {
        name: "w-once".into(),
        coordinator: b_with_a_ca.clone(),
        ..Default::default()
    })
    .unwrap();
    a.wait_worker_connected("w-once").await;

    // Queue TASKS dumps from several threads, alternating coordinators.
    let accesses = [a.access(), b_with_a_ca];
    let handles: Vec<_> = (0..TASKS)
        .map(|i| {
            let access = accesses[i % 2].clone();
            std::thread::spawn(move || dump_now(&Pgsnap::new(access), job))
        })
        .collect();
    let tasks: BTreeSet<i64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(tasks.len(), TASKS, "every queued task has its own id");

    for &t in &tasks {
        let done = wait_task_done(&cli_a, t).await;
        assert_eq!(done["state"], "SUCCEEDED", "{done}");
        assert_eq!(done["attempts"], 1, "task {t} ran more than once: {done}");
    }
    // Exactly one catalog row per task, and exactly TASKS archives on disk.
    let rows = catalog_of_job(&cli_b, job);
    assert_eq!(rows.len(), TASKS, "{rows:#?}");
    let row_tasks: BTreeSet<i64> = rows
        .iter()
        .map(|r| r["task_id"].as_i64().unwrap())
        .collect();
    assert_eq!(row_tasks, tasks);
    let stored = w1.stored_dumps().unwrap().len() + w2.stored_dumps().unwrap().len();
    assert_eq!(stored, TASKS);

    w1.process.stop_clean().await;
    w2.process.stop_clean().await;
    a.process.stop_clean().await;
    b.process.stop_clean().await;
    for p in [&w1.process, &w2.process, &a.process, &b.process] {
        p.assert_no_unexpected_errors(&[]);
    }
}
