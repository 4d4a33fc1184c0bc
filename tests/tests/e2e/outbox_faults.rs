//! The outbox under load and faults: a backlog larger than a gRPC message
//! is delivered in byte-bounded batches; the coordinator killed (kill -9)
//! or its catalog cluster crashed (`pg_ctl restart -m immediate`) while
//! batches are applied loses and doubles nothing; an event the coordinator
//! refuses is set aside on the worker and the rest flows.
use std::time::Duration;

use pgsnapman_proto::v1::event::Body;
use pgsnapman_proto::v1::{MessageLevel, WorkerMessage};
use pgsnapman_tests::{Coordinator, wait, worker_tool};

use crate::common::*;
use crate::link_faults::Rig;

fn message(class: &str, text: String) -> Body {
    Body::Message(WorkerMessage {
        level: MessageLevel::Info as i32,
        class: class.into(),
        job_id: 0,
        text,
    })
}

/// (rows, distinct texts) of the messages of `class`.
fn delivered(rig: &Rig, class: &str) -> (u64, u64) {
    let out = rig
        .catalog
        .query(
            "postgres",
            &format!(
                "SELECT count(*) || ' ' || count(DISTINCT text) FROM messages WHERE class = '{class}'"
            ),
        )
        .unwrap_or_default();
    let mut parts = out.split(' ').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

async fn wait_all_delivered(rig: &Rig, class: &str, total: u64) {
    wait::until(
        &format!("all {total} {class} events in the catalog"),
        Duration::from_secs(180),
        || async {
            let (rows, distinct) = delivered(rig, class);
            assert!(rows <= total, "{rows} rows for {total} events: duplicates");
            (rows == total).then_some(distinct)
        },
    )
    .await;
    let (rows, distinct) = delivered(rig, class);
    assert_eq!((rows, distinct), (total, total), "lost or doubled events");
}

/// Waits until part of the backlog is in the catalog, not all of it.
async fn wait_partly_delivered(rig: &Rig, class: &str, total: u64) {
    wait::until(
        "the backlog to be partly applied",
        Duration::from_secs(120),
        || async {
            let (rows, _) = delivered(rig, class);
            assert!(
                rows < total,
                "the whole backlog arrived before the fault could be injected"
            );
            (rows > 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_a_grpc_message_is_delivered() {
    let mut rig = Rig::start("w-big-backlog", &[]).await;
    // 300 events of 60 kB: 18 MB, more than the 16 MiB message limit.
    const N: u64 = 300;
    let pad = "x".repeat(60_000);
    let bodies = (0..N)
        .map(|i| message("BULK", format!("{i:04} {pad}")))
        .collect();
    rig.restart_worker_with(bodies).await;
    wait_all_delivered(&rig, "BULK", N).await;
    rig.stop(&[]).await;
}

/// Where a fault hits while a backlog is applied.
enum Fault {
    /// The coordinator is killed (SIGKILL) and started again.
    KillCoordinator,
    /// The catalog cluster crashes and recovers (`pg_ctl restart -m immediate`).
    CrashCatalog,
}

/// A dump, then a backlog of 20 000 events applied slowly through the
/// link; `fault` strikes part-way. Every event arrives once, the work goes
/// on, and every dump restores.
async fn fault_mid_batch(name: &str, class: &str, fault: Fault) -> Rig {
    let mut rig = Rig::start(name, &[]).await;
    let inst = add_instance(&rig.cli, "src", rig.source.port, &rig.name, None);
    let job = add_job(&rig.cli, inst, "app");
    dump_and_show(&rig.cli, job);
    const N: u64 = 20_000;
    let bodies = (0..N)
        .map(|i| message(class, format!("event {i:05}")))
        .collect();
    // Slow batches, so that the fault lands while they are applied.
    rig.link.slow(Duration::from_millis(50));
    rig.restart_worker_with(bodies).await;
    wait_partly_delivered(&rig, class, N).await;
    match fault {
        Fault::KillCoordinator => {
            rig.coordinator.process.kill9().await.unwrap();
            rig.coordinator = Coordinator::start(rig.coordinator_opts.clone())
                .await
                .unwrap();
        }
        Fault::CrashCatalog => rig.catalog.restart_immediate().unwrap(),
    }
    rig.link.restore();
    wait_all_delivered(&rig, class, N).await;
    dump_and_show(&rig.cli, job);
    assert_eq!(catalog_of_job(&rig.cli, job).len(), 2);
    rig.assert_dumps_restore(job);
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_mid_batch_loses_and_doubles_nothing() {
    let rig = fault_mid_batch("w-kill-coord", "KILL", Fault::KillCoordinator).await;
    rig.stop(&[]).await;
}

/// Found a bug: with the catalog at `synchronous_commit = off` (as in these
/// tests) an acknowledged batch could be lost in the crash, after the worker
/// had deleted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_crash_mid_batch_loses_and_doubles_nothing() {
    let rig = fault_mid_batch("w-crash-catalog", "CRASH", Fault::CrashCatalog).await;
    // The coordinator may report statements the crash cut off.
    rig.stop(&["internal error"]).await;
}

/// Events of class `class` in the catalog, with their texts.
fn texts_of(rig: &Rig, class: &str) -> Vec<String> {
    let out = rig.catalog_value(&format!(
        "SELECT coalesce(string_agg(text, E'\\n' ORDER BY id), '') FROM messages WHERE class = '{class}'"
    ));
    out.lines().map(str::to_string).collect()
}

/// A worker's outbox holds an event about another worker's job and one about
/// a task that does not exist (e.g. a catalog restored from an older backup):
/// the coordinator refuses each, naming it; the worker sets each aside (kept,
/// listed by `outbox refused`, reported as an ERROR message) and every other
/// event, before and after them, arrives. `outbox requeue` puts them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_are_set_aside_and_the_rest_flows() {
    use pgsnapman_proto::v1::{TaskFailed, TaskRef};

    let mut rig = Rig::start("w-refused", &[]).await;
    register_worker(&rig.cli, "w-other");
    let other = add_instance(&rig.cli, "other-src", rig.source.port, "w-other", None);
    let foreign_job = add_job(&rig.cli, other, "app");
    let foreign = Body::Message(WorkerMessage {
        level: MessageLevel::Info as i32,
        class: "REFUSAL".into(),
        job_id: foreign_job,
        text: "foreign".into(),
    });
    let lost_task = Body::TaskFailed(TaskFailed {
        task: Some(TaskRef {
            task_id: 987_654_321,
            lease_id: "gone".into(),
        }),
        error: "from before the catalog was restored".into(),
    });
    rig.restart_worker_with(vec![
        message("REFUSAL", "before".into()),
        foreign,
        message("REFUSAL", "between".into()),
        lost_task,
        message("REFUSAL", "after".into()),
    ])
    .await;
    wait::until(
        "the events around the refused ones in the catalog",
        Duration::from_secs(120),
        || async { (texts_of(&rig, "REFUSAL").len() >= 3).then_some(()) },
    )
    .await;
    assert_eq!(texts_of(&rig, "REFUSAL"), ["before", "between", "after"]);
    let errors = texts_of(&rig, "OUTBOX");
    assert_eq!(errors.len(), 2, "{errors:?}");
    // In the order the coordinator found them, not necessarily the outbox's.
    let named = |what: &str| errors.iter().filter(|e| e.contains(what)).count();
    assert_eq!(
        named(&format!("dump job {foreign_job} belongs to another worker")),
        1,
        "{errors:?}"
    );
    assert_eq!(named("task 987654321 does not exist"), 1, "{errors:?}");
    assert!(errors.iter().all(|e| e.contains("set aside")), "{errors:?}");

    // Kept on the worker, listed beside the running worker.
    let listed = worker_tool(&rig.worker.data_dir, "outbox", &["refused"]).unwrap();
    let kinds: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split('\t').nth(2))
        .collect();
    assert_eq!(
        kinds,
        ["WorkerMessage", "TaskFailed"],
        "oldest first: {listed}"
    );
    // The link works on: a dump is recorded.
    let inst = add_instance(&rig.cli, "src", rig.source.port, &rig.name, None);
    let job = add_job(&rig.cli, inst, "app");
    dump_and_show(&rig.cli, job);
    // Requeue needs the worker stopped, and puts both back.
    let busy = worker_tool(&rig.worker.data_dir, "outbox", &["requeue"]).unwrap_err();
    assert!(
        format!("{busy:#}").contains("stop the worker first"),
        "{busy:#}"
    );
    rig.worker.process.stop_clean().await;
    let out = worker_tool(&rig.worker.data_dir, "outbox", &["requeue"]).unwrap();
    assert_eq!(out.trim(), "2 refused event(s) queued again");
    let left = worker_tool(&rig.worker.data_dir, "outbox", &["refused"]).unwrap();
    assert!(left.is_empty(), "{left}");
    rig.coordinator.process.stop_clean().await;
    rig.worker
        .process
        .assert_no_unexpected_errors(&["refused an event"]);
}
