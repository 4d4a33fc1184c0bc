//! One open lease stream: credit, assignments, renewals, keepalives; ends
//! when the worker goes, the coordinator stops, or the worker is revoked.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgsnapman_proto::v1;
use pgsnapman_proto::v1::lease_request::Msg as In;
use pgsnapman_proto::v1::lease_response::Msg as Out;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::caller::Caller;
use crate::catalog::Catalog;
use crate::config::LeaseConfig;
use crate::rows::WorkerRow;
use crate::streams::StreamSlot;

/// One open lease stream.
pub(super) struct Session {
    pub id: uuid::Uuid,
    pub caller: Caller,
    pub worker: WorkerRow,
    pub catalog: Catalog,
    pub lease: LeaseConfig,
    pub tx: mpsc::Sender<Result<v1::LeaseResponse, Status>>,
    pub credits: u32,
    /// This stream's place in the per-worker limit; its token fires when
    /// the worker is revoked.
    pub slot: StreamSlot,
    /// Fired when the catalog says a task of this worker was queued or its
    /// schedule changed (`wake.rs`); the poll is the fallback.
    pub wake: Arc<Notify>,
    /// Leases this stream handed out that may still be running: on a
    /// wake-up, those whose task was cancelled are told to stop.
    pub leases: HashMap<i64, uuid::Uuid>,
}

/// Credit a worker may hold at once; more is a protocol error we clamp.
const MAX_CREDITS: u32 = 256;

impl Session {
    fn stale_after(&self) -> Duration {
        self.lease.keepalive_interval * 3
    }

    async fn send(&self, msg: Out) -> bool {
        self.tx
            .send(Ok(v1::LeaseResponse { msg: Some(msg) }))
            .await
            .is_ok()
    }

