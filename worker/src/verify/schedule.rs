//! Scheduled verification: fires each ACTIVE job's `verify_cron` from the
//! mirrored schedule (offline too) and verifies the job's newest stored dump
//! unless it was verified OK here since it was made. Never two of one job at
//! once; at most `verify.max_concurrent` at once. The result goes through the
//! outbox as a `DumpVerified` with the job's id and no task.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use pgsnapman_proto::model::CronExpr;
use pgsnapman_proto::v1::{
    DumpFormat, DumpJob, DumpType, InstanceConnection, MessageLevel, Status, VerifyDumpSpec, event,
};
use pgsnapman_store::Manifest;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Origin, record, scratch};
use crate::Shared;
use crate::mirror::FireState;
use crate::progress::TaskProgress;
use crate::scheduler::plan::{self, Decision};

/// Job ids with a verification running.
type Running = Arc<Mutex<HashSet<i64>>>;

/// Runs until `stop` fires.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let Ok(tz) = shared.config.scheduler.timezone.parse::<chrono_tz::Tz>() else {
        // The dump scheduler reports it.
        return;
    };
    let grace = crate::scheduler::missed_grace(&shared);
    let clock = crate::scheduler::clock(&shared);
    let cfg = &shared.config.verify;
    let slots = Arc::new(Semaphore::new(
        usize::try_from(cfg.max_concurrent).unwrap_or(1),
    ));
    let running: Running = Arc::default();
    let mut states: HashMap<i64, FireState> = HashMap::new();
    let mut bad_cron: HashSet<(i64, String)> = HashSet::new();
    shared.tasks.spawn(sweep_at_start(Arc::clone(&shared)));
    let mut tick = tokio::time::interval(clock.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
        for job in snap.jobs.iter().filter(|j| !j.verify_cron.is_empty()) {
            if job.status() != Status::Active {
                continue;
            }
            let cron = match CronExpr::parse(&job.verify_cron) {
                Ok(c) => c,
                Err(e) => {
                    if bad_cron.insert((job.id, job.verify_cron.clone())) {
                        message(
                            &shared,
                            MessageLevel::Error,
                            job.id,
                            format!("job {}: verify cron: {e}", job.id),
                        );
                    }
                    continue;
                }
            };
            let state = *states.entry(job.id).or_insert_with(|| {
                let s = record::fire_state(&shared.mirror, job.id)
                    .unwrap_or_else(|e| {
                        tracing::warn!(job_id = job.id, "verification fire state: {e:#}");
                        None
                    })
                    .unwrap_or(FireState {
                        first_seen: now,
                        last_handled: None,
                    });
                save(&shared, job.id, &s);
                s
            });
            let (scheduled, fired) = match plan::decide(
                &cron,
                &tz,
                state.last_handled,
                state.first_seen,
                now,
                grace,
            ) {
                Decision::Fire { scheduled } => (scheduled, true),
                Decision::SkipMissed { scheduled } => {
                    message(
                        &shared,
                        MessageLevel::Warning,
                        job.id,
                        format!(
                            "job {}: the verification due at {scheduled} was missed while the worker was down \
                         and is older than scheduler.missed_grace; skipped",
                            job.id
                        ),
                    );
                    (scheduled, false)
                }
                Decision::Wait { .. } | Decision::Never => continue,
            };
            let s = FireState {
                last_handled: Some(scheduled),
                ..state
            };
            save(&shared, job.id, &s);
            states.insert(job.id, s);
            if !fired {
                continue;
            }
            if !running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.id)
            {
                message(
                    &shared,
                    MessageLevel::Warning,
                    job.id,
                    format!(
                        "job {}: the verification due at {scheduled} was skipped: the previous one is still going",
                        job.id
                    ),
                );
                continue;
            }
            let instance = snap
                .instances
                .get(&if job.verify_instance_id != 0 {
                    job.verify_instance_id
                } else {
                    job.instance_id
                })
                .cloned();
            let span = tracing::info_span!("verify.scheduled", job_id = job.id, %scheduled);
            shared.tasks.spawn(
                verify_job(
                    Arc::clone(&shared),
                    job.clone(),
                    instance,
                    Arc::clone(&slots),
                    Arc::clone(&running),
                )
                .instrument(span),
            );
        }
    }
}

