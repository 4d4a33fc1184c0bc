//! The local scheduler: fires REPEAT jobs from the mirrored schedule by their
//! cron expressions in the configured time zone, whether or not the
//! coordinator is reachable. Rules (docs/worker.md):
//! - only ACTIVE REPEAT jobs of ACTIVE instances fire, and nothing fires while
//!   the coordinator last reported this worker HALTED; SINGLE jobs are run by
//!   the coordinator as tasks, never from here;
//! - never two runs of one job at once: a fire that finds the previous run
//!   still going is skipped and reported;
//! - missed fires (the worker was down): the latest one runs at start if it
//!   is at most `scheduler.missed_grace` old, otherwise it is skipped and
//!   reported (see `plan::decide`);
//! - at most `scheduler.max_concurrent` scheduled dumps run at once.
pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pgsnapman_proto::model::CronExpr;
use pgsnapman_proto::v1::{
    DumpJob, DumpSpec, InstanceConnection, JobKind, MessageLevel, Status, WorkerMessage, event,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Shared;
use crate::mirror::FireState;
use crate::runner::DumpResult;
use plan::Decision;

/// The scheduler's clock: real time, or (tests only) real time sped up by
/// `scheduler.clock_speed` from a base that is never behind a fire already
/// recorded.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: DateTime<Utc>,
    started: Instant,
    speed: u32,
}

impl Clock {
    pub fn new(base: DateTime<Utc>, speed: u32) -> Self {
        Self {
            base,
            started: Instant::now(),
            speed: speed.max(1),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let elapsed = self.started.elapsed() * self.speed;
        self.base + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero())
    }

    /// Real time between scheduler ticks: a quarter of a (clock) minute, at
    /// most one second and at least 5 ms (a fire may then be up to 5 ms ×
    /// speed late in clock time: 3.6 clock minutes at the highest speed).
    pub fn tick(&self) -> Duration {
        (Duration::from_secs(15) / self.speed)
            .clamp(Duration::from_millis(5), Duration::from_secs(1))
    }
}

/// Runs until `stop` fires.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let cfg = &shared.config.scheduler;
    let tz: chrono_tz::Tz = match cfg.timezone.parse() {
        Ok(tz) => tz,
        Err(_) => {
            tracing::error!(timezone = %cfg.timezone, "unknown scheduler.timezone; scheduler not started");
            return;
        }
    };
    let grace = missed_grace(&shared);
    let clock = clock(&shared);
    if cfg.clock_speed > 1 {
        tracing::warn!(
            speed = cfg.clock_speed,
            start = %clock.now(),
            "scheduler clock sped up (test setting)"
        );
        if cfg.clock_start.is_some() {
            // A simulated calendar: dumps carry its dates (retention tests).
            tracing::warn!("dumps are stamped with the test clock's time");
            shared.runner.use_clock(clock);
        }
    }
    let slots = Arc::clone(&shared.runs.slots);
    let running = Arc::clone(&shared.runs.running);
    let mut states: HashMap<i64, FireState> = HashMap::new();
    let mut bad_cron: HashSet<(i64, String)> = HashSet::new();
    let mut tick = tokio::time::interval(clock.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(timezone = %tz, version = shared.mirror.version(), "scheduler running");
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let snap = shared.mirror.snapshot();
        if snap.worker_halted {
            continue;
        }
        let now = clock.now();
        for job in &snap.jobs {
            if job.kind() != JobKind::Repeat || job.status() != Status::Active {
                continue;
            }
            let Some(instance) = snap.instances.get(&job.instance_id) else {
                continue;
            };
            if instance.status() != Status::Active {
                continue;
            }
            let cron = match CronExpr::parse(&job.cron) {
                Ok(c) => c,
                Err(e) => {
                    if bad_cron.insert((job.id, job.cron.clone())) {
                        report(
                            &shared,
                            "SCHEDULE",
                            MessageLevel::Error,
                            job.id,
                            format!("job {}: {e}", job.id),
                        );
                    }
                    continue;
                }
            };
            match decide(&shared, &mut states, job.id, &cron, &tz, now, grace) {
                Decision::Fire { scheduled } => {
                    let busy = !running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(job.id);
                    if busy {
                        report(
                            &shared,
                            "SCHEDULE",
                            MessageLevel::Warning,
                            job.id,
                            format!(
                                "job {}: the run due at {scheduled} was skipped: the previous run is still going",
                                job.id
                            ),
                        );
                        continue;
                    }
                    let span = tracing::info_span!("scheduler.fire", job_id = job.id, %scheduled);
                    shared.tasks.spawn(
                        run_job(
                            Arc::clone(&shared),
                            job.clone(),
                            spec_of(
                                job,
                                instance.clone(),
                                snap.scripts.get(&job.script_name).cloned(),
                            ),
                            Arc::clone(&slots),
                            Arc::clone(&running),
                        )
                        .instrument(span),
                    );
                }
                Decision::SkipMissed { scheduled } => {
                    report(
                        &shared,
                        "SCHEDULE",
                        MessageLevel::Warning,
                        job.id,
                        format!(
                            "job {}: the run due at {scheduled} was missed while the worker was down and is older than scheduler.missed_grace ({}); skipped",
                            job.id,
                            humantime::format_duration(cfg.missed_grace)
                        ),
                    );
                }
                Decision::Wait { .. } | Decision::Never => {}
            }
        }
        fire_restores(&shared, &mut states, &running, now, grace);
    }
    tracing::info!("scheduler stopped");
}