    pub(super) async fn run(
        mut self,
        mut inbound: Streaming<v1::LeaseRequest>,
        shutdown: CancellationToken,
    ) {
        let name = self.worker.name.clone();
        if let Err(e) = self
            .catalog
            .open_session(self.id, self.worker.id, self.stale_after())
            .await
        {
            let _ = self.tx.send(Err(e.into())).await;
            return;
        }
        tracing::info!(worker = %name, session = %self.id, "lease stream open");
        let mut poll = tokio::time::interval(self.lease.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut keepalive = tokio::time::interval(self.lease.keepalive_interval);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut known_version = self.worker.schedule_version;
        let cut = self.slot.cut.clone();
        let wake = self.wake.clone();
        let reason = loop {
            tokio::select! {
                () = shutdown.cancelled() => break "coordinator shutting down",
                () = cut.cancelled() => {
                    let _ = self.tx.send(Err(Status::permission_denied(format!(
                        "worker {name} was revoked: re-enroll with a new token (pgsnap worker enroll-token {name})"
                    )))).await;
                    break "worker revoked";
                }
                m = inbound.message() => match m {
                    Ok(Some(m)) => {
                        last_heard = Instant::now();
                        if let Err(e) = self.handle(m).await {
                            tracing::warn!(worker = %name, "lease stream: {e:#}");
                        }
                    }
                    Ok(None) => break "closed by the worker",
                    Err(_) => break "broken",
                },
                () = wake.notified() => {
                    if !self.tell_cancelled().await || !self.look(&mut known_version).await {
                        break "closed by the worker";
                    }
                }
                _ = poll.tick() => {
                    if last_heard.elapsed() > self.stale_after() {
                        break "worker silent for three keepalive intervals";
                    }
                    if !self.look(&mut known_version).await {
                        break "closed by the worker";
                    }
                }
                _ = keepalive.tick() => {
                    // Revocation on another coordinator reaches this stream
                    // within one keepalive period.
                    match self.caller.check_not_revoked(&self.catalog).await {
                        Ok(()) => {}
                        Err(status) if matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => {
                            let _ = self.tx.send(Err(status)).await;
                            break "worker revoked";
                        }
                        Err(e) => tracing::warn!(worker = %name, "revocation check: {}", e.message()),
                    }
                    // The fallback for a lost cancel notification; also
                    // forgets leases that ended.
                    if !self.tell_cancelled().await {
                        break "closed by the worker";
                    }
                    let ka = v1::Keepalive { sent_at: Some(pgsnapman_proto::timestamp(chrono::Utc::now())) };
                    if !self.send(Out::Keepalive(ka)).await {
                        break "closed by the worker";
                    }
                }
            }
        };
        if let Err(e) = self.catalog.close_session(self.id).await {
            tracing::warn!(worker = %name, "could not close session: {e}");
        }
        tracing::info!(worker = %name, session = %self.id, reason, "lease stream ended");
    }

    /// Tells the worker about a new schedule version and hands out queued
    /// tasks up to its credit. False if the stream is gone.
    async fn look(&mut self, known_version: &mut i64) -> bool {
        match self.catalog.schedule_version(self.worker.id).await {
            Ok((v, _)) if v != *known_version => {
                *known_version = v;
                let version = u64::try_from(v).unwrap_or(0);
                if !self
                    .send(Out::ScheduleChanged(v1::ScheduleChanged { version }))
                    .await
                {
                    return false;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(worker = %self.worker.name, "schedule version: {e}"),
        }
        self.credits == 0 || self.dispatch().await
    }

    /// Tells the worker to stop the tasks this stream leased that were
    /// cancelled (`pgsnap task cancel`), and forgets leases that ended.
    /// False if the stream is gone.
    async fn tell_cancelled(&mut self) -> bool {
        if self.leases.is_empty() {
            return true;
        }
        let held: Vec<(i64, uuid::Uuid)> = self.leases.iter().map(|(t, l)| (*t, *l)).collect();
        let states = match self.catalog.lease_states(&held).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(worker = %self.worker.name, "reading lease states: {e}");
                return true;
            }
        };
        let current: HashMap<i64, (uuid::Uuid, String)> =
            states.into_iter().map(|(t, l, s)| (t, (l, s))).collect();
        for (task_id, lease) in held {
            match current.get(&task_id) {
                Some((l, state)) if *l == lease && state == "LEASED" => {}
                Some((l, state)) if *l == lease && state == "CANCELLED" => {
                    self.leases.remove(&task_id);
                    tracing::info!(worker = %self.worker.name, task = task_id, "telling the worker to stop a cancelled task");
                    let cancel = v1::CancelTask {
                        task_id,
                        reason: "cancelled by an operator (pgsnap task cancel)".into(),
                    };
                    if !self.send(Out::Cancel(cancel)).await {
                        return false;
                    }
                }
                _ => {
                    self.leases.remove(&task_id);
                }
            }
        }
        true
    }

    async fn handle(&mut self, m: v1::LeaseRequest) -> anyhow::Result<()> {
        let Some(m) = m.msg else { return Ok(()) };
        match m {
            In::Open(_) => anyhow::bail!("a second Open on the same stream is ignored"),
            In::Credit(c) => {
                self.credits = self.credits.saturating_add(c.slots).min(MAX_CREDITS);
                // Hand out work at once rather than at the next poll.
                self.dispatch().await;
            }
            In::Renew(r) => {
                let lease = uuid::Uuid::parse_str(&r.lease_id).unwrap_or_default();
                let out = match self
                    .catalog
                    .renew(self.worker.id, r.task_id, lease, self.lease.ttl)
                    .await?
                {
                    Some(until) => Out::Renewed(v1::Renewed {
                        task_id: r.task_id,
                        leased_until: Some(pgsnapman_proto::timestamp(until)),
                    }),
                    None => {
                        tracing::info!(worker = %self.worker.name, task = r.task_id, "renewal refused: lease lost");
                        Out::LeaseLost(v1::LeaseLost {
                            task_id: r.task_id,
                            reason: "the lease expired or the task was cancelled".into(),
                        })
                    }
                };
                self.send(out).await;
            }
            In::Progress(p) => {
                if let Some(progress) = &p.progress {
                    let lease = uuid::Uuid::parse_str(&p.lease_id).unwrap_or_default();
                    self.catalog
                        .progress(self.worker.id, p.task_id, lease, progress)
                        .await?;
                }
            }
            In::Keepalive(_) => {
                self.catalog
                    .touch_session(self.id, self.worker.id, self.stale_after())
                    .await?;
            }
            In::ConfirmSchedule(c) => {
                self.catalog
                    .confirm_schedule(self.worker.id, c.version)
                    .await?;
            }
        }
        Ok(())
    }

    /// Leases queued tasks up to the worker's credit. False if the stream is
    /// gone.
    async fn dispatch(&mut self) -> bool {
        // Revocation requeues the worker's tasks, and that wakes this very
        // stream: a cut stream hands out nothing more and ends at its
        // next turn with the revocation error (the catalog's claim also
        // skips revoked workers).
        if self.slot.cut.is_cancelled() {
            return true;
        }
        let claimed = match self
            .catalog
            .claim(self.worker.id, self.credits, self.lease.ttl)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(worker = %self.worker.name, "claiming tasks failed: {e}");
                return true;
            }
        };
        for c in claimed {
            let lease_id = c.task.lease_id.unwrap_or_default();
            let assignment = v1::TaskAssignment {
                task_id: c.task.id,
                lease_id: lease_id.to_string(),
                leased_until: c.task.leased_until.map(pgsnapman_proto::timestamp),
                attempt: u32::try_from(c.task.attempts).unwrap_or(0),
                spec: Some(c.spec),
            };
            if self.send(Out::Assignment(assignment)).await {
                self.credits = self.credits.saturating_sub(1);
                self.leases.insert(c.task.id, lease_id);
                tracing::info!(worker = %self.worker.name, task = c.task.id,
                    attempt = c.task.attempts, "task leased");
            } else {
                if let Err(e) = self.catalog.release(c.task.id, lease_id).await {
                    tracing::warn!(
                        task = c.task.id,
                        "could not release an undelivered lease: {e}"
                    );
                }
                return false;
            }
        }
        true
    }
}