fn save(shared: &Shared, job_id: i64, state: &FireState) {
    if let Err(e) = record::put_fire_state(&shared.mirror, job_id, state) {
        tracing::error!(job_id, "cannot record the verification's fire state: {e:#}");
    }
}

/// Logs and queues a message (class VERIFY) for the catalog.
fn message(shared: &Shared, level: MessageLevel, job_id: i64, text: String) {
    crate::scheduler::report(shared, "VERIFY", level, job_id, text);
}

/// The method of a job's verification ("read" when unset).
fn method_of(job: &DumpJob) -> &str {
    if job.verify_method.is_empty() {
        "read"
    } else {
        &job.verify_method
    }
}

/// The newest stored dump of `job_id` that the catalog will know (its
/// DumpFinished is in the outbox), by start time (blocking).
fn newest_dump(shared: &Shared, job_id: i64) -> Result<Option<Manifest>> {
    let unrecorded: HashSet<_> = shared.runner.unrecorded_now()?.into_iter().collect();
    let mut newest: Option<Manifest> = None;
    for m in shared
        .runner
        .store()
        .each_manifest()
        .context("list the stored dumps")?
    {
        let Ok(m) = m else { continue };
        if m.meta.job_id != job_id || unrecorded.contains(&m.dump_uuid) {
            continue;
        }
        if newest
            .as_ref()
            .is_none_or(|n| m.meta.started_at > n.meta.started_at)
        {
            newest = Some(m);
        }
    }
    Ok(newest)
}

/// The spec a VERIFY_DUMP task would carry, from the dump's manifest (the
/// expected counts too: no catalog needed).
fn spec_of(job: &DumpJob, m: &Manifest, instance: Option<InstanceConnection>) -> VerifyDumpSpec {
    let method = method_of(job).to_string();
    let restore = method == "restore";
    VerifyDumpSpec {
        dump_uuid: m.dump_uuid.to_string(),
        dump_type: DumpType::from_label(&m.meta.dump_type).unwrap_or(DumpType::Unspecified) as i32,
        format: DumpFormat::from_label(&m.meta.format).unwrap_or(DumpFormat::Unspecified) as i32,
        instance: instance.filter(|_| restore),
        expected_rows: crate::rowcount::of_manifest(&m.meta),
        rows_counted: m.meta.table_rows.is_some(),
        checks: if restore {
            job.verify_checks.clone()
        } else {
            Vec::new()
        },
        method,
    }
}

/// One scheduled verification of `job`: waits for a slot, picks the dump,
/// verifies it, queues the result. Cancelled (shutdown) runs report nothing.
async fn verify_job(
    shared: Arc<Shared>,
    job: DumpJob,
    instance: Option<InstanceConnection>,
    slots: Arc<Semaphore>,
    running: Running,
) {
    let cancel = shared.tasks_token.child_token();
    let permit = tokio::select! {
        p = slots.acquire_owned() => p.ok(),
        () = cancel.cancelled() => None,
    };
    if permit.is_some() {
        verify_newest(&shared, &job, instance, &cancel).await;
    }
    running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&job.id);
}

