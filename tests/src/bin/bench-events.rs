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
//! It runs twice on one machine: against a coordinator serving plaintext on
//! loopback (names taken from the requests), and against one serving TLS
//! with a worker certificate from a real enrollment and an admin token
//! (the default), and also measures the lease round trip (Renew → Renewed
//! on the lease stream) in both.
//!
//! Then it times dispatch: from `VerifyStore` (an operator queueing a task)
//! to the assignment arriving on the worker's open lease stream, with
//! catalog notifications (`lease.notify`, the default) and with polling
//! only (`lease.poll_interval` 1 s).
//!
//! Run: `cargo run --release -p pgsnapman-tests --bin bench-events [-- EVENTS]`
//! (build the coordinator with `--release` first for release figures).
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use pgsnapman_proto::v1;
use pgsnapman_proto::v1::lease_request::Msg as In;
use pgsnapman_proto::v1::lease_response::Msg as Out;
use pgsnapman_proto::v1::worker_service_client::WorkerServiceClient;
use pgsnapman_tests::{Coordinator, CoordinatorOptions, PgCluster};

const BATCH: usize = 1000;
/// Lease renewals timed per run.
const RENEWALS: usize = 500;

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

/// What one run measured.
struct Figures {
    first: Duration,
    replay: Duration,
    renew: Vec<Duration>,
}

/// A key pair made here and a certificate for worker `name` from a real
/// enrollment (token from the AdminService).
async fn enroll(coordinator: &Coordinator, name: &str) -> Result<(String, String)> {
    let mut admin = coordinator.admin().await?;
    coordinator.enroll_worker(&mut admin, name).await
}

/// Leases one VERIFY task of `name` and times `RENEWALS` renewals.
async fn renewals(
    coordinator: &Coordinator,
    client: &mut WorkerServiceClient<tonic::transport::Channel>,
    name: &str,
) -> Result<Vec<Duration>> {
    coordinator
        .admin()
        .await?
        .verify_store(v1::WorkerRef {
            r#ref: Some(v1::worker_ref::Ref::Name(name.into())),
        })
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let send = |m: In| v1::LeaseRequest { msg: Some(m) };
    tx.send(send(In::Open(v1::Open {
        worker_name: name.into(),
    })))
    .await?;
    tx.send(send(In::Credit(v1::Credit { slots: 1 }))).await?;
    let mut inbound = client
        .lease(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let next = async |inbound: &mut tonic::Streaming<v1::LeaseResponse>| -> Result<Out> {
        loop {
            match inbound.message().await?.and_then(|m| m.msg) {
                Some(Out::Keepalive(_)) | Some(Out::ScheduleChanged(_)) => continue,
                Some(m) => return Ok(m),
                None => anyhow::bail!("the lease stream ended"),
            }
        }
    };
    let Out::Assignment(a) = next(&mut inbound).await? else {
        anyhow::bail!("expected an assignment first");
    };
    let mut times = Vec::with_capacity(RENEWALS);
    for _ in 0..RENEWALS {
        let t = Instant::now();
        tx.send(send(In::Renew(v1::Renew {
            task_id: a.task_id,
            lease_id: a.lease_id.clone(),
        })))
        .await?;
        match next(&mut inbound).await? {
            Out::Renewed(r) if r.task_id == a.task_id => times.push(t.elapsed()),
            other => anyhow::bail!("expected Renewed, got {other:?}"),
        }
    }
    Ok(times)
}

/// Tasks queued one after another per dispatch run.
const DISPATCHES: usize = 100;

/// Times `DISPATCHES` tasks from queueing (the admin call) to their
/// assignment on an open lease stream with plenty of credit.
async fn dispatch(notify: bool) -> Result<Vec<Duration>> {
    let (_catalog, coordinator, mut admin) = start(
        true,
        &[
            ("PGSNAPMAN_LEASE__NOTIFY", &notify.to_string()),
            // The tasks are never renewed: no lease may expire meanwhile.
            ("PGSNAPMAN_LEASE__TTL", "1h"),
            // The production default (the test harness polls faster).
            ("PGSNAPMAN_LEASE__POLL_INTERVAL", "1s"),
        ],
    )
    .await?;
    let (cert, key) = enroll(&coordinator, "bench").await?;
    let channel = coordinator.access().channel_as(Some((&cert, &key))).await?;
    let mut client = WorkerServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let send = |m: In| v1::LeaseRequest { msg: Some(m) };
    tx.send(send(In::Open(v1::Open::default()))).await?;
    let slots = u32::try_from(DISPATCHES)?;
    tx.send(send(In::Credit(v1::Credit { slots }))).await?;
    let mut inbound = client
        .lease(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    // A silent worker's stream is ended after three keepalive intervals.
    let beat = tx.clone();
    let heart = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let ka = In::Keepalive(v1::Keepalive { sent_at: None });
            if beat.send(v1::LeaseRequest { msg: Some(ka) }).await.is_err() {
                break;
            }
        }
    });
    let worker = v1::WorkerRef {
        r#ref: Some(v1::worker_ref::Ref::Name("bench".into())),
    };
    let mut times = Vec::with_capacity(DISPATCHES);
    for _ in 0..DISPATCHES {
        let t = Instant::now();
        let task = admin.verify_store(worker.clone()).await?.into_inner().id;
        loop {
            match inbound.message().await?.and_then(|m| m.msg) {
                Some(Out::Assignment(a)) if a.task_id == task => break,
                Some(Out::Assignment(a)) => {
                    anyhow::bail!("assigned task {} before {task}", a.task_id)
                }
                Some(_) => continue,
                None => anyhow::bail!("the lease stream ended"),
            }
        }
        times.push(t.elapsed());
    }
    heart.abort();
    drop(tx);
    times.sort();
    Ok(times)
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// A catalog, a coordinator (TLS unless `plaintext`, quiet, with `env`)
/// and an admin client; worker `bench` is registered.
async fn start(
    tls: bool,
    env: &[(&str, &str)],
) -> Result<(PgCluster, Coordinator, pgsnapman_tests::AdminClient)> {
    let catalog = PgCluster::start(15)?;
    let mut vars = vec![("RUST_LOG".to_string(), "warn".to_string())];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let coordinator = Coordinator::start(CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        plaintext: !tls,
        env: vars,
        ..Default::default()
    })
    .await?;
    let mut admin = coordinator.admin().await?;
    admin
        .register_worker(v1::RegisterWorkerRequest {
            name: "bench".into(),
        })
        .await?;
    Ok((catalog, coordinator, admin))
}

