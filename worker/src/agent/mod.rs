//! The link to the coordinator: the worker dials, says Hello, keeps a Lease
//! stream (credit, assignments, renewals, keepalives) and an UploadEvents
//! stream open, and reconnects with backoff when anything breaks. Running
//! tasks are not owned here and survive a broken link.
pub mod enroll;
mod failover;
mod upload;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use pgsnapman_proto::channel;
use pgsnapman_proto::v1::worker_service_client::WorkerServiceClient;
use pgsnapman_proto::v1::{
    ConfirmSchedule, Credit, HelloRequest, Keepalive, LeaseRequest, Open, Progress, Renew,
    ReportProgress, Status, SyncScheduleRequest, TaskAssignment, lease_request, lease_response,
    task_assignment,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::Shared;
use crate::backoff::Backoff;
use crate::task::Cancel;

/// Requests waiting to go out on the lease stream. Credits, renewals and
/// keepalives are small and few (a handful per running task per TTL/3).
const LEASE_QUEUE: usize = 256;
/// Longest wait for a Hello answer.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Used when the coordinator sends no lease timing.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);
/// HTTP/2 pings detect a dead TCP connection under an idle stream.
pub(crate) const HTTP2_KEEPALIVE: Duration = Duration::from_secs(10);

pub type Client = WorkerServiceClient<Channel>;

/// Keeps a session with the coordinator until `stop` fires.
pub async fn run_link(shared: Arc<Shared>, stop: CancellationToken) {
    let cfg = &shared.config.coordinator;
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    // Validated at load; the fallback only keeps a bad list from panicking.
    let urls = cfg.url_list().unwrap_or_else(|_| vec![cfg.url.clone()]);
    let mut ring = failover::Ring::new(urls, &shared.config.worker.name);
    loop {
        if stop.is_cancelled() {
            break;
        }
        let mut established = false;
        let url = ring.current().to_string();
        match enroll_if_needed(&shared, &url).await {
            Ok(()) => {}
            Err(err) if err.to_string().contains("enrollment refused") => {
                tracing::error!(
                    "{err:#}; the link stays down until this worker is enrolled (a new token: pgsnap worker enroll-token NAME); scheduled dumps go on"
                );
                stop.cancelled().await;
                break;
            }
            Err(err) => {
                // Not enrolled yet and the coordinator unreachable: no
                // session without a certificate, just try again.
                tracing::warn!("enrollment: {err:#}; trying again");
                next_coordinator(&mut ring);
                let delay = backoff.next_delay();
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        }
        let result = session(&shared, &url, &stop, &mut established)
            .instrument(tracing::info_span!("agent.session", coordinator = %url))
            .await;
        if stop.is_cancelled() {
            break;
        }
        match result {
            Err(err) if err.downcast_ref::<enroll::Renewed>().is_some() => {
                tracing::info!("{err}");
                backoff.reset();
                continue;
            }
            Err(err) if is_refusal(&err) => tracing::error!("coordinator link: {err:#}"),
            Err(err) => tracing::warn!("coordinator link: {err:#}"),
            Ok(()) => {}
        }
        if established {
            backoff.reset();
        }
        next_coordinator(&mut ring);
        let delay = backoff.next_delay();
        tracing::debug!(?delay, "reconnecting after a pause");
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!("coordinator link closed");
}

/// After a failed session or enrollment: the next coordinator URL, if
/// there are several (the caller still backs off before dialling it).
fn next_coordinator(ring: &mut failover::Ring) {
    if ring.len() > 1 {
        let url = ring.advance();
        tracing::info!(coordinator = %url, "trying the next coordinator");
    }
}

/// Dials the coordinator at `url` with the identity on disk (none before
/// enrolling, or on a plaintext loopback link).
async fn connect(shared: &Shared, url: &str) -> Result<Client> {
    let data_dir = shared.config.worker.data_dir.clone();
    let id = tokio::task::spawn_blocking(move || crate::identity::load(&data_dir))
        .await
        .context("loading the worker identity panicked")??;
    enroll::dial(
        &shared.config.coordinator,
        url,
        &shared.config.worker.data_dir,
        id.as_ref(),
    )
    .await
}

/// First start with `coordinator.enroll_token` and no identity yet: enroll.
/// An error saying "enrollment refused" is final (the operator must issue a
/// new token); others are worth retrying.
async fn enroll_if_needed(shared: &Shared, url: &str) -> Result<()> {
    let cfg = &shared.config;
    let token = &cfg.coordinator.enroll_token.0;
    if token.is_empty()
        || crate::identity::dir(&cfg.worker.data_dir)
            .join(crate::identity::KEY_FILE)
            .exists()
    {
        return Ok(());
    }
    let id = enroll::enroll(
        &cfg.coordinator,
        url,
        &cfg.worker.name,
        &cfg.worker.data_dir,
        token,
    )
    .await?;
    tracing::info!(serial = %id.serial, not_after = %id.not_after, "worker enrolled: certificate stored under identity/");
    Ok(())
}

/// The coordinator refused this worker's identity: a human must act
/// (enroll, re-enroll after a revocation).
fn is_refusal(err: &anyhow::Error) -> bool {
    let text = err.to_string();
    text.contains("PermissionDenied") || text.contains("Unauthenticated")
}

/// A refused call's status on one line; a connection-level cause (TLS
/// against a plaintext client) is named as such.
fn status_line(what: &str, url: &str, status: &tonic::Status) -> anyhow::Error {
    match channel::status_reason(status) {
        Some(reason) => anyhow!("coordinator at {url}: {reason}"),
        None => anyhow!("{what}: {:?}: {}", status.code(), status.message()),
    }
}

fn duration_of(d: Option<prost_types::Duration>, default: Duration) -> Duration {
    d.and_then(|d| Duration::try_from(d).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
        .max(Duration::from_millis(100))
}

/// Where a coordinator timestamp falls on the local monotonic clock.
pub fn deadline_of(ts: Option<&prost_types::Timestamp>, fallback: Duration) -> Instant {
    let now = Instant::now();
    let Some(at) = ts.and_then(pgsnapman_proto::from_timestamp) else {
        return now + fallback;
    };
    match (at - chrono::Utc::now()).to_std() {
        Ok(left) => now + left,
        Err(_) => now,
    }
}

/// One session: Hello, then the lease and upload streams until one breaks
/// or `stop` fires. Sets `established` once the lease stream is open.
async fn session(
    shared: &Arc<Shared>,
    url: &str,
    stop: &CancellationToken,
    established: &mut bool,
) -> Result<()> {
    let name = shared.config.worker.name.clone();
    let mut client = connect(shared, url).await?;
    let hello = HelloRequest {
        worker_name: name.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        client_majors: shared.runner.client_majors(),
        outbox_backlog: shared.outbox.len(),
        seal_public_key: shared.runner.seal_public_key(),
        store_location: shared.runner.store_location(),
        timezone: shared.config.scheduler.timezone.clone(),
    };
    let answer = tokio::time::timeout(HELLO_TIMEOUT, client.hello(hello))
        .await
        .map_err(|_| anyhow!("no Hello answer within {HELLO_TIMEOUT:?}"))?;
    let hello = match answer {
        Ok(r) => r.into_inner(),
        Err(status) if status.code() == tonic::Code::NotFound => {
            return Err(anyhow!(
                "worker {name} is not registered; run `pgsnap worker register {name}`"
            ));
        }
        Err(status) => {
            return Err(status_line("Hello refused", url, &status));
        }
    };
    note_worker_status(shared, hello.status);
    let lease_ttl = duration_of(hello.lease_ttl, DEFAULT_LEASE_TTL);
    let keepalive = duration_of(hello.keepalive_interval, DEFAULT_KEEPALIVE);
    tracing::info!(
        worker_id = hello.worker_id,
        coordinator_version = %hello.coordinator_version,
        ?lease_ttl,
        ?keepalive,
        "connected to coordinator"
    );

    let (tx, rx) = mpsc::channel::<LeaseRequest>(LEASE_QUEUE);
    send(
        &tx,
        lease_request::Msg::Open(Open {
            worker_name: name.clone(),
        }),
    )
    .await?;
    let mut inbound = client
        .lease(ReceiverStream::new(rx))
        .await
        .map_err(|s| {
            anyhow!(
                "cannot open the lease stream: {:?}: {}",
                s.code(),
                s.message()
            )
        })?
        .into_inner();
    *established = true;
    tracing::info!("lease stream open");

    // Permits granted as credit but not yet used by an assignment. Dropped
    // with the session, which frees the slots.
    let stash: Arc<Mutex<Vec<OwnedSemaphorePermit>>> = Arc::default();
    let mut subtasks: JoinSet<Result<()>> = JoinSet::new();
    subtasks.spawn(credit_loop(
        shared.clone(),
        shared.outbox.backlog_mark(),
        stash.clone(),
        tx.clone(),
    ));
    subtasks.spawn(keepalive_loop(tx.clone(), keepalive));
    subtasks.spawn(renew_loop(shared.clone(), tx.clone(), lease_ttl / 3));
    subtasks.spawn(progress_loop(shared.clone(), tx.clone()));
    subtasks.spawn(enroll::renewal_loop(shared.clone(), client.clone()).in_current_span());
    subtasks.spawn(upload::run(shared.clone(), client.clone()).in_current_span());
    let sync_wake = Arc::new(Notify::new());
    subtasks.spawn(
        sync_loop(
            shared.clone(),
            client.clone(),
            tx.clone(),
            sync_wake.clone(),
        )
        .in_current_span(),
    );

    let dead_after = keepalive * 3;
    let result = loop {
        tokio::select! {
            () = stop.cancelled() => break Ok(()),
            Some(done) = subtasks.join_next() => {
                break match done {
                    Ok(Err(err)) => Err(err),
                    Ok(Ok(())) => Err(anyhow!("lease stream closed")),
                    Err(err) => Err(anyhow!("session task failed: {err}")),
                };
            }
            msg = tokio::time::timeout(dead_after, inbound.message()) => match msg {
                Err(_) => break Err(anyhow!("nothing received from the coordinator for {dead_after:?}; reconnecting")),
                Ok(Err(status)) => break Err(anyhow!("lease stream failed: {:?}: {}", status.code(), status.message())),
                Ok(Ok(None)) => break Err(anyhow!("the coordinator closed the lease stream")),
                Ok(Ok(Some(resp))) => {
                    if let Some(msg) = resp.msg {
                        handle(shared, msg, &stash, lease_ttl, &sync_wake);
                    }
                }
            }
        }
    };
    subtasks.abort_all();
    while subtasks.join_next().await.is_some() {}
    drop(stash);
    result
}

async fn send(tx: &mpsc::Sender<LeaseRequest>, msg: lease_request::Msg) -> Result<()> {
    tx.send(LeaseRequest { msg: Some(msg) })
        .await
        .map_err(|_| anyhow!("lease stream closed"))
}

/// Records the worker's own status from the coordinator in the mirror, so
/// that the scheduler honours HALTED even while offline.
fn note_worker_status(shared: &Shared, status: i32) {
    let halted = status == Status::Halted as i32;
    if halted != shared.mirror.snapshot().worker_halted {
        if halted {
            tracing::warn!("the coordinator reports this worker HALTED: scheduled dumps stop");
        } else {
            tracing::info!("this worker is ACTIVE again: scheduled dumps resume");
        }
    }
    if let Err(e) = shared.mirror.set_worker_halted(halted) {
        tracing::error!("cannot record the worker status: {e:#}");
    }
}

/// Pulls the schedule at once, then whenever the coordinator announces a
/// change (and every `scheduler.sync_interval` as a fallback), swaps the
/// mirror and confirms the version on the lease stream.
async fn sync_loop(
    shared: Arc<Shared>,
    mut client: Client,
    tx: mpsc::Sender<LeaseRequest>,
    wake: Arc<Notify>,
) -> Result<()> {
    let name = shared.config.worker.name.clone();
    let every = shared.config.scheduler.sync_interval;
    loop {
        // The worker's own status is not part of the schedule: ask again.
        let hello = HelloRequest {
            worker_name: name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            client_majors: shared.runner.client_majors(),
            outbox_backlog: shared.outbox.len(),
            seal_public_key: shared.runner.seal_public_key(),
            store_location: shared.runner.store_location(),
            timezone: shared.config.scheduler.timezone.clone(),
        };
        let status = client
            .hello(hello)
            .await
            .map_err(|s| anyhow!("Hello refused: {:?}: {}", s.code(), s.message()))?
            .into_inner()
            .status;
        note_worker_status(&shared, status);
        let known = shared.mirror.version();
        let answer = client
            .sync_schedule(SyncScheduleRequest {
                worker_name: name.clone(),
                known_version: known,
            })
            .await;
        match answer {
            Ok(r) => {
                let r = r.into_inner();
                if !r.unchanged {
                    let schedule = r.schedule.unwrap_or_default();
                    let jobs = schedule.dump_jobs.len();
                    shared
                        .mirror
                        .replace(r.version, schedule)
                        .context("store the pulled schedule")?;
                    tracing::info!(version = r.version, jobs, "schedule mirrored");
                }
                send(
                    &tx,
                    lease_request::Msg::ConfirmSchedule(ConfirmSchedule { version: r.version }),
                )
                .await?;
            }
            Err(s) if s.code() == tonic::Code::Unavailable => {
                tracing::debug!("schedule pull: {}; retrying", s.message());
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(s) => {
                return Err(anyhow!(
                    "schedule pull refused: {:?}: {}",
                    s.code(),
                    s.message()
                ));
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Waits until the outbox backlog that existed when the session began
/// (`backlog` = its highest event id) is acknowledged, then takes a free slot
/// and grants it as credit; forever.
///
/// Why wait: 1. a task finishes and its result waits in the outbox; 2. the
/// link stays down longer than the lease TTL; 3. the coordinator queues the
/// task again; 4. on reconnect, credit granted before the backlog is
/// uploaded could lease the task again and run it a second time. With the
/// result applied first, the coordinator completes the task instead.
async fn credit_loop(
    shared: Arc<Shared>,
    backlog: Option<u128>,
    stash: Arc<Mutex<Vec<OwnedSemaphorePermit>>>,
    tx: mpsc::Sender<LeaseRequest>,
) -> Result<()> {
    if let Some(mark) = backlog {
        tracing::info!(
            backlog = shared.outbox.len(),
            "no credit until the outbox backlog is acknowledged"
        );
        let mut acked = shared.acked.subscribe();
        acked
            .wait_for(|v| *v >= mark)
            .await
            .map_err(|_| anyhow!("acknowledgements ended"))?;
        tracing::info!("outbox backlog acknowledged; granting credit");
    }
    let semaphore = shared.semaphore.clone();
    loop {
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            // Closed: the worker is shutting down and takes no more work,
            // but the session stays up to flush the outbox.
            std::future::pending::<()>().await;
            return Ok(());
        };
        stash.lock().unwrap_or_else(|e| e.into_inner()).push(permit);
        send(&tx, lease_request::Msg::Credit(Credit { slots: 1 })).await?;
    }
}

async fn keepalive_loop(tx: mpsc::Sender<LeaseRequest>, every: Duration) -> Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent_at = Some(pgsnapman_proto::timestamp(chrono::Utc::now()));
        send(&tx, lease_request::Msg::Keepalive(Keepalive { sent_at })).await?;
    }
}

/// Renews every running task on this session's stream, and reports its
/// progress; the first round runs at once so that tasks that outlived a
/// broken link are renewed right after reconnecting.
async fn renew_loop(
    shared: Arc<Shared>,
    tx: mpsc::Sender<LeaseRequest>,
    every: Duration,
) -> Result<()> {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for lease in shared.registry.leases() {
            tracing::debug!(task_id = lease.task_id, lease_id = %lease.lease_id, "renewing lease");
            crate::metrics::get().renewal_sent(lease.task_id);
            send(
                &tx,
                lease_request::Msg::Renew(Renew {
                    task_id: lease.task_id,
                    lease_id: lease.lease_id.clone(),
                }),
            )
            .await?;
        }
    }
}

/// How often progress is reported while it changes.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Reports the progress of running tasks, about once a second while it
/// changes (a restore's progress bar follows it).
async fn progress_loop(shared: Arc<Shared>, tx: mpsc::Sender<LeaseRequest>) -> Result<()> {
    let mut sent: std::collections::HashMap<i64, (u64, u64)> = Default::default();
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let leases = shared.registry.leases();
        sent.retain(|id, _| leases.iter().any(|l| l.task_id == *id));
        for lease in leases {
            let (phase, done, total) = lease.progress;
            if (done == 0 && total == 0) || sent.get(&lease.task_id) == Some(&(done, total)) {
                continue;
            }
            sent.insert(lease.task_id, (done, total));
            send(
                &tx,
                lease_request::Msg::Progress(ReportProgress {
                    task_id: lease.task_id,
                    lease_id: lease.lease_id,
                    progress: Some(Progress {
                        phase: phase.to_string(),
                        bytes_done: done,
                        bytes_total: total,
                    }),
                }),
            )
            .await?;
        }
    }
}

fn handle(
    shared: &Arc<Shared>,
    msg: lease_response::Msg,
    stash: &Arc<Mutex<Vec<OwnedSemaphorePermit>>>,
    lease_ttl: Duration,
    sync_wake: &Notify,
) {
    match msg {
        lease_response::Msg::Assignment(a) => {
            let permit = stash.lock().unwrap_or_else(|e| e.into_inner()).pop();
            start_task(shared, a, permit, lease_ttl);
        }
        lease_response::Msg::Renewed(r) => {
            tracing::debug!(task_id = r.task_id, "lease renewed");
            crate::metrics::get().renewal_answered(r.task_id);
            shared
                .registry
                .renewed(r.task_id, deadline_of(r.leased_until.as_ref(), lease_ttl));
        }
        lease_response::Msg::LeaseLost(l) => match shared.registry.cancel(l.task_id) {
            Cancel::Cancelled => {
                tracing::warn!(task_id = l.task_id, reason = %l.reason, "lease lost; cancelling the task");
            }
            // Usually a renewal that crossed the result on its way in.
            Cancel::AfterResult => {
                tracing::debug!(task_id = l.task_id, reason = %l.reason, "lease ended after the task's result was recorded; the result stays in the outbox");
            }
            Cancel::NotRunning => {}
        },
        lease_response::Msg::Cancel(c) => match shared.registry.cancel(c.task_id) {
            Cancel::Cancelled => {
                tracing::info!(task_id = c.task_id, reason = %c.reason, "coordinator cancelled the task");
            }
            Cancel::AfterResult => {
                tracing::info!(task_id = c.task_id, reason = %c.reason, "coordinator cancelled the task after it finished here; its result stays in the outbox");
            }
            Cancel::NotRunning => {}
        },
        lease_response::Msg::Keepalive(_) => {}
        lease_response::Msg::ScheduleChanged(s) => {
            tracing::debug!(version = s.version, "schedule changed; pulling it");
            sync_wake.notify_one();
        }
    }
}

fn start_task(
    shared: &Arc<Shared>,
    a: TaskAssignment,
    permit: Option<OwnedSemaphorePermit>,
    lease_ttl: Duration,
) {
    let task_id = a.task_id;
    if permit.is_none() {
        tracing::warn!(
            task_id,
            "assignment without granted credit (protocol error); running it anyway"
        );
    }
    if shared.drain.is_cancelled() {
        tracing::info!(
            task_id,
            "shutting down: not starting the assigned task; its lease will expire"
        );
        return;
    }
    let spec = a.spec;
    let cancel = shared.tasks_token.child_token();
    let progress: Arc<crate::progress::TaskProgress> = Arc::default();
    let leased_until = deadline_of(a.leased_until.as_ref(), lease_ttl);
    if !shared.registry.insert(
        task_id,
        a.lease_id.clone(),
        leased_until,
        cancel.clone(),
        Arc::clone(&progress),
    ) {
        tracing::warn!(
            task_id,
            "task is already running here; ignoring the second assignment"
        );
        return;
    }
    let (kind, job_id) = match &spec {
        Some(task_assignment::Spec::Dump(d)) => ("dump", d.job_id),
        Some(task_assignment::Spec::Verify(_)) => ("verify", 0),
        Some(task_assignment::Spec::Delete(_)) => ("delete", 0),
        Some(task_assignment::Spec::Rebuild(_)) => ("rebuild", 0),
        Some(task_assignment::Spec::VerifyDump(_)) => ("verify-dump", 0),
        Some(task_assignment::Spec::Restore(r)) => ("restore", r.restore_job_id),
        None => ("unknown", 0),
    };
    let span = tracing::info_span!("task.run", task_id, kind, lease_id = %a.lease_id, job_id, attempt = a.attempt);
    span.in_scope(|| tracing::info!("task assigned"));
    let received = std::time::Instant::now();
    let run = crate::task::run(
        shared.clone(),
        crate::task::Assigned {
            task_id,
            lease_id: a.lease_id,
            attempt: a.attempt,
        },
        spec,
        cancel,
        progress,
        permit,
    );
    shared.tasks.spawn(
        async move {
            crate::metrics::get().task_started(kind, received.elapsed());
            run.await;
        }
        .instrument(span),
    );
}