async fn verify_newest(
    shared: &Arc<Shared>,
    job: &DumpJob,
    instance: Option<InstanceConnection>,
    cancel: &CancellationToken,
) {
    let method = method_of(job).to_string();
    if method == "restore" {
        match &instance {
            None => {
                let id = if job.verify_instance_id != 0 {
                    job.verify_instance_id
                } else {
                    job.instance_id
                };
                message(
                    shared,
                    MessageLevel::Error,
                    job.id,
                    format!(
                        "job {}: scheduled verification not started: instance {id} is not in this worker's schedule",
                        job.id
                    ),
                );
                return;
            }
            Some(i) if i.status() != Status::Active => {
                tracing::info!(instance = %i.name, "verification instance halted; nothing verified");
                return;
            }
            Some(_) => {}
        }
    }
    let found = {
        let shared = Arc::clone(shared);
        let job_id = job.id;
        tokio::task::spawn_blocking(move || newest_dump(&shared, job_id)).await
    };
    let m = match found {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => {
            tracing::info!("no stored dump of the job to verify");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!("cannot find the dump to verify: {e:#}");
            return;
        }
        Err(e) => {
            tracing::warn!("cannot find the dump to verify: {e}");
            return;
        }
    };
    let uuid = m.dump_uuid.to_string();
    match record::verified(&shared.mirror, job.id) {
        Ok(list) if record::covers(&list, &uuid, &method) => {
            tracing::info!(dump_uuid = %uuid, "the newest dump was already verified; nothing to do");
            return;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read which dumps were verified; verifying: {e:#}"),
    }
    tracing::info!(dump_uuid = %uuid, method = %method, "scheduled verification starting");
    let spec = spec_of(job, &m, instance);
    let progress = TaskProgress::default();
    let Some(v) = super::run(
        &shared.runner,
        &Origin::Job(job.id),
        &spec,
        cancel,
        &progress,
    )
    .await
    else {
        return;
    };
    if v.ok
        && let Err(e) = record::note_ok(&shared.mirror, job.id, &uuid, &method)
    {
        tracing::warn!("cannot remember the verification: {e:#}");
    }
    if let Err(e) = shared.outbox.append(event::Body::DumpVerified(v)) {
        tracing::error!("cannot queue the verification's result in the outbox: {e:#}");
    }
}

/// At start: drops the scratch databases a killed verification of this
/// worker left on the instances its jobs verify on by restoring.
async fn sweep_at_start(shared: Arc<Shared>) {
    let snap = shared.mirror.snapshot();
    let ids: HashSet<i64> = snap
        .jobs
        .iter()
        .filter(|j| !j.verify_cron.is_empty() && method_of(j) == "restore")
        .map(|j| {
            if j.verify_instance_id != 0 {
                j.verify_instance_id
            } else {
                j.instance_id
            }
        })
        .collect();
    let cancel = shared.tasks_token.child_token();
    for id in ids {
        let Some(instance) = snap.instances.get(&id) else {
            continue;
        };
        let swept = async {
            let session = shared.runner.session(instance, "pgsnapman-verify-sweep")?;
            let target = crate::restore::target::Target::new(session);
            let admin = super::maintenance_db(instance);
            scratch::sweep(
                &target,
                &admin,
                shared.runner.worker_name(),
                &instance.name,
                &cancel,
            )
            .await
        };
        if let Err(e) = swept.await {
            tracing::warn!(instance = %instance.name, "cannot look for leftover scratch databases: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_comes_from_the_manifest() {
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "format_version": 1,
            "dump_uuid": "0190a0b0-0000-7000-8000-000000000001",
            "job_id": 4, "task_id": 0, "host": "h", "port": 5432, "database": "app",
            "schema": "", "dump_type": "FULL", "format": "CUSTOM",
            "server_version": "15", "client_version": "15",
            "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z",
            "restore_metadata": null,
            "table_rows": [{"schema": "public", "table": "t", "rows": 3}],
            "logical_bytes": 1, "new_stored_bytes": 1, "files": []
        }))
        .unwrap();
        let job = DumpJob {
            id: 4,
            verify_cron: "0 3 * * *".into(),
            verify_method: "restore".into(),
            verify_checks: vec!["SELECT true".into()],
            ..Default::default()
        };
        let inst = InstanceConnection {
            instance_id: 9,
            ..Default::default()
        };
        let s = spec_of(&job, &m, Some(inst.clone()));
        assert_eq!(s.method, "restore");
        assert_eq!(s.format, DumpFormat::Custom as i32);
        assert_eq!(s.dump_type, DumpType::Full as i32);
        assert_eq!(s.expected_rows.len(), 1);
        assert_eq!(s.expected_rows[0].rows, 3);
        assert!(s.rows_counted);
        assert_eq!(s.checks, ["SELECT true"]);
        assert_eq!(s.instance.map(|i| i.instance_id), Some(9));
        // read: no instance, no checks.
        let read = DumpJob {
            verify_method: String::new(),
            ..job
        };
        let s = spec_of(&read, &m, Some(inst));
        assert_eq!(s.method, "read");
        assert!(s.instance.is_none() && s.checks.is_empty());
    }
}
