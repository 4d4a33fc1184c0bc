//! The outbox under load: a backlog larger than a gRPC message is
//! delivered in byte-bounded batches.
use std::time::Duration;

use pgsnapman_proto::v1::event::Body;
use pgsnapman_proto::v1::{MessageLevel, WorkerMessage};
use pgsnapman_tests::wait;

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
