//! Every event a worker uploads must be about that worker: its tasks, its
//! dumps, its restore runs, its jobs, the instances it dumps or discovers.
//! Checked inside the batch's transaction before anything is applied; one
//! foreign or invalid event refuses the whole batch (nothing changes) and the
//! refusal names that event (`ApiError::EventRefused`), so that the worker
//! can set it aside and send the rest (docs/protocol.md, "Refused events").
use std::collections::HashSet;

use pgsnapman_proto::v1;
use pgsnapman_proto::v1::event::Body;

use super::Catalog;
use crate::error::{ApiError, ApiResult};

/// The ids a batch's fresh events refer to, each with the index of the event
/// that named it.
#[derive(Default)]
struct Refs {
    tasks: Vec<(i64, usize)>,
    dumps: Vec<(uuid::Uuid, usize)>,
    runs: Vec<(i64, usize)>,
    jobs: Vec<(i64, usize)>,
    instances: Vec<(i64, usize)>,
}

impl Refs {
    fn task(&mut self, t: Option<&v1::TaskRef>, at: usize) {
        if let Some(t) = t
            && t.task_id != 0
        {
            self.tasks.push((t.task_id, at));
        }
    }

    fn dumps(&mut self, uuids: &[String], at: usize) {
        self.dumps.extend(
            uuids
                .iter()
                .filter_map(|u| uuid::Uuid::parse_str(u).ok())
                .map(|u| (u, at)),
        );
    }
}

/// The ids of `refs`, for `= ANY($1)`.
fn ids_of<T: Copy>(refs: &[(T, usize)]) -> Vec<T> {
    refs.iter().map(|(id, _)| *id).collect()
}

/// The first event of the batch that named `id`.
fn first_naming<T: PartialEq>(refs: &[(T, usize)], id: &T) -> usize {
    refs.iter().find(|(r, _)| r == id).map_or(0, |(_, at)| *at)
}

/// Refuses enum values this coordinator does not know (0, unspecified, keeps
/// its documented default): a catalog row must not say FULL for a type it
/// could not read.
fn check_enums(body: &Body) -> ApiResult<()> {
    let bad = |what: &str, v: i32| {
        ApiError::Invalid(format!(
            "{what} {v} is not a value this coordinator knows (newer worker?)"
        ))
    };
    match body {
        Body::DumpFinished(d) => {
            if v1::DumpType::try_from(d.dump_type).is_err() {
                return Err(bad("dump type", d.dump_type));
            }
            if v1::DumpFormat::try_from(d.format).is_err() {
                return Err(bad("dump format", d.format));
            }
        }
        Body::RestoreFinished(f) if v1::RestoreStatus::try_from(f.status).is_err() => {
            return Err(bad("restore status", f.status));
        }
        Body::RestoreLog(l) if v1::MessageLevel::try_from(l.level).is_err() => {
            return Err(bad("message level", l.level));
        }
        Body::Message(m) if v1::MessageLevel::try_from(m.level).is_err() => {
            return Err(bad("message level", m.level));
        }
        _ => {}
    }
    Ok(())
}

impl Catalog {
    /// Checks that the fresh events of a batch are all about `worker_id`;
    /// the first one that is not is named in the error.
    pub(super) async fn check_ownership(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        events: &[v1::Event],
        ids: &[uuid::Uuid],
        fresh: &HashSet<uuid::Uuid>,
    ) -> ApiResult<()> {
        self.find_foreign(tx, worker_id, events, ids, fresh)
            .await
            .map_err(|(at, error)| match events.get(at) {
                Some(e) => ApiError::EventRefused {
                    event_id: e.event_id.clone(),
                    error: Box::new(error),
                },
                None => error,
            })
    }

