//! Leased tasks this worker is running: the registry the renew ticker and the
//! watchdog read, and the life of one task from assignment until the
//! coordinator has acknowledged its result. Tasks are not tied to a link
//! session: they keep running across reconnects.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pgsnapman_proto::v1::{DumpSpec, TaskFailed, TaskRef, event, task_assignment::Spec};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::progress::TaskProgress;
use crate::runner::{DumpResult, Runner};

/// One running task as the link sees it.
#[derive(Debug)]
struct Entry {
    lease_id: String,
    leased_until: Instant,
    cancel: CancellationToken,
    progress: Arc<TaskProgress>,
    /// Its result is in the outbox: the task only waits for the
    /// acknowledgement (and keeps its lease alive until then).
    recorded: bool,
}

/// What [`Registry::cancel`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// No such task runs here.
    NotRunning,
    /// The task was running and is now cancelled.
    Cancelled,
    /// The task had already recorded its result: only the wait for the
    /// acknowledgement ends; the result stays in the outbox.
    AfterResult,
}

/// What the renew ticker needs of a running task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub task_id: i64,
    pub lease_id: String,
    /// (phase, bytes done, bytes in all).
    pub progress: (&'static str, u64, u64),
}

/// Running tasks by task id.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<i64, Entry>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Entry>> {
        // A panic while holding the lock leaves the map consistent (every
        // operation is a single insert/remove/update).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a task; false if it is already running.
    pub fn insert(
        &self,
        task_id: i64,
        lease_id: String,
        leased_until: Instant,
        cancel: CancellationToken,
        progress: Arc<TaskProgress>,
    ) -> bool {
        let mut map = self.lock();
        if map.contains_key(&task_id) {
            return false;
        }
        map.insert(
            task_id,
            Entry {
                lease_id,
                leased_until,
                cancel,
                progress,
                recorded: false,
            },
        );
        true
    }

    /// Notes that a task's result is in the outbox.
    pub fn recorded(&self, task_id: i64) {
        if let Some(e) = self.lock().get_mut(&task_id) {
            e.recorded = true;
        }
    }

    pub fn remove(&self, task_id: i64) {
        self.lock().remove(&task_id);
    }

    /// Records a renewal.
    pub fn renewed(&self, task_id: i64, leased_until: Instant) {
        if let Some(e) = self.lock().get_mut(&task_id) {
            e.leased_until = leased_until;
        }
    }

    /// Cancels one task.
    pub fn cancel(&self, task_id: i64) -> Cancel {
        match self.lock().get(&task_id) {
            Some(e) => {
                e.cancel.cancel();
                if e.recorded {
                    Cancel::AfterResult
                } else {
                    Cancel::Cancelled
                }
            }
            None => Cancel::NotRunning,
        }
    }

    /// Cancels every task whose lease ended before `now`; returns their ids.
    pub fn cancel_expired(&self, now: Instant) -> Vec<i64> {
        let map = self.lock();
        let mut ids = Vec::new();
        for (id, e) in map.iter() {
            if e.leased_until <= now && !e.cancel.is_cancelled() {
                e.cancel.cancel();
                ids.push(*id);
            }
        }
        ids
    }

    /// The leases to renew.
    pub fn leases(&self) -> Vec<Lease> {
        self.lock()
            .iter()
            .filter(|(_, e)| !e.cancel.is_cancelled())
            .map(|(id, e)| Lease {
                task_id: *id,
                lease_id: e.lease_id.clone(),
                progress: e.progress.snapshot(),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A lease as assigned.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub task_id: i64,
    pub lease_id: String,
    /// 1 for the first lease of the task.
    pub attempt: u32,
}

/// Runs one leased task to its end: do the work, write the result to the
/// outbox, and stay registered (so the lease is renewed) until the
/// coordinator acknowledged the result. A cancelled task reports nothing.
pub async fn run(
    shared: Arc<Shared>,
    lease: Assigned,
    spec: Option<Spec>,
    cancel: CancellationToken,
    progress: Arc<TaskProgress>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let task_id = lease.task_id;
    let task = TaskRef {
        task_id,
        lease_id: lease.lease_id,
    };
    let what = identity(spec.as_ref());
    // A first attempt cannot have run before (an attempt is counted once
    // the assignment was sent): a remembered task of the same id is another
    // task (a catalog restored from a backup hands out ids again).
    if lease.attempt > 1 && report_again(&shared, &task, &what, &cancel).await {
        return;
    }
    let store = shared.runner.store();
    let outcome = match &spec {
        Some(Spec::Dump(d)) => dump(&shared.runner, &task, d, &cancel, &progress).await,
        Some(Spec::Restore(r)) => {
            let body = crate::restore::task(
                &shared.restore_slots,
                &shared.runner,
                shared.outbox.clone(),
                &task,
                r,
                &cancel,
                &progress,
            )
            .await;
            body.map_or(Outcome::Cancelled, |b| Outcome::of(vec![b], false))
        }
        Some(Spec::Verify(_)) => Outcome::of(crate::maintenance::verify(store, &task).await, false),
        Some(Spec::Delete(d)) => {
            let fraction = shared.config.store.repack_below_live_fraction;
            let bodies = crate::maintenance::delete(store, &task, &d.dump_uuid, fraction).await;
            Outcome::of(bodies, true)
        }
        Some(Spec::Rebuild(_)) => {
            Outcome::of(crate::maintenance::rebuild(store, &task).await, false)
        }
        Some(Spec::VerifyDump(v)) => crate::verify::task(&shared, &task, v, &cancel, &progress)
            .await
            .map_or(Outcome::Cancelled, |b| Outcome::of(vec![b], false)),
        None => rejected(
            &task,
            "the task carries no spec this worker knows".to_string(),
        ),
    };
    match outcome {
        Outcome::Cancelled => shared.registry.remove(task_id),
        Outcome::Report {
            bodies,
            stored_uuid,
            store_changed,
        } => {
            let finished = Finish::First { stored_uuid };
            finish_with(&shared, task_id, &what, bodies, &cancel, finished).await;
            if store_changed {
                shared.store_changed.notify_one();
            }
            if let Some(Spec::Dump(d)) = &spec {
                crate::retention::after_dump(&shared, d.job_id).await;
            }
        }
    }
}

/// How a task's work ended.
enum Outcome {
    /// Nothing is reported.
    Cancelled,
    /// `bodies` are its result. `stored_uuid`: a dump stored by it (removed
    /// if the result cannot be queued), or empty. `store_changed`: the
    /// store's contents changed (the figures are refreshed).
    Report {
        bodies: Vec<event::Body>,
        stored_uuid: String,
        store_changed: bool,
    },
}

impl Outcome {
    /// A result that stored no dump.
    fn of(bodies: Vec<event::Body>, store_changed: bool) -> Self {
        Self::Report {
            bodies,
            stored_uuid: String::new(),
            store_changed,
        }
    }
}

/// A task that cannot be run: it fails with `error`.
fn rejected(task: &TaskRef, error: String) -> Outcome {
    tracing::warn!(error = %error, "task cannot be run");
    let failed = event::Body::TaskFailed(TaskFailed {
        task: Some(task.clone()),
        error,
    });
    Outcome::of(vec![failed], false)
}

/// Runs a DUMP task.
async fn dump(
    runner: &Runner,
    task: &TaskRef,
    spec: &DumpSpec,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Outcome {
    progress.set_phase("dump");
    let result = runner
        .dump(Some(task.clone()), spec, cancel, progress.done.clone())
        .await;
    let finished = match result {
        DumpResult::Cancelled => {
            tracing::info!("task cancelled; nothing is reported for it");
            return Outcome::Cancelled;
        }
        DumpResult::Rejected(error) | DumpResult::Skipped(error) => {
            return rejected(task, error);
        }
        DumpResult::Finished(finished) => finished,
    };
    if finished.succeeded {
        tracing::info!(
            dump_uuid = %finished.dump_uuid,
            dump_bytes = finished.dump_bytes,
            location = %finished.location,
            "dump succeeded"
        );
    } else {
        tracing::warn!(dump_uuid = %finished.dump_uuid, error = %finished.error, "dump failed");
    }
    // A stored dump whose result cannot be queued will never be recorded.
    let stored_uuid = if finished.succeeded {
        finished.dump_uuid.clone()
    } else {
        String::new()
    };
    let store_changed = !stored_uuid.is_empty();
    Outcome::Report {
        bodies: vec![event::Body::DumpFinished(*finished)],
        stored_uuid,
        store_changed,
    }
}

/// A task assigned again after it finished here (its lease expired while
/// the result waited in the outbox, and the coordinator queued it again)
/// is not run a second time — a second restore could drop the backup of
/// the database the first one replaced: its result is reported again under
/// the new lease. True if the task was handled so.
async fn report_again(
    shared: &Arc<Shared>,
    task: &TaskRef,
    what: &str,
    cancel: &CancellationToken,
) -> bool {
    let outbox = shared.outbox.clone();
    let task_id = task.task_id;
    let bodies = match tokio::task::spawn_blocking(move || outbox.finished(task_id)).await {
        Ok(Ok(None)) => return false,
        Ok(Ok(Some(done))) if done.what != what => {
            // The same id for another task: a catalog restored from a
            // backup hands out ids again.
            tracing::warn!(earlier = %done.what, now = %what, "a task of this id finished here was another task; running this one");
            return false;
        }
        Ok(Ok(Some(done))) => done.bodies,
        Ok(Err(err)) => {
            // Not knowing whether it ran, it must not run.
            tracing::error!(
                "cannot tell whether the task already ran here; not running it: {err:#}"
            );
            shared.registry.remove(task_id);
            return true;
        }
        Err(err) => {
            tracing::error!("cannot tell whether the task already ran here; not running it: {err}");
            shared.registry.remove(task_id);
            return true;
        }
    };
    tracing::warn!(
        "task already finished on this worker; reporting its result again instead of running it"
    );
    let bodies = if bodies.is_empty() {
        vec![event::Body::TaskFailed(TaskFailed {
            task: Some(task.clone()),
            error: "the task already ran on this worker and its result is no longer known; it is not run twice".to_string(),
        })]
    } else {
        crate::outbox::under_lease(bodies, task)
    };
    finish_with(shared, task_id, what, bodies, cancel, Finish::Again).await;
    true
}

/// What a dump task of `job_id` is (see `identity`).
pub fn dump_identity(job_id: i64) -> String {
    format!("dump of job {job_id}")
}

/// What a task is, for telling a task assigned again from another task
/// that has the same id.
fn identity(spec: Option<&Spec>) -> String {
    match spec {
        Some(Spec::Dump(d)) => dump_identity(d.job_id),
        Some(Spec::Restore(r)) => format!("restore run {} of dump {}", r.run_id, r.dump_uuid),
        Some(Spec::Verify(_)) => "verify".to_string(),
        Some(Spec::Delete(d)) => format!("delete of dump {}", d.dump_uuid),
        Some(Spec::Rebuild(_)) => "rebuild".to_string(),
        Some(Spec::VerifyDump(v)) => format!("{} verification of dump {}", v.method, v.dump_uuid),
        None => "unknown".to_string(),
    }
}

/// How a task's result comes to be reported.
enum Finish {
    /// The task ran now; `stored_uuid` is the dump it stored, if any.
    First { stored_uuid: String },
    /// The remembered result of an earlier run, under a new lease.
    Again,
}

/// Queues a task's result events (in one synced batch) and keeps the task
/// registered until the coordinator acknowledged them. If they cannot be
/// queued, a stored dump (`stored_uuid`) is removed: nobody would record it.
async fn finish_with(
    shared: &Arc<Shared>,
    task_id: i64,
    what: &str,
    bodies: Vec<event::Body>,
    cancel: &CancellationToken,
    finished: Finish,
) {
    let outbox = shared.outbox.clone();
    // Remembered as finished in the same write: never run twice.
    let what = what.to_string();
    let (stored_uuid, again) = match finished {
        Finish::First { stored_uuid } => (stored_uuid, false),
        Finish::Again => (String::new(), true),
    };
    let appended = tokio::task::spawn_blocking(move || {
        if again {
            outbox.append_result_again(task_id, &what, bodies)
        } else {
            outbox.append_result(task_id, &what, bodies)
        }
    })
    .await;
    let event_id = match appended {
        Ok(Ok(ids)) => ids.last().copied().unwrap_or_default(),
        Ok(Err(err)) => {
            tracing::error!("cannot record the task result in the outbox: {err:#}");
            shared.runner.discard(&stored_uuid).await;
            shared.registry.remove(task_id);
            return;
        }
        Err(err) => {
            tracing::error!("cannot record the task result in the outbox: {err}");
            shared.runner.discard(&stored_uuid).await;
            shared.registry.remove(task_id);
            return;
        }
    };
    shared.runner.recorded(&stored_uuid);
    shared.registry.recorded(task_id);
    tracing::debug!(event_id = %event_id, "result queued for upload");
    // Keep the lease alive until the catalog has the result: otherwise the
    // lease could expire between the dump's end and its catalog row, and the
    // task would run a second time.
    let mut acked = shared.acked.subscribe();
    let target = event_id.as_u128();
    tokio::select! {
        res = acked.wait_for(|v| *v >= target) => {
            if res.is_ok() {
                tracing::info!("task result acknowledged by the coordinator");
            }
        }
        () = cancel.cancelled() => {
            tracing::info!("stopped waiting for the acknowledgement; the result stays in the outbox");
        }
    }
    shared.registry.remove(task_id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[tokio::test]
    async fn registry_tracks_renewals_and_expiry() {
        let r = Registry::default();
        let now = Instant::now();
        let t1 = CancellationToken::new();
        let t2 = CancellationToken::new();
        let p = Arc::new(TaskProgress::default());
        p.done.store(7, Ordering::Relaxed);
        p.total.store(9, Ordering::Relaxed);
        p.set_phase("restore");
        assert!(r.insert(
            1,
            "l1".into(),
            now + Duration::from_secs(1),
            t1.clone(),
            p.clone()
        ));
        assert!(!r.insert(1, "l1".into(), now, t1.clone(), p.clone()));
        assert!(r.insert(
            2,
            "l2".into(),
            now + Duration::from_secs(1),
            t2.clone(),
            p.clone()
        ));
        r.renewed(2, now + Duration::from_secs(10));
        assert_eq!(r.cancel_expired(now + Duration::from_secs(2)), vec![1]);
        assert!(t1.is_cancelled() && !t2.is_cancelled());
        let leases = r.leases();
        assert_eq!(
            leases,
            vec![Lease {
                task_id: 2,
                lease_id: "l2".into(),
                progress: ("restore", 7, 9),
            }]
        );
        assert_eq!(r.cancel(2), Cancel::Cancelled);
        assert!(t2.is_cancelled());
        r.remove(1);
        r.remove(2);
        assert!(r.is_empty());
        assert_eq!(r.cancel(2), Cancel::NotRunning);
    }

    /// A lease that ends after the task recorded its result (the coordinator
    /// applied the result before a renewal in flight arrived) is not a task
    /// cancelled: the agent must not warn that it cancels the task.
    #[tokio::test]
    async fn a_lease_lost_after_the_result_is_told_apart() {
        let r = Registry::default();
        let t = CancellationToken::new();
        let far = Instant::now() + Duration::from_secs(60);
        assert!(r.insert(3, "l3".into(), far, t.clone(), Arc::default()));
        r.recorded(3);
        r.recorded(4); // not running: nothing happens
        assert_eq!(r.cancel(3), Cancel::AfterResult);
        assert!(t.is_cancelled(), "the wait for the acknowledgement ends");
        assert_eq!(r.cancel(4), Cancel::NotRunning);
    }
}
