//! Benchmark: how fast the catalog absorbs a worker's outbox backlog after an
//! outage (issue 5 target: 100,000 events at ≥ 10,000 events/s).
//!
//! Starts a throwaway catalog cluster and the real coordinator binary, then
//! uploads N events over the real `UploadEvents` stream the way a worker does
//! (batches of 1,000, each acknowledged before the next): 90% worker
//! messages, 10% dump-finished records. Then replays the whole backlog (as
//! after a crash before the acks were stored) and checks that nothing was
//! applied twice.
//!
//! Run: `cargo run --release -p pgsnapman-tests --bin bench-events [-- EVENTS]`
//! (build the coordinator with `--release` first for release figures).
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use pgsnapman_proto::v1;
use pgsnapman_proto::v1::worker_service_client::WorkerServiceClient;
use pgsnapman_tests::{Coordinator, CoordinatorOptions, PgCluster};

const BATCH: usize = 1000;

fn event(i: usize) -> v1::Event {
    let now = pgsnapman_proto::timestamp(chrono::Utc::now());
    let body = if i % 10 == 9 {
        v1::event::Body::DumpFinished(v1::DumpFinished {
            dump_uuid: uuid::Uuid::now_v7().to_string(),
            job_id: 1,
            instance_id: 1,
            host: "127.0.0.1".into(),
            port: 5432,
            database: format!("db{}", i % 97),
            dump_type: v1::DumpType::Full as i32,
            format: v1::DumpFormat::Custom as i32,
            succeeded: true,
            started_at: Some(now),
            finished_at: Some(now),
            dump_bytes: 1 << 20,
            stored_bytes: 1 << 16,
            database_bytes: 1 << 22,
            server_version: "15.0".into(),
            client_version: "pg_dump (PostgreSQL) 15.0".into(),
            location: format!("/var/lib/pgsnapman/dumps/{i}.dump"),
            ..Default::default()
        })
    } else {
        v1::event::Body::Message(v1::WorkerMessage {
            level: v1::MessageLevel::Info as i32,
            class: "BENCH".into(),
            job_id: 1,
            text: format!("benchmark event {i}"),
        })
    };
    v1::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(now),
        body: Some(body),
    }
}

async fn upload(
    client: &mut WorkerServiceClient<tonic::transport::Channel>,
    events: &[v1::Event],
) -> Result<(u64, u64)> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut acks = client
        .upload_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (mut applied, mut duplicates) = (0u64, 0u64);
    let mut left = events.len();
    for chunk in events.chunks(BATCH) {
        left -= chunk.len();
        tx.send(v1::EventBatch {
            worker_name: "bench".into(),
            events: chunk.to_vec(),
            outbox_backlog: left as u64,
        })
        .await
        .context("send batch")?;
        let ack = acks
            .message()
            .await?
            .context("stream ended without an ack")?;
        ensure!(
            ack.up_to_event_id == chunk[chunk.len() - 1].event_id,
            "ack for the wrong event"
        );
        applied += u64::from(ack.applied);
        duplicates += u64::from(ack.duplicates);
    }
    Ok((applied, duplicates))
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("EVENTS must be a number")?
        .unwrap_or(100_000);
    let catalog = PgCluster::start(15)?;
    let coordinator = Coordinator::start(CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..Default::default()
    })
    .await?;
    let mut admin = coordinator.admin().await?;
    admin
        .register_worker(v1::RegisterWorkerRequest {
            name: "bench".into(),
        })
        .await?;
    let mut client = WorkerServiceClient::new(coordinator.access().channel().await?)
        .max_decoding_message_size(pgsnapman_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(pgsnapman_proto::MAX_MESSAGE_BYTES);
    let events: Vec<v1::Event> = (0..n).map(event).collect();

    let t = Instant::now();
    let (applied, dups) = upload(&mut client, &events).await?;
    let first = t.elapsed();
    ensure!(
        applied == n as u64 && dups == 0,
        "applied {applied}, duplicates {dups}"
    );

    let t = Instant::now();
    let (applied2, dups2) = upload(&mut client, &events).await?;
    let replay = t.elapsed();
    ensure!(
        applied2 == 0 && dups2 == n as u64,
        "replay applied {applied2}"
    );

    let messages: i64 = catalog
        .query(
            "postgres",
            "SELECT count(*) FROM messages WHERE class = 'BENCH'",
        )?
        .parse()?;
    let dumps: i64 = catalog
        .query("postgres", "SELECT count(*) FROM dumps")?
        .parse()?;
    ensure!(
        (messages + dumps) as usize == n,
        "catalog holds {messages} messages + {dumps} dumps for {n} events"
    );
    println!(
        "events: {n} ({messages} messages, {dumps} dumps) in batches of {BATCH}\n\
         first upload: {:.2}s = {:.0} events/s\n\
         replay (all duplicates): {:.2}s = {:.0} events/s",
        first.as_secs_f64(),
        n as f64 / first.as_secs_f64(),
        replay.as_secs_f64(),
        n as f64 / replay.as_secs_f64()
    );
    Ok(())
}
