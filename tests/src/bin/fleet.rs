//! Fleet load test (issue 16 item 5): N simulated workers against one real
//! coordinator with an embedded catalog, each with its own TLS connection
//! and certificate (real enrollment), Hello, schedule sync of JOBS jobs, a
//! lease stream with credit, task completion and event uploads.
//!
//! Reports schedule sync p50/p99 (every worker connected first, then all
//! at once), lease round trip
//! p50/p99 (DumpNow called → assignment on the worker's stream), events/s
//! absorbed (every worker uploading at once), the coordinator's CPU seconds
//! and peak RSS (/proc), and its catalog connections (backends of the
//! embedded cluster). Figures go to docs/benchmarks.md; nothing is asserted
//! but correctness (every task leased once, every event acknowledged).
//!
//! Set-up: workers, instances, each worker's first job and enrollment go
//! through the AdminService; the other JOBS-1 jobs per worker are copied by
//! one INSERT into the embedded catalog (`bulk_jobs`).
//!
//! Run: `fleet N [JOBS [TASKS [EVENTS]]]` (defaults 100 jobs per worker,
//! 1000 tasks, 100 events per worker); `cargo build --workspace --bins` first.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use pgsnapman_proto::v1;
use pgsnapman_proto::v1::lease_request::Msg as In;
use pgsnapman_proto::v1::lease_response::Msg as Out;
use pgsnapman_proto::v1::worker_service_client::WorkerServiceClient;
use pgsnapman_tests::{AdminClient, Coordinator, CoordinatorOptions};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Admin calls in flight at once while setting up (registering, adding
/// jobs, enrolling) and while queueing the timed tasks.
const SETUP_CONCURRENCY: usize = 16;
const QUEUE_CONCURRENCY: usize = 16;
/// Connection attempts of one simulated worker before the run fails.
const CONNECT_ATTEMPTS: u32 = 20;
/// Events per upload batch (a real worker sends up to 1,000).
const BATCH: usize = 100;
/// Longest a phase may take before the run is declared broken.
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);

struct Args {
    workers: usize,
    jobs: usize,
    tasks: usize,
    events: usize,
}

fn args() -> Result<Args> {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().with_context(|| format!("{s:?} is not a number")))
        .collect::<Result<_>>()?;
    let Some(&workers) = a.first() else {
        bail!("usage: fleet N [JOBS [TASKS [EVENTS]]]");
    };
    ensure!((1..=20_000).contains(&workers), "N must be 1 to 20000");
    Ok(Args {
        workers,
        jobs: a.get(1).copied().unwrap_or(100),
        tasks: a.get(2).copied().unwrap_or(1000),
        events: a.get(3).copied().unwrap_or(100),
    })
}

fn worker_ref(name: &str) -> v1::WorkerRef {
    v1::WorkerRef {
        r#ref: Some(v1::worker_ref::Ref::Name(name.into())),
    }
}

