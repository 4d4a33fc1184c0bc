//! The outbox under load and faults: a backlog larger than a gRPC message
//! is delivered in byte-bounded batches; the coordinator killed (kill -9)
//! or its catalog cluster crashed (`pg_ctl restart -m immediate`) while
//! batches are applied loses and doubles nothing.
use std::time::Duration;

use pgsnapman_proto::v1::event::Body;
use pgsnapman_proto::v1::{MessageLevel, WorkerMessage};
use pgsnapman_tests::{Coordinator, wait};

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