/// A standalone worker's cron restores (none on a managed worker, whose
/// REPEAT restore jobs the coordinator fires): by the same rules as the
/// jobs (missed fires, never two runs at once), their cron in UTC as the
/// coordinator's.
fn fire_restores(
    shared: &Arc<Shared>,
    states: &mut HashMap<i64, FireState>,
    running: &Arc<Mutex<HashSet<i64>>>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) {
    for restore in shared.standalone.scheduled() {
        if restore.status != Status::Active {
            continue;
        }
        // Checked when the jobs file was read.
        let Ok(cron) = CronExpr::parse(&restore.cron) else {
            continue;
        };
        let name = &restore.target.name;
        let job_id = restore.target.job_id;
        match decide(
            shared,
            states,
            restore.id,
            &cron,
            &chrono_tz::UTC,
            now,
            grace,
        ) {
            Decision::Fire { scheduled } => {
                if !running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(restore.id)
                {
                    report(
                        shared,
                        "SCHEDULE",
                        MessageLevel::Warning,
                        job_id,
                        format!(
                            "restore {name}: the run due at {scheduled} was skipped: the previous run is still going"
                        ),
                    );
                    continue;
                }
                let span = tracing::info_span!("scheduler.restore", restore = %name, %scheduled);
                let marked = Running {
                    running: Arc::clone(running),
                    job_id: restore.id,
                };
                let shared2 = Arc::clone(shared);
                shared.tasks.spawn(
                    async move {
                        let _running = marked;
                        crate::standalone::restores::run(shared2, restore).await;
                    }
                    .instrument(span),
                );
            }
            Decision::SkipMissed { scheduled } => report(
                shared,
                "SCHEDULE",
                MessageLevel::Warning,
                job_id,
                format!(
                    "restore {name}: the run due at {scheduled} was missed while the worker was down and is older than scheduler.missed_grace ({}); skipped",
                    humantime::format_duration(shared.config.scheduler.missed_grace)
                ),
            ),
            Decision::Wait { .. } | Decision::Never => {}
        }
    }
}

/// What to do now about the schedule keyed `id` (a job, or a standalone
/// restore), from its fire state (loaded once, then kept in `states`); a
/// fire run or skipped is recorded as handled before it returns.
fn decide(
    shared: &Shared,
    states: &mut HashMap<i64, FireState>,
    id: i64,
    cron: &CronExpr,
    tz: &chrono_tz::Tz,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Decision {
    let state = match states.get(&id) {
        Some(s) => *s,
        None => {
            let s = match shared.mirror.fire_state(id) {
                Ok(Some(s)) => s,
                Ok(None) => FireState {
                    first_seen: now,
                    last_handled: None,
                },
                Err(e) => {
                    tracing::warn!(job_id = id, "fire state: {e:#}");
                    FireState {
                        first_seen: now,
                        last_handled: None,
                    }
                }
            };
            save(shared, id, &s);
            states.insert(id, s);
            s
        }
    };
    let decision = plan::decide(cron, tz, state.last_handled, state.first_seen, now, grace);
    if let Decision::Fire { scheduled } | Decision::SkipMissed { scheduled } = decision {
        let s = FireState {
            last_handled: Some(scheduled),
            ..state
        };
        save(shared, id, &s);
        states.insert(id, s);
    }
    decision
}

/// The scheduler's runs in flight: its slots (`scheduler.max_concurrent`)
/// and the jobs running now (never two runs of one job at once). Shared
/// with a standalone service's `dump now` (control socket).
#[derive(Debug)]
pub struct Runs {
    slots: Arc<Semaphore>,
    running: Arc<Mutex<HashSet<i64>>>,
}

impl Runs {
    pub fn new(max_concurrent: u32) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(usize::try_from(max_concurrent).unwrap_or(1))),
            running: Arc::default(),
        }
    }
}

