//! Retention on the worker: applies each job's keep-daily/weekly/monthly/
//! yearly (the rule in `pgsnapman_proto::retention`) to that job's dumps in
//! this worker's own store, from the mirrored schedule, after every dump and
//! on a periodic pass, so it works while the coordinator is away. Deletions
//! go through the store (delete, then gc) and reach the catalog as
//! `DumpsDeleted` events. It never touches another worker's store.
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use chrono_tz::Tz;
use pgsnapman_proto::retention::{self, Candidate, Policy};
use pgsnapman_proto::v1::{DumpJob, DumpsDeleted, event};
use pgsnapman_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Shared;

/// The `reason` of retention's `DumpsDeleted` events.
pub const REASON: &str = "retention";

/// One job's stored dumps, as their manifests describe them.
#[derive(Debug, Clone)]
struct Stored {
    dump_uuid: Uuid,
    started_at: chrono::DateTime<chrono::Utc>,
}

/// What one run did to one job.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub kept: usize,
    pub removed: Vec<Uuid>,
    /// Dumps the rule removes that a restore or verification is reading:
    /// left for the next run.
    pub skipped_in_use: Vec<Uuid>,
}

/// Every stored dump, grouped by job. Dumps between their ingest and their
/// outbox event (`unrecorded`) are left out: the catalog does not know them
/// yet, so neither may a deletion.
fn stored_by_job(
    store: &Store,
    unrecorded: &HashSet<Uuid>,
) -> Result<BTreeMap<i64, Vec<Stored>>, StoreError> {
    let mut out: BTreeMap<i64, Vec<Stored>> = BTreeMap::new();
    for m in store.each_manifest()? {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("retention skips an unreadable manifest: {e}");
                continue;
            }
        };
        if unrecorded.contains(&m.dump_uuid) {
            continue;
        }
        out.entry(m.meta.job_id).or_default().push(Stored {
            dump_uuid: m.dump_uuid,
            started_at: m.meta.started_at,
        });
    }
    Ok(out)
}

/// The dumps of `job` the rule removes (protected ones never are).
fn doomed(job: &DumpJob, dumps: &[Stored], protected: &HashSet<String>, tz: &Tz) -> Vec<Uuid> {
    let Some(r) = job.retention.as_ref() else {
        // A schedule without retention keeps everything.
        return Vec::new();
    };
    let candidates: Vec<Candidate> = dumps
        .iter()
        .map(|d| {
            let uuid = d.dump_uuid.to_string();
            let pinned = protected.contains(&uuid);
            Candidate {
                dump_uuid: uuid,
                started_at: d.started_at,
                pinned,
                named_by_restore: false,
            }
        })
        .collect();
    retention::apply(Policy::from(r), tz, &candidates)
        .into_iter()
        .filter(|v| !v.keep())
        .map(|v| dumps[v.index].dump_uuid)
        .collect()
}