    /// The index of the first event that is not about `worker_id`, and why.
    async fn find_foreign(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        events: &[v1::Event],
        ids: &[uuid::Uuid],
        fresh: &HashSet<uuid::Uuid>,
    ) -> Result<(), (usize, ApiError)> {
        let db = |e: sqlx::Error| (usize::MAX, ApiError::from(e));
        let mut r = Refs::default();
        for (at, (event, id)) in events.iter().zip(ids).enumerate() {
            if !fresh.contains(id) {
                continue;
            }
            let Some(body) = &event.body else { continue };
            check_enums(body).map_err(|e| (at, e))?;
            match body {
                Body::DumpFinished(d) => {
                    r.task(d.task.as_ref(), at);
                    r.dumps(std::slice::from_ref(&d.dump_uuid), at);
                    if d.job_id != 0 {
                        r.jobs.push((d.job_id, at));
                    }
                }
                Body::Message(m) if m.job_id != 0 => r.jobs.push((m.job_id, at)),
                Body::Message(_) | Body::StoreStats(_) => {}
                Body::TaskFailed(f) => r.task(f.task.as_ref(), at),
                Body::TaskFinished(f) => r.task(f.task.as_ref(), at),
                Body::DumpsDeleted(d) => r.dumps(&d.dump_uuids, at),
                Body::DumpsCompressed(c) => {
                    let uuids: Vec<String> = c.dumps.iter().map(|d| d.dump_uuid.clone()).collect();
                    r.dumps(&uuids, at);
                }
                Body::StoreVerified(v) => {
                    r.task(v.task.as_ref(), at);
                    r.dumps(&v.good_dump_uuids, at);
                    r.dumps(&v.bad_dump_uuids, at);
                }
                Body::DatabasesDiscovered(d) => r.instances.push((d.instance_id, at)),
                Body::RestoreLog(l) => r.runs.push((l.run_id, at)),
                Body::RestoreFinished(f) => {
                    r.task(f.task.as_ref(), at);
                    r.runs.push((f.run_id, at));
                }
                Body::DumpVerified(v) => {
                    r.task(v.task.as_ref(), at);
                    r.dumps(std::slice::from_ref(&v.dump_uuid), at);
                    if v.job_id != 0 {
                        r.jobs.push((v.job_id, at));
                    }
                }
            }
        }
        // Ids a worker was given are positive and exist (tasks and restore
        // runs are never deleted); anything else was made up.
        let named = r
            .tasks
            .iter()
            .map(|t| ("task", *t))
            .chain(r.runs.iter().map(|id| ("restore run", *id)))
            .chain(r.jobs.iter().map(|id| ("dump job", *id)))
            .chain(r.instances.iter().map(|id| ("instance", *id)));
        for (what, (id, at)) in named {
            if id <= 0 {
                return Err((
                    at,
                    ApiError::Invalid(format!(
                        "{what} id {id} is not valid; the batch was not applied"
                    )),
                ));
            }
        }
        let known_tasks: Vec<i64> = sqlx::query_scalar("SELECT id FROM tasks WHERE id = ANY($1)")
            .bind(ids_of(&r.tasks))
            .fetch_all(&mut **tx)
            .await
            .map_err(db)?;
        if let Some((t, at)) = r.tasks.iter().find(|(t, _)| !known_tasks.contains(t)) {
            return Err((
                *at,
                ApiError::Invalid(format!(
                    "task {t} does not exist; the batch was not applied"
                )),
            ));
        }
        let known_runs: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM restore_runs WHERE id = ANY($1)")
                .bind(ids_of(&r.runs))
                .fetch_all(&mut **tx)
                .await
                .map_err(db)?;
        if let Some((run, at)) = r.runs.iter().find(|(run, _)| !known_runs.contains(run)) {
            return Err((
                *at,
                ApiError::Invalid(format!(
                    "restore run {run} does not exist; the batch was not applied"
                )),
            ));
        }
        let forbidden = |at: usize, what: String| {
            (
                at,
                ApiError::Forbidden(format!(
                    "{what}: a worker reports only about its own work; the batch was not applied"
                )),
            )
        };
        if !r.tasks.is_empty()
            && let Some((task, owner)) = sqlx::query_as::<_, (i64, String)>(
                "SELECT t.id, w.name FROM tasks t JOIN workers w ON w.id = t.worker_id \
                 WHERE t.id = ANY($1) AND t.worker_id <> $2 LIMIT 1",
            )
            .bind(ids_of(&r.tasks))
            .bind(worker_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
        {
            return Err(forbidden(
                first_naming(&r.tasks, &task),
                format!("task {task} belongs to worker {owner}"),
            ));
        }
        if !r.dumps.is_empty()
            && let Some((dump, owner)) = sqlx::query_as::<_, (uuid::Uuid, String)>(
                "SELECT d.dump_uuid, w.name FROM dumps d JOIN workers w ON w.id = d.worker_id \
                 WHERE d.dump_uuid = ANY($1) AND d.worker_id <> $2 LIMIT 1",
            )
            .bind(ids_of(&r.dumps))
            .bind(worker_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
        {
            return Err(forbidden(
                first_naming(&r.dumps, &dump),
                format!("dump {dump} is stored by worker {owner}"),
            ));
        }
        if !r.runs.is_empty()
            && let Some(run) = sqlx::query_scalar::<_, i64>(
                "SELECT id FROM restore_runs WHERE id = ANY($1) \
                 AND worker_id IS DISTINCT FROM $2 LIMIT 1",
            )
            .bind(ids_of(&r.runs))
            .bind(worker_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
        {
            return Err(forbidden(
                first_naming(&r.runs, &run),
                format!("restore run {run} is not run by this worker"),
            ));
        }
        // A job moved to another worker stays this worker's for the events
        // it made before the move (`dump_job_workers`, kept by a trigger):
        // a late upload is not foreign and must not wedge its outbox.
        if !r.jobs.is_empty()
            && let Some(job) = sqlx::query_scalar::<_, i64>(
                "SELECT j.id FROM dump_jobs j WHERE j.id = ANY($1) AND j.worker_id <> $2 \
                 AND NOT EXISTS (SELECT 1 FROM dump_job_workers h WHERE h.job_id = j.id AND h.worker_id = $2) \
                 LIMIT 1",
            )
            .bind(ids_of(&r.jobs))
            .bind(worker_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
        {
            return Err(forbidden(
                first_naming(&r.jobs, &job),
                format!("dump job {job} belongs to another worker"),
            ));
        }
        // Discovery reports from a worker that was ever the default worker
        // (`instance_workers`, kept by a trigger) may arrive late (ignored
        // as stale in `discovery.rs`); a worker with no tie to the instance
        // at all is refused.
        if !r.instances.is_empty()
            && let Some(instance) = sqlx::query_scalar::<_, i64>(
                "SELECT i.id FROM instances i WHERE i.id = ANY($1) \
                 AND i.default_worker_id IS DISTINCT FROM $2 \
                 AND NOT EXISTS (SELECT 1 FROM instance_workers h WHERE h.instance_id = i.id AND h.worker_id = $2) \
                 AND NOT EXISTS (SELECT 1 FROM dump_jobs j WHERE j.instance_id = i.id AND j.worker_id = $2) \
                 LIMIT 1",
            )
            .bind(ids_of(&r.instances))
            .bind(worker_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db)?
        {
            return Err(forbidden(
                first_naming(&r.instances, &instance),
                format!("instance {instance} is not discovered or dumped by this worker"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_are_refused_and_unspecified_ones_kept() {
        let d = |t: i32| {
            Body::DumpFinished(v1::DumpFinished {
                dump_type: t,
                ..Default::default()
            })
        };
        assert!(check_enums(&d(0)).is_ok());
        assert!(check_enums(&d(v1::DumpType::Full as i32)).is_ok());
        let e = check_enums(&d(999)).unwrap_err().to_string();
        assert!(e.contains("dump type 999"), "{e}");
        let m = Body::Message(v1::WorkerMessage {
            level: -3,
            ..Default::default()
        });
        assert!(check_enums(&m).is_err());
    }
}