/// Registers worker `i`, its instance and its first job; enrolls it.
/// Returns (name, first job id, certificate, key).
async fn set_up(
    mut admin: AdminClient,
    coordinator: Arc<Coordinator>,
    i: usize,
) -> Result<(String, i64, String, String)> {
    let name = format!("fleet-{i}");
    admin
        .register_worker(v1::RegisterWorkerRequest { name: name.clone() })
        .await?;
    let inst = admin
        .add_instance(v1::AddInstanceRequest {
            name: format!("fleet-inst-{i}"),
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            default_worker: Some(worker_ref(&name)),
            ..Default::default()
        })
        .await?
        .into_inner()
        .id;
    // The first job through the AdminService; `bulk_jobs` copies the rest.
    let first = admin
        .add_dump_job(v1::AddDumpJobRequest {
            instance_id: inst,
            worker: Some(worker_ref(&name)),
            database: "db0".into(),
            dump_type: v1::DumpType::Full as i32,
            format: v1::DumpFormat::Custom as i32,
            cron: "0 3 * * *".into(),
            kind: v1::JobKind::Repeat as i32,
            status: v1::Status::Active as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .id;
    let (cert, key) = coordinator.enroll_worker(&mut admin, &name).await?;
    Ok((name, first, cert, key))
}

/// Copies each worker's first job into `jobs - 1` more (databases db1…,
/// spread crons) with one INSERT into the embedded catalog, and bumps every
/// schedule version. Set-up only: through the AdminService a loaded debug
/// build adds about 26 jobs/s, an hour for 100,000.
fn bulk_jobs(coordinator: &Coordinator, jobs: usize) -> Result<()> {
    if jobs < 2 {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO dump_jobs (worker_id, instance_id, database, dump_type, format, cron, kind, status) \
         SELECT j.worker_id, j.instance_id, 'db' || g, j.dump_type, j.format, (g % 60) || ' 3 * * *', j.kind, j.status \
         FROM dump_jobs j, generate_series(1, {}) g; \
         UPDATE workers SET schedule_version = schedule_version + 1;",
        jobs - 1
    );
    catalog_sql(coordinator, &sql).map(|_| ())
}

/// Runs `sql` in the embedded catalog (psql, its password from the
/// coordinator's data directory); the unaligned output.
fn catalog_sql(coordinator: &Coordinator, sql: &str) -> Result<String> {
    let password = std::fs::read_to_string(coordinator.data_dir.join("catalog.password"))
        .context("read the embedded catalog's password")?;
    let bindir = std::env::var_os("PG_BINDIR").map_or_else(
        || "/usr/lib/postgresql/15/bin".into(),
        std::path::PathBuf::from,
    );
    let out = std::process::Command::new(bindir.join("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-p",
            "5432",
        ])
        .arg("-h")
        .arg(coordinator.data_dir.join("catalog/run"))
        .args(["-d", "pgsnapman", "-c", sql])
        .env("PGPASSWORD", password.trim())
        .output()
        .context("run psql")?;
    ensure!(
        out.status.success(),
        "catalog query failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What the simulated workers record, shared with the driver.
#[derive(Default)]
struct Record {
    sync: Vec<Duration>,
    leased_at: HashMap<i64, Instant>,
    events_acked: usize,
    connect_retries: usize,
    sync_retries: usize,
}

/// Connects with the worker's certificate and says Hello.
async fn hello(
    access: &pgsnapman_tests::Access,
    name: &str,
    cert: &str,
    key: &str,
) -> Result<(WorkerServiceClient<Channel>, v1::HelloResponse)> {
    let channel = access.channel_as(Some((cert, key))).await?;
    let mut client = WorkerServiceClient::new(channel)
        .max_decoding_message_size(pgsnapman_proto::MAX_MESSAGE_BYTES);
    let hello = client
        .hello(v1::HelloRequest {
            worker_name: name.to_string(),
            agent_version: "fleet".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((client, hello))
}

/// What every simulated worker shares with the driver.
#[derive(Clone)]
struct Cues {
    jobs: usize,
    events: usize,
    record: Arc<Mutex<Record>>,
    /// Sent once the worker's streams are open.
    ready: mpsc::Sender<()>,
    /// Turns true when the events phase starts.
    go_events: tokio::sync::watch::Receiver<bool>,
    /// Passed once every worker has said Hello.
    all_connected: Arc<tokio::sync::Barrier>,
}

/// One simulated worker: connects with its certificate, says Hello, waits
/// for the whole fleet to have done so, syncs its schedule (timed), holds a
/// lease stream with one slot of credit, completes each assigned task with
/// a DumpFinished event and grants the slot again; uploads `events`
/// messages when `go_events` turns true.
async fn simulate(
    access: pgsnapman_tests::Access,
    id: (String, String, String),
    cues: Cues,
) -> Result<()> {
    let (name, cert, key) = id;
    let Cues {
        jobs,
        events,
        record,
        ready,
        mut go_events,
        all_connected,
    } = cues;
    // Like a worker: a refused or dropped connection or Hello (a coordinator
    // busy with a thousand TLS handshakes) is retried after a jittered pause.
    let mut attempt = 0u32;
    let (mut client, hello) = loop {
        match hello(&access, &name, &cert, &key).await {
            Ok(session) => break session,
            Err(e) if attempt >= CONNECT_ATTEMPTS => {
                return Err(e.context(format!("{name}: connect")));
            }
            Err(_) => {
                attempt += 1;
                record.lock().expect("record lock").connect_retries += 1;
                let ceiling = 200u64 << attempt.min(5);
                let pause = 200 + u64::from(uuid::Uuid::new_v4().as_fields().0) % ceiling;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    };
    // Every worker connected and said Hello: now all sync at once.
    all_connected.wait().await;
    // Timed from the first attempt; a worker pulls again after UNAVAILABLE
    // or a timed-out call (its session restarts), and so does this one.
    let t = Instant::now();
    let mut attempt = 0u32;
    let sync = loop {
        let answer = client
            .sync_schedule(v1::SyncScheduleRequest {
                worker_name: name.clone(),
                known_version: 0,
            })
            .await;
        match answer {
            Ok(r) => break r.into_inner(),
            Err(s)
                if attempt < CONNECT_ATTEMPTS
                    && matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                    ) =>
            {
                attempt += 1;
                record.lock().expect("record lock").sync_retries += 1;
                let pause = 200 + u64::from(uuid::Uuid::new_v4().as_fields().0) % 2000;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(s) => return Err(anyhow::Error::new(s).context(format!("{name}: sync"))),
        }
    };
    let took = t.elapsed();
    let got = sync.schedule.map_or(0, |s| s.dump_jobs.len());
    ensure!(got == jobs, "{name}: schedule holds {got} jobs, not {jobs}");
    record.lock().expect("record lock").sync.push(took);

    let (tx, rx) = mpsc::channel(64);
    let send = |m: In| v1::LeaseRequest { msg: Some(m) };
    tx.send(send(In::Open(v1::Open {
        worker_name: name.clone(),
    })))
    .await?;
    tx.send(send(In::ConfirmSchedule(v1::ConfirmSchedule {
        version: sync.version,
    })))
    .await?;
    tx.send(send(In::Credit(v1::Credit { slots: 1 }))).await?;
    let mut inbound = client
        .lease(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let every = hello
        .keepalive_interval
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::from_secs(10));
    let beat = tx.clone();
    let heart = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let ka = In::Keepalive(v1::Keepalive { sent_at: None });
            if beat.send(v1::LeaseRequest { msg: Some(ka) }).await.is_err() {
                break;
            }
        }
    });
    // The upload stream, fed batch by batch.
    let (up_tx, up_rx) = mpsc::channel::<v1::EventBatch>(4);
    let mut acks = client
        .upload_events(tokio_stream::wrappers::ReceiverStream::new(up_rx))
        .await?
        .into_inner();
    let _ = ready.send(()).await;
    drop(ready);
    let mut upload_started = false;
    let result: Result<()> = loop {
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(v1::LeaseResponse { msg: Some(Out::Assignment(a)) })) => {
                    record.lock().expect("record lock").leased_at.insert(a.task_id, Instant::now());
                    up_tx.send(v1::EventBatch {
                        worker_name: name.clone(),
                        events: vec![finished(&a)],
                        outbox_backlog: 0,
                    }).await?;
                    tx.send(send(In::Credit(v1::Credit { slots: 1 }))).await?;
                }
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(s) => break Err(anyhow::anyhow!("{name}: lease stream: {s}")),
            },
            a = acks.message() => match a {
                Ok(Some(ack)) => {
                    let mut r = record.lock().expect("record lock");
                    r.events_acked += ack.applied as usize + ack.duplicates as usize;
                }
                Ok(None) => break Ok(()),
                Err(s) => break Err(anyhow::anyhow!("{name}: upload stream: {s}")),
            },
            _ = go_events.changed(), if !upload_started => {
                upload_started = true;
                let up = up_tx.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    for chunk in (0..events).collect::<Vec<_>>().chunks(BATCH) {
                        let batch = v1::EventBatch {
                            worker_name: name.clone(),
                            events: chunk.iter().map(|i| message(*i)).collect(),
                            outbox_backlog: 0,
                        };
                        if up.send(batch).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    };
    heart.abort();
    result
}

fn now() -> Option<prost_types::Timestamp> {
    Some(pgsnapman_proto::timestamp(chrono::Utc::now()))
}

/// The DumpFinished a worker sends for a completed dump task.
fn finished(a: &v1::TaskAssignment) -> v1::Event {
    let job_id = match &a.spec {
        Some(v1::task_assignment::Spec::Dump(d)) => d.job_id,
        _ => 0,
    };
    v1::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: now(),
        body: Some(v1::event::Body::DumpFinished(v1::DumpFinished {
            dump_uuid: uuid::Uuid::now_v7().to_string(),
            task: Some(v1::TaskRef {
                task_id: a.task_id,
                lease_id: a.lease_id.clone(),
            }),
            job_id,
            host: "127.0.0.1".into(),
            port: 5432,
            database: "db0".into(),
            dump_type: v1::DumpType::Full as i32,
            format: v1::DumpFormat::Custom as i32,
            succeeded: true,
            started_at: now(),
            finished_at: now(),
            dump_bytes: 1 << 20,
            stored_bytes: 1 << 16,
            server_version: "15.0".into(),
            client_version: "pg_dump (PostgreSQL) 15.0".into(),
            ..Default::default()
        })),
    }
}

fn message(i: usize) -> v1::Event {
    v1::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: now(),
        body: Some(v1::event::Body::Message(v1::WorkerMessage {
            level: v1::MessageLevel::Info as i32,
            class: "FLEET".into(),
            job_id: 0,
            text: format!("fleet event {i}"),
        })),
    }
}

/// (CPU seconds, peak RSS in MiB) of a process, from /proc.
fn usage(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Ok((ticks / 100.0, hwm_kib / 1024.0))
}

/// Client backends of the embedded catalog (children of its postmaster
/// connected over a socket or TCP: the coordinator's pool and LISTEN).
fn catalog_connections(coordinator: &Coordinator) -> usize {
    let pidfile = coordinator.data_dir.join("catalog/data/postmaster.pid");
    let Some(postmaster) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok())
    else {
        return 0;
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(postmaster) && (cmd.contains('(') || cmd.contains("[local]"))
        })
        .count()
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while !done() {
        ensure!(
            Instant::now() < deadline,
            "{what}: not done after {PHASE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let coordinator = Arc::new(
        Coordinator::start(CoordinatorOptions {
            catalog_url: None,
            env: [
                ("RUST_LOG", "warn"),
                // Production lease timing (the test harness shortens it).
                ("PGSNAPMAN_LEASE__TTL", "60s"),
                ("PGSNAPMAN_LEASE__POLL_INTERVAL", "1s"),
                ("PGSNAPMAN_LEASE__KEEPALIVE_INTERVAL", "10s"),
                ("PGSNAPMAN_LEASE__REAP_INTERVAL", "5s"),
                // The set-up makes N * JOBS admin calls.
                ("PGSNAPMAN_ADMIN__REQUESTS_PER_SECOND", "100000"),
                ("PGSNAPMAN_ADMIN__BURST", "100000"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        })
        .await?,
    );
    let pid = coordinator.process.pid().context("coordinator pid")?;
    eprintln!("fleet: set-up of {} workers x {} jobs", a.workers, a.jobs);
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut setups = JoinSet::new();
    // One connection, many calls at once (HTTP/2), as an operator's tool.
    let admin = coordinator.admin().await?;
    for i in 0..a.workers {
        let admin = admin.clone();
        let (c, gate) = (coordinator.clone(), gate.clone());
        setups.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            set_up(admin, c, i).await
        });
    }
    let mut fleet = Vec::with_capacity(a.workers);
    while let Some(r) = setups.join_next().await {
        fleet.push(r??);
    }
    bulk_jobs(&coordinator, a.jobs)?;
    eprintln!("fleet: set-up took {:.1}s", t.elapsed().as_secs_f64());

    let (cpu0, _) = usage(pid)?;
    let record = Arc::new(Mutex::new(Record::default()));
    let (go_events, go_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(a.workers);
    let all_connected = Arc::new(tokio::sync::Barrier::new(a.workers));
    let mut sims = JoinSet::new();
    let t_sync = Instant::now();
    for (name, _, cert, key) in &fleet {
        sims.spawn(simulate(
            coordinator.access(),
            (name.clone(), cert.clone(), key.clone()),
            Cues {
                jobs: a.jobs,
                events: a.events,
                record: record.clone(),
                ready: ready_tx.clone(),
                go_events: go_rx.clone(),
                all_connected: all_connected.clone(),
            },
        ));
    }
    drop(ready_tx);
    for _ in 0..a.workers {
        tokio::select! {
            r = ready_rx.recv() => { r.context("a simulated worker ended before it was ready")?; }
            Some(r) = sims.join_next() => { r??; bail!("a simulated worker ended early"); }
        }
    }
    let connect_all = t_sync.elapsed();
    let (cpu1, _) = usage(pid)?;

    // Lease round trip: DumpNow → assignment, spread over the fleet.
    // Task id → (DumpNow called, how long the call took).
    let queued_at: Arc<Mutex<HashMap<i64, (Instant, Duration)>>> = Arc::default();
    let gate = Arc::new(Semaphore::new(QUEUE_CONCURRENCY));
    let mut queue = JoinSet::new();
    for k in 0..a.tasks {
        let job = fleet[k % fleet.len()].1;
        let mut admin = admin.clone();
        let (gate, queued_at) = (gate.clone(), queued_at.clone());
        queue.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let t0 = Instant::now();
            let task = admin
                .dump_now(v1::DumpNowRequest { job_id: job })
                .await?
                .into_inner()
                .id;
            queued_at
                .lock()
                .expect("queued lock")
                .insert(task, (t0, t0.elapsed()));
            anyhow::Ok(())
        });
    }
    while let Some(r) = queue.join_next().await {
        r??;
    }
    let tasks = a.tasks;
    until("every task leased", || {
        record.lock().expect("record lock").leased_at.len() >= tasks
    })
    .await?;
    let (cpu2, _) = usage(pid)?;
    let (mut lease, mut calls): (Vec<Duration>, Vec<Duration>) = {
        let r = record.lock().expect("record lock");
        let q = queued_at.lock().expect("queued lock");
        ensure!(
            r.leased_at.len() == tasks,
            "{} leases for {tasks} tasks",
            r.leased_at.len()
        );
        let lease = q
            .iter()
            .map(|(id, (t0, _))| r.leased_at.get(id).map(|t1| t1.duration_since(*t0)))
            .collect::<Option<_>>()
            .context("a queued task was never leased")?;
        (lease, q.values().map(|(_, call)| *call).collect())
    };
    lease.sort();
    calls.sort();
    // The coordinator's own part, in catalog time: row created → leased.
    let in_catalog = catalog_sql(
        &coordinator,
        "SELECT round(1000 * extract(epoch FROM percentile_disc(0.5) WITHIN GROUP (ORDER BY started_at - created_at)), 1) \
         || ' ms p99 ' || round(1000 * extract(epoch FROM percentile_disc(0.99) WITHIN GROUP (ORDER BY started_at - created_at)), 1) \
         FROM tasks WHERE kind = 'DUMP' AND started_at IS NOT NULL",
    )?;
    // The completions (one event each) are acknowledged before the events phase.
    until("every completion acknowledged", || {
        record.lock().expect("record lock").events_acked >= tasks
    })
    .await?;

    let t_events = Instant::now();
    go_events.send_replace(true);
    let total = tasks + a.workers * a.events;
    until("every event acknowledged", || {
        record.lock().expect("record lock").events_acked >= total
    })
    .await?;
    let events_took = t_events.elapsed();
    let (cpu3, rss) = usage(pid)?;
    let conns = catalog_connections(&coordinator);

    let mut sync = record.lock().expect("record lock").sync.clone();
    // Read apart: two guards of one mutex in one statement deadlock.
    let retries = {
        let r = record.lock().expect("record lock");
        (r.connect_retries, r.sync_retries)
    };
    sync.sort();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fleet N={} jobs/worker={} ({} jobs): schedule sync p50 {:.1} ms p99 {:.1} ms (all at once; {:.1}s until every stream was open, {} connection retries, {} sync retries); \
         lease round trip p50 {:.1} ms p99 {:.1} ms max {:.1} ms ({} DumpNow tasks; the DumpNow call itself p50 {:.1} ms p99 {:.1} ms; row created → leased in the catalog p50 {} ms); \
         events {:.0}/s ({} events); coordinator CPU {:.1}s connect+sync, {:.1}s leases, {:.1}s events; \
         peak RSS {:.0} MiB; catalog connections {}; generator CPU {:.1}s; loadavg {}",
        a.workers,
        a.jobs,
        a.workers * a.jobs,
        pct(&sync, 50),
        pct(&sync, 99),
        connect_all.as_secs_f64(),
        retries.0,
        retries.1,
        pct(&lease, 50),
        pct(&lease, 99),
        pct(&lease, 100),
        tasks,
        pct(&calls, 50),
        pct(&calls, 99),
        in_catalog,
        (a.workers * a.events) as f64 / events_took.as_secs_f64(),
        a.workers * a.events,
        cpu1 - cpu0,
        cpu2 - cpu1,
        cpu3 - cpu2,
        rss,
        conns,
        usage(std::process::id())?.0,
        load.trim()
    );
    sims.abort_all();
    drop(sims);
    match Arc::try_unwrap(coordinator) {
        Ok(mut c) => c.process.stop_clean().await,
        Err(_) => bail!("the coordinator is still shared"),
    }
    Ok(())
}