/// Marks a job (or a standalone restore) running until dropped.
struct Running {
    running: Arc<Mutex<HashSet<i64>>>,
    job_id: i64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.job_id);
    }
}

/// One run of `job` now, beside the schedule (a standalone service's `dump
/// now`): refused while a run of the job is going, then in a scheduler
/// slot, recorded and followed by the job's retention like a scheduled run
/// (no copies: they follow scheduled dumps only). `Ok(None)`: cancelled
/// or not recorded.
pub async fn run_now(
    shared: &Arc<Shared>,
    job: &DumpJob,
    cancel: &CancellationToken,
) -> Result<Option<event::Body>, String> {
    let instance = shared
        .mirror
        .snapshot()
        .instances
        .get(&job.instance_id)
        .cloned()
        .ok_or_else(|| format!("job {}: its instance is not in the schedule", job.id))?;
    if !shared
        .runs
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job.id)
    {
        return Err("a run of this job is going: try again when it ends".into());
    }
    let _running = Running {
        running: Arc::clone(&shared.runs.running),
        job_id: job.id,
    };
    let _slot = tokio::select! {
        p = shared.runs.slots.acquire() => match p {
            Ok(p) => p,
            Err(_) => return Ok(None),
        },
        () = cancel.cancelled() => return Ok(None),
    };
    tracing::info!(job_id = job.id, "dump now starting");
    let body = dump_and_record(shared, job, &spec_of(job, instance, None), cancel).await;
    crate::retention::after_dump(shared, job.id).await;
    Ok(body)
}

/// `scheduler.missed_grace` as a chrono duration.
pub fn missed_grace(shared: &Shared) -> chrono::Duration {
    chrono::Duration::from_std(shared.config.scheduler.missed_grace)
        .unwrap_or(chrono::Duration::hours(1))
}

/// The scheduler's clock: now, or (tests) the sped-up clock from
/// `scheduler.clock_start`, never behind a fire already recorded.
pub fn clock(shared: &Shared) -> Clock {
    let cfg = &shared.config.scheduler;
    let recorded = shared.mirror.latest_handled().unwrap_or_else(|e| {
        tracing::warn!("cannot read fire states: {e:#}");
        None
    });
    let start = match cfg.clock_start {
        Some(t) if cfg.clock_speed > 1 => t,
        _ => Utc::now(),
    };
    Clock::new(start.max(recorded.unwrap_or_default()), cfg.clock_speed)
}

fn save(shared: &Shared, job_id: i64, state: &FireState) {
    if let Err(e) = shared.mirror.put_fire_state(job_id, state) {
        tracing::error!(job_id, "cannot record the fire state: {e:#}");
    }
}

/// Logs and queues a message of `class` for the catalog.
pub fn report(shared: &Shared, class: &str, level: MessageLevel, job_id: i64, text: String) {
    match level {
        MessageLevel::Error | MessageLevel::Critical => tracing::error!(job_id, "{text}"),
        MessageLevel::Warning => tracing::warn!(job_id, "{text}"),
        _ => tracing::info!(job_id, "{text}"),
    }
    let body = event::Body::Message(WorkerMessage {
        level: level as i32,
        class: class.into(),
        job_id,
        text,
    });
    if let Err(e) = shared.outbox.append(body) {
        tracing::error!("cannot queue a message in the outbox: {e:#}");
    }
}