/// Applies retention to `jobs` (all mirrored jobs when `None`), one run at
/// a time per worker. Jobs no longer in the mirror are left as their last
/// run left them; HALTED jobs are judged like the others (halting stops new
/// dumps, not retention); a HALTED worker changes nothing.
pub async fn run(shared: &Arc<Shared>, jobs: Option<&[i64]>, trigger: &str) -> Result<()> {
    if !shared.config.retention.enabled {
        return Ok(());
    }
    let _one_at_a_time = shared.retention_lock.lock().await;
    let snapshot = shared.mirror.snapshot();
    if snapshot.worker_halted {
        // A halted worker changes nothing in its store until resumed.
        return Ok(());
    }
    let tz: Tz = retention::timezone(&shared.config.scheduler.timezone).map_err(|e| anyhow!(e))?;
    let protected: HashSet<String> = snapshot.protected.clone();
    let wanted: Vec<DumpJob> = snapshot
        .jobs
        .iter()
        .filter(|j| jobs.is_none_or(|ids| ids.contains(&j.id)))
        .cloned()
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let runner = &shared.runner;
    let store = runner.store().clone();
    let unrecorded: HashSet<Uuid> = runner
        .unrecorded_now()
        .context("list the dumps not yet recorded")?
        .into_iter()
        .collect();
    let in_use = runner.in_use().clone();
    let outbox = shared.outbox.clone();
    let repack_below = shared.config.store.repack_below_live_fraction;
    let outcomes = tokio::task::spawn_blocking(move || {
        let outcomes = judge_and_delete(
            &store,
            &outbox,
            &in_use,
            &wanted,
            &unrecorded,
            &protected,
            &tz,
        )?;
        if outcomes.iter().any(|(_, o)| !o.removed.is_empty()) {
            match store.gc(repack_below) {
                Ok(r) => tracing::info!(
                    reclaimed_bytes = r.reclaimed_bytes,
                    pack_bytes_before = r.pack_bytes_before,
                    pack_bytes_after = r.pack_bytes_after,
                    "retention garbage collected"
                ),
                // The next deletion (or DELETE task) collects it.
                Err(e) => tracing::warn!("gc after retention failed: {e}"),
            }
        }
        Ok::<_, anyhow::Error>(outcomes)
    })
    .await
    .context("retention thread failed")??;
    let mut changed = false;
    for (job_id, o) in outcomes {
        changed |= !o.removed.is_empty();
        tracing::info!(
            job_id,
            trigger,
            kept = o.kept,
            removed = o.removed.len(),
            skipped_in_use = o.skipped_in_use.len(),
            "retention applied"
        );
    }
    if changed {
        shared.store_changed.notify_one();
    }
    Ok(())
}

/// Judges every job of `jobs` against its dumps in `store` and deletes
/// what the rule removes, skipping dumps a reader holds (blocking).
fn judge_and_delete(
    store: &Store,
    outbox: &crate::outbox::Outbox,
    in_use: &crate::inuse::InUse,
    jobs: &[DumpJob],
    unrecorded: &HashSet<Uuid>,
    protected: &HashSet<String>,
    tz: &Tz,
) -> Result<Vec<(i64, Outcome)>> {
    let by_job = stored_by_job(store, unrecorded).context("list the stored dumps")?;
    let mut outcomes = Vec::new();
    for job in jobs {
        let dumps = by_job.get(&job.id).map_or(&[][..], Vec::as_slice);
        let doomed = doomed(job, dumps, protected, tz);
        let mut o = Outcome {
            kept: dumps.len() - doomed.len(),
            ..Outcome::default()
        };
        for uuid in doomed {
            match in_use.remove_unless_held(&uuid.to_string(), || remove(store, outbox, uuid)) {
                None => o.skipped_in_use.push(uuid),
                Some(Ok(())) => o.removed.push(uuid),
                Some(Err(e)) => {
                    tracing::warn!(job_id = job.id, dump_id = %uuid, "retention could not delete a dump: {e:#}");
                }
            }
        }
        outcomes.push((job.id, o));
    }
    Ok(outcomes)
}

/// Removes one dump: first the `DumpsDeleted` event, then the manifest.
/// Crash sequence: (1) event queued, (2) crash before the unlink: the dump
/// stays, the catalog row goes; the next run deletes it again and queues a
/// second event, which removes no row (applying is idempotent). The other
/// order could leave a catalog row for a dump that no longer exists.
fn remove(store: &Store, outbox: &crate::outbox::Outbox, uuid: Uuid) -> Result<()> {
    outbox
        .append(event::Body::DumpsDeleted(DumpsDeleted {
            dump_uuids: vec![uuid.to_string()],
            reason: REASON.to_string(),
        }))
        .context("queue the deletion")?;
    match store.delete_dump(uuid) {
        Ok(()) | Err(StoreError::ManifestNotFound(_)) => {
            tracing::info!(dump_id = %uuid, "retention deleted a dump");
            Ok(())
        }
        Err(e) => Err(anyhow!("delete dump {uuid}: {e}")),
    }
}

/// After a dump of `job_id` (successful or not).
pub async fn after_dump(shared: &Arc<Shared>, job_id: i64) {
    if let Err(e) = run(shared, Some(&[job_id]), "dump").await {
        tracing::warn!(job_id, "retention after a dump failed: {e:#}");
    }
}