async fn run(n: usize, tls: bool) -> Result<Figures> {
    let (catalog, coordinator, _admin) = start(tls, &[]).await?;
    let identity = if tls {
        Some(enroll(&coordinator, "bench").await?)
    } else {
        None
    };
    let channel = coordinator
        .access()
        .channel_as(identity.as_ref().map(|(c, k)| (c.as_str(), k.as_str())))
        .await?;
    let mut client = WorkerServiceClient::new(channel)
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
    let renew = renewals(&coordinator, &mut client, "bench").await?;
    Ok(Figures {
        first,
        replay,
        renew,
    })
}

fn report(mode: &str, n: usize, f: &mut Figures) {
    f.renew.sort();
    let pct = |p: usize| f.renew[(f.renew.len() * p / 100).min(f.renew.len() - 1)];
    println!(
        "{mode}: first upload {:.2}s = {:.0} events/s; replay {:.2}s = {:.0} events/s; \
         lease renew round trip median {:.2} ms, p99 {:.2} ms ({} renewals)",
        f.first.as_secs_f64(),
        n as f64 / f.first.as_secs_f64(),
        f.replay.as_secs_f64(),
        n as f64 / f.replay.as_secs_f64(),
        pct(50).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3,
        f.renew.len()
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("EVENTS must be a number")?
        .unwrap_or(100_000);
    let mut plain = run(n, false).await.context("plaintext run")?;
    let mut tls = run(n, true).await.context("TLS + authentication run")?;
    let notified = dispatch(true)
        .await
        .context("dispatch with notifications")?;
    let polled = dispatch(false).await.context("dispatch by polling")?;
    println!("events: {n} per run (90% messages, 10% dumps) in batches of {BATCH}");
    report("plaintext, names", n, &mut plain);
    report("TLS, certificate + token", n, &mut tls);
    println!(
        "TLS/plaintext: upload {:.2}x the time, renew median {:.2}x",
        tls.first.as_secs_f64() / plain.first.as_secs_f64(),
        tls.renew[tls.renew.len() / 2].as_secs_f64()
            / plain.renew[plain.renew.len() / 2].as_secs_f64()
    );
    for (mode, t) in [
        ("notifications (lease.notify)", &notified),
        ("polling only (lease.poll_interval 1s)", &polled),
    ] {
        println!(
            "queued -> assigned, {mode}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} tasks)",
            percentile(t, 50),
            percentile(t, 99),
            percentile(t, 100),
            t.len()
        );
    }
    Ok(())
}