/// The spec of a scheduled run; a SCRIPT job gets its script from the
/// mirrored schedule.
pub fn spec_of(
    job: &DumpJob,
    instance: InstanceConnection,
    script: Option<pgsnapman_proto::v1::ScriptSource>,
) -> DumpSpec {
    DumpSpec {
        job_id: job.id,
        instance: Some(instance),
        database: job.database.clone(),
        schema: job.schema.clone(),
        dump_type: job.dump_type,
        format: job.format,
        extra_options: job.extra_options.clone(),
        parallel_jobs: job.parallel_jobs,
        pause_replay: job.pause_replay,
        on_demand: job.on_demand,
        script,
    }
}

/// One scheduled run: waits for a slot, dumps, records the result in the
/// outbox. Cancelled (shutdown) runs record nothing.
async fn run_job(
    shared: Arc<Shared>,
    job: DumpJob,
    spec: DumpSpec,
    slots: Arc<Semaphore>,
    running: Arc<Mutex<HashSet<i64>>>,
) {
    let _running = Running {
        running,
        job_id: job.id,
    };
    let cancel = shared.tasks_token.child_token();
    let permit = tokio::select! {
        p = slots.acquire_owned() => p.ok(),
        () = cancel.cancelled() => None,
    };
    if permit.is_some() {
        tracing::info!("scheduled dump starting");
        let recorded = dump_and_record(&shared, &job, &spec, &cancel).await;
        crate::retention::after_dump(&shared, job.id).await;
        if let Some(event::Body::DumpFinished(f)) = &recorded
            && f.succeeded
        {
            // Detached: the job's slot and its next fire do not wait for them.
            crate::standalone::copies::after_dump(&shared, job.id, &f.dump_uuid);
        }
    }
}

/// Runs one dump of `job` and records its outcome in the outbox (a stored
/// dump is discarded again if that fails); the recorded body, or `None`
/// when it was cancelled or could not be recorded. Scheduled runs and a
/// standalone worker's `dump now` both come here.
pub async fn dump_and_record(
    shared: &Arc<Shared>,
    job: &DumpJob,
    spec: &DumpSpec,
    cancel: &CancellationToken,
) -> Option<event::Body> {
    let result = shared.runner.dump(None, spec, cancel, Arc::default()).await;
    let body = match result {
        DumpResult::Cancelled => None,
        DumpResult::Skipped(reason) => {
            tracing::info!("{reason}");
            Some(event::Body::Message(WorkerMessage {
                level: MessageLevel::Info as i32,
                class: "DUMP".into(),
                job_id: job.id,
                text: format!("job {}: {reason}", job.id),
            }))
        }
        DumpResult::Rejected(error) => Some(event::Body::Message(WorkerMessage {
            level: MessageLevel::Error as i32,
            class: "DUMP".into(),
            job_id: job.id,
            text: format!("job {}: scheduled dump not started: {error}", job.id),
        })),
        DumpResult::Finished(f) => {
            if f.succeeded {
                tracing::info!(dump_uuid = %f.dump_uuid, bytes = f.dump_bytes, "scheduled dump succeeded");
            } else {
                tracing::warn!(error = %f.error, "scheduled dump failed");
            }
            Some(event::Body::DumpFinished(*f))
        }
    }?;
    let stored_uuid = match &body {
        event::Body::DumpFinished(f) if f.succeeded => f.dump_uuid.clone(),
        _ => String::new(),
    };
    if let Err(e) = shared.outbox.append(body.clone()) {
        tracing::error!("cannot record the scheduled dump in the outbox: {e:#}");
        shared.runner.discard(&stored_uuid).await;
        return None;
    }
    if !stored_uuid.is_empty() {
        shared.runner.recorded(&stored_uuid);
        shared.store_changed.notify_one();
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sped_up_clock_runs_fast_from_its_base() {
        let base = Utc::now();
        let c = Clock::new(base, 30);
        std::thread::sleep(Duration::from_millis(100));
        let ahead = c.now() - base;
        assert!(ahead >= chrono::Duration::seconds(3), "{ahead}");
        assert!(c.tick() <= Duration::from_millis(500));
        assert_eq!(Clock::new(base, 1).tick(), Duration::from_secs(1));
    }
}