/// Every job, at start and then every `retention.interval`, until `stop`.
pub async fn periodic(shared: Arc<Shared>, stop: CancellationToken) {
    if !shared.config.retention.enabled {
        tracing::warn!("retention.enabled is off: this worker deletes no dump by retention");
        return;
    }
    let mut tick = tokio::time::interval(shared.config.retention.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = run(&shared, None, "interval").await {
            tracing::warn!("periodic retention failed: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsnapman_proto::v1::Retention;

    fn stored(n: u128, day: u32) -> Stored {
        Stored {
            dump_uuid: Uuid::from_u128(n),
            started_at: chrono::DateTime::parse_from_rfc3339(&format!(
                "2024-01-{day:02}T02:00:00Z"
            ))
            .expect("time")
            .into(),
        }
    }

    fn job(keep: [u32; 4]) -> DumpJob {
        DumpJob {
            id: 1,
            retention: Some(Retention {
                keep_daily: keep[0],
                keep_weekly: keep[1],
                keep_monthly: keep[2],
                keep_yearly: keep[3],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn protected_dumps_and_the_newest_survive_keep_zero() {
        let dumps: Vec<Stored> = (1..=5).map(|d| stored(u128::from(d), d)).collect();
        let protected: HashSet<String> = [Uuid::from_u128(2).to_string()].into();
        let gone = doomed(&job([0, 0, 0, 0]), &dumps, &protected, &Tz::UTC);
        let want: Vec<Uuid> = [4, 3, 1].into_iter().map(Uuid::from_u128).collect();
        assert_eq!(gone, want);
    }

    /// A store with one dump of job 1 per day (Jan `days`), named by day.
    fn store_with(dir: &std::path::Path, days: &[u32]) -> Store {
        let store = Store::open(dir, pgsnapman_store::StoreOptions::default()).unwrap();
        for &day in days {
            let s = stored(u128::from(day), day);
            let mut ingest = store.begin(s.dump_uuid).unwrap();
            let data = format!("dump of day {day}").repeat(100);
            ingest.add_file("dump", data.as_bytes()).unwrap();
            ingest
                .finish(crate::runner::previous::test_meta(1, s.started_at))
                .unwrap();
        }
        store
    }

    #[test]
    fn a_dump_being_read_is_left_for_the_next_run_and_each_deletion_is_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(&dir.path().join("store"), &[1, 2, 3]);
        let state = crate::state::State::open(&dir.path().join("state")).unwrap();
        let outbox = crate::outbox::Outbox::open(&state).unwrap();
        let in_use = crate::inuse::InUse::default();
        let jobs = [job([0, 0, 0, 0])];
        let (none, unprotected) = (HashSet::new(), HashSet::new());
        let (day1, day2, day3) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let judge = |unrecorded: &HashSet<Uuid>| {
            judge_and_delete(
                &store,
                &outbox,
                &in_use,
                &jobs,
                unrecorded,
                &unprotected,
                &Tz::UTC,
            )
            .unwrap()
            .remove(0)
            .1
        };

        let reading = in_use.hold(&day1.to_string());
        let out = judge(&none);
        assert_eq!(out.removed, [day2]);
        assert_eq!(out.skipped_in_use, [day1]);
        let mut left = store.dump_ids().unwrap();
        left.sort();
        assert_eq!(left, [day1, day3]);
        assert_eq!(outbox.len(), 1, "one DumpsDeleted for the one deletion");

        // Read to the end: the next run removes it. A dump not yet recorded
        // is never judged.
        drop(reading);
        let unrecorded: HashSet<Uuid> = [day3].into();
        let out = judge(&unrecorded);
        assert!(out.removed.is_empty(), "day 1 is the newest recorded one");
        let out = judge(&none);
        assert_eq!(out.removed, [day1]);
        assert_eq!(store.dump_ids().unwrap(), [day3]);
        assert_eq!(outbox.len(), 2);
    }

    #[test]
    fn no_retention_in_the_schedule_keeps_everything() {
        let dumps: Vec<Stored> = (1..=3).map(|d| stored(u128::from(d), d)).collect();
        let j = DumpJob {
            id: 1,
            ..Default::default()
        };
        assert!(doomed(&j, &dumps, &HashSet::new(), &Tz::UTC).is_empty());
    }
}
