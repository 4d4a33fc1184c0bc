//! The ad-hoc task queue: leased with a TTL through `FOR UPDATE SKIP LOCKED`,
//! so any number of coordinators can share it; completion needs the current
//! lease id, so a task completes exactly once.
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgsnapman_proto::v1;

use super::Catalog;
use crate::error::{ApiError, ApiResult};
use crate::rows::{self, TASK_COLUMNS, TaskRow};

/// A task just leased to a worker, with what it needs to run.
pub struct Claimed {
    pub task: TaskRow,
    pub spec: v1::task_assignment::Spec,
}

impl Catalog {
    /// Queues the one run of every active SINGLE job whose time has come
    /// (its cron's first fire after it was created). A unique index allows
    /// one SINGLE task per job, ever. Returns the new task ids.
    pub async fn queue_due_single_jobs(&self, now: DateTime<Utc>) -> ApiResult<Vec<i64>> {
        let due: Vec<(i64, i64, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT j.id, j.worker_id, j.cron, j.created_at FROM dump_jobs j \
             JOIN workers w ON w.id = j.worker_id AND w.status = 'ACTIVE' \
             JOIN instances i ON i.id = j.instance_id AND i.status = 'ACTIVE' \
             WHERE j.kind = 'SINGLE' AND j.status = 'ACTIVE' \
             AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id AND t.origin = 'SINGLE')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut queued = Vec::new();
        for (job, worker, cron, created) in due {
            let Ok(expr) = pgsnapman_proto::model::CronExpr::parse(&cron) else {
                continue;
            };
            if expr.next_after(&created).is_none_or(|at| at > now) {
                continue;
            }
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO tasks (kind, worker_id, job_id, max_attempts, origin) \
                 VALUES ('DUMP', $1, $2, $3, 'SINGLE') ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(worker)
            .bind(job)
            .bind(self.max_attempts)
            .fetch_optional(&self.pool)
            .await?;
            queued.extend(id);
        }
        Ok(queued)
    }

    /// Queues a dump of the job on its worker. Refused while the job, its
    /// instance or its worker is halted.
    pub async fn dump_now(&self, job_id: i64) -> ApiResult<TaskRow> {
        let job = self.job(job_id).await?;
        let instance = self.instance(job.instance_id).await?;
        let worker = self.worker_by_id(job.worker_id).await?;
        if job.status == "HALTED" {
            return Err(ApiError::Precondition(format!(
                "dump job {job_id} is halted"
            )));
        }
        if instance.status == "HALTED" {
            return Err(ApiError::Precondition(format!(
                "instance {} ({}) of dump job {job_id} is halted",
                instance.id, instance.name
            )));
        }
        if worker.status == "HALTED" {
            return Err(ApiError::Precondition(format!(
                "worker {} of dump job {job_id} is halted",
                worker.name
            )));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tasks (kind, worker_id, job_id, max_attempts) VALUES ('DUMP', $1, $2, $3) RETURNING id",
        )
        .bind(job.worker_id)
        .bind(job_id)
        .bind(self.max_attempts)
        .fetch_one(&self.pool)
        .await?;
        self.task(id).await
    }

    pub async fn task(&self, id: i64) -> ApiResult<TaskRow> {
        sqlx::query_as::<_, TaskRow>(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t WHERE t.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))
    }

    pub async fn list_tasks(&self, req: &v1::ListTasksRequest) -> ApiResult<Vec<TaskRow>> {
        let worker = self.worker_ref(req.worker.as_ref()).await?;
        let mut q =
            sqlx::QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks t WHERE true"));
        if req.state != 0 {
            q.push(" AND t.state = ")
                .push_bind(rows::task_state_label(req.state)?);
        }
        if let Some(w) = worker {
            q.push(" AND t.worker_id = ").push_bind(w.id);
        }
        if let Some(j) = req.job_id {
            q.push(" AND t.job_id = ").push_bind(j);
        }
        q.push(" ORDER BY t.id DESC LIMIT ")
            .push_bind(super::limit(req.limit));
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }

    /// Leases up to `n` queued tasks of an active worker, oldest first; dump
    /// tasks only while their job and instance are active.
    pub async fn claim(&self, worker_id: i64, n: u32, ttl: Duration) -> ApiResult<Vec<Claimed>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let tasks: Vec<TaskRow> = sqlx::query_as(&format!(
            "WITH c AS ( \
                 SELECT t.id FROM tasks t \
                 JOIN workers w ON w.id = t.worker_id AND w.status = 'ACTIVE' \
                     AND w.revoked_at IS NULL \
                 LEFT JOIN dump_jobs j ON j.id = t.job_id \
                 LEFT JOIN instances i ON i.id = j.instance_id \
                 WHERE t.worker_id = $1 AND t.state = 'QUEUED' \
                 AND t.kind IN ('DUMP', 'VERIFY', 'DELETE', 'REBUILD', 'RESTORE', 'VERIFY_DUMP') \
                 AND (t.kind <> 'DUMP' OR (j.status = 'ACTIVE' AND i.status = 'ACTIVE')) \
                 AND (t.kind <> 'RESTORE' OR EXISTS (SELECT 1 FROM restore_runs u \
                      JOIN instances ti ON ti.id = u.target_instance_id \
                      WHERE u.id = t.restore_run_id AND ti.status = 'ACTIVE')) \
                 ORDER BY t.id LIMIT $2 FOR UPDATE OF t SKIP LOCKED) \
             UPDATE tasks t SET state = 'LEASED', lease_id = gen_random_uuid(), \
                 leased_until = now() + $3, attempts = t.attempts + 1, \
                 started_at = COALESCE(t.started_at, now()) \
             FROM c WHERE t.id = c.id RETURNING {TASK_COLUMNS}"
        ))
        .bind(worker_id)
        .bind(i64::from(n))
        .bind(ttl)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let now = chrono::Utc::now();
        for t in tasks.iter().filter(|t| t.attempts == 1) {
            crate::metrics::get().leased(&t.kind, t.created_at, now);
        }
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            match self.spec_of(&task).await {
                Ok(spec) => out.push(Claimed { task, spec }),
                Err(ApiError::Internal(e)) => {
                    // A catalog fault, maybe passing: queue it again. Each
                    // try uses an attempt, so a lasting fault ends in FAILED
                    // after `lease.max_attempts`; if this update fails too,
                    // the lease expires and the reaper does the same.
                    tracing::warn!(task_id = task.id, "task cannot be specified now: {e:#}");
                    self.requeue_unsent(task.id, &format!("{e:#}")).await?;
                }
                Err(e) => {
                    // Its job or dump vanished since it was queued: it can
                    // never run.
                    tracing::warn!(task_id = task.id, "task cannot be specified: {e}");
                    sqlx::query(
                        "UPDATE tasks SET state = 'FAILED', finished_at = now(), leased_until = NULL, \
                         error = $2 WHERE id = $1",
                    )
                    .bind(task.id)
                    .bind(e.to_string())
                    .execute(&self.pool)
                    .await?;
                    self.fail_runs_of_tasks(&self.pool, &[task.id], "").await?;
                }
            }
        }
        Ok(out)
    }

    /// Returns a claimed task that could not be handed out to the queue
    /// (the attempt counts), or fails it when its attempts are used up.
    async fn requeue_unsent(&self, task_id: i64, error: &str) -> ApiResult<()> {
        let mut tx = self.pool.begin().await?;
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE tasks SET \
                 state = CASE WHEN attempts >= max_attempts THEN 'FAILED' ELSE 'QUEUED' END, \
                 finished_at = CASE WHEN attempts >= max_attempts THEN now() END, \
                 error = CASE WHEN attempts >= max_attempts \
                     THEN format('could not be handed out %s times; last: %s', attempts, $2::text) \
                     ELSE error END, \
                 lease_id = NULL, leased_until = NULL \
             WHERE id = $1 AND state = 'LEASED' RETURNING state",
        )
        .bind(task_id)
        .bind(error)
        .fetch_optional(&mut *tx)
        .await?;
        if state.as_deref() == Some("FAILED") {
            self.fail_runs_of_tasks(&mut *tx, &[task_id], "").await?;
        } else if state.is_some() {
            sqlx::query(
                "UPDATE restore_runs SET status = 'QUEUED' WHERE task_id = $1 AND status = 'RUNNING'",
            )
            .bind(task_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What the worker needs to run a leased task.
    async fn spec_of(&self, task: &TaskRow) -> ApiResult<v1::task_assignment::Spec> {
        use v1::task_assignment::Spec;
        match task.kind.as_str() {
            "DUMP" => {
                let job_id = task.job_id.ok_or_else(|| {
                    ApiError::Invalid(format!("dump task {} has no job", task.id))
                })?;
                let job = self.job(job_id).await?;
                let instance = self.instance(job.instance_id).await?;
                let connection = self.connection_for(&instance, task.worker_id).await?;
                let mut spec = job.spec(connection);
                if let Some(name) = &job.script_name {
                    spec.script = Some(self.script_source(name).await?);
                }
                Ok(Spec::Dump(spec))
            }
            "RESTORE" => Ok(Spec::Restore(self.restore_spec(task).await?)),
            "VERIFY" => Ok(Spec::Verify(v1::VerifySpec {})),
            "REBUILD" => Ok(Spec::Rebuild(v1::RebuildSpec {})),
            "VERIFY_DUMP" => Ok(Spec::VerifyDump(self.verify_dump_spec(task).await?)),
            "DELETE" => {
                let dump_id = task.dump_id.ok_or_else(|| {
                    ApiError::Invalid(format!("delete task {} names no dump", task.id))
                })?;
                let dump = self.dump(dump_id).await?;
                if dump.worker_id != task.worker_id {
                    return Err(ApiError::Forbidden(format!(
                        "delete task {}: dump {dump_id} is in worker {}'s store, not this worker's",
                        task.id, dump.worker_name
                    )));
                }
                Ok(Spec::Delete(v1::DeleteSpec {
                    dump_uuid: dump.dump_uuid.to_string(),
                }))
            }
            other => Err(ApiError::Invalid(format!(
                "task {} has kind {other}, which this coordinator cannot hand out",
                task.id
            ))),
        }
    }

    /// Cancels a queued or leased task for `who` (the caller, for the
    /// record). A restore run of the task ends ABORTED, which also hands its
    /// dump back to retention. A leased task's worker is woken (on every
    /// coordinator, through the catalog's NOTIFY) so that the stream holding
    /// the lease tells it to stop; its renewal is refused in any case, since
    /// only a LEASED task renews. Returns the task as it now is.
    pub async fn cancel_task(&self, id: i64, who: &str) -> ApiResult<TaskRow> {
        let mut tx = self.pool.begin().await?;
        let state: Option<(String, i64)> =
            sqlx::query_as("SELECT state, worker_id FROM tasks WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((state, worker_id)) = state else {
            return Err(ApiError::NotFound(format!("task {id} not found")));
        };
        if !matches!(state.as_str(), "QUEUED" | "LEASED") {
            return Err(ApiError::Precondition(format!(
                "task {id} has already ended ({state}): only a queued or running task can be cancelled"
            )));
        }
        let error = if who.is_empty() {
            "cancelled".to_string()
        } else {
            format!("cancelled by {who}")
        };
        sqlx::query(
            "UPDATE tasks SET state = 'CANCELLED', finished_at = now(), error = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(&error)
        .execute(&mut *tx)
        .await?;
        let aborted: Vec<i64> = sqlx::query_scalar(
            "UPDATE restore_runs SET status = 'ABORTED', finished_at = now(), error = $2 \
             WHERE task_id = $1 AND status IN ('QUEUED', 'RUNNING') RETURNING dump_id",
        )
        .bind(id)
        .bind(&error)
        .fetch_all(&mut *tx)
        .await?;
        for dump in aborted {
            // A queued or running restore protected its dump.
            self.bump_holder_of(&mut *tx, dump).await?;
        }
        if state == "LEASED" {
            sqlx::query("SELECT pg_notify($1, 'c' || $2::bigint)")
                .bind(crate::wake::WAKE_CHANNEL)
                .bind(worker_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.task(id).await
    }

    /// Of the leases a stream handed out, those whose task was cancelled
    /// (to tell the worker) and those no longer current (to forget).
    pub async fn lease_states(
        &self,
        leases: &[(i64, uuid::Uuid)],
    ) -> ApiResult<Vec<(i64, uuid::Uuid, String)>> {
        let ids: Vec<i64> = leases.iter().map(|(t, _)| *t).collect();
        let rows: Vec<(i64, Option<uuid::Uuid>, String)> =
            sqlx::query_as("SELECT id, lease_id, state FROM tasks WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, lease, state)| Some((id, lease?, state)))
            .collect())
    }

    /// Gives back a lease that never reached the worker (the attempt is not
    /// counted).
    pub async fn release(&self, task_id: i64, lease_id: uuid::Uuid) -> ApiResult<()> {
        sqlx::query(
            "UPDATE tasks SET state = 'QUEUED', lease_id = NULL, leased_until = NULL, \
             attempts = GREATEST(attempts - 1, 0) WHERE id = $1 AND lease_id = $2 AND state = 'LEASED'",
        )
        .bind(task_id)
        .bind(lease_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Extends a lease of `worker_id`'s task; `None` if it is no longer the
    /// task's current lease (or not that worker's task).
    pub async fn renew(
        &self,
        worker_id: i64,
        task_id: i64,
        lease_id: uuid::Uuid,
        ttl: Duration,
    ) -> ApiResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "UPDATE tasks SET leased_until = now() + $3 \
             WHERE id = $1 AND lease_id = $2 AND state = 'LEASED' AND worker_id = $4 RETURNING leased_until",
        )
        .bind(task_id)
        .bind(lease_id)
        .bind(ttl)
        .bind(worker_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records progress of `worker_id`'s leased task (nothing for another's).
    pub async fn progress(
        &self,
        worker_id: i64,
        task_id: i64,
        lease_id: uuid::Uuid,
        p: &v1::Progress,
    ) -> ApiResult<()> {
        sqlx::query(
            "UPDATE tasks SET progress_phase = $3, progress_done = $4, progress_total = $5 \
             WHERE id = $1 AND lease_id = $2 AND state = 'LEASED' AND worker_id = $6",
        )
        .bind(task_id)
        .bind(lease_id)
        .bind(&p.phase)
        .bind(i64::try_from(p.bytes_done).unwrap_or(i64::MAX))
        .bind(i64::try_from(p.bytes_total).unwrap_or(i64::MAX))
        .bind(worker_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Returns expired leases to the queue, or fails tasks whose attempts
    /// are used up. Returns how many leases expired.
    pub async fn reap(&self) -> ApiResult<u64> {
        let mut tx = self.pool.begin().await?;
        let expired: Vec<(i64, i64, Option<i64>, String)> = sqlx::query_as(
            "UPDATE tasks SET \
                 state = CASE WHEN attempts >= max_attempts THEN 'FAILED' ELSE 'QUEUED' END, \
                 finished_at = CASE WHEN attempts >= max_attempts THEN now() END, \
                 error = CASE WHEN attempts >= max_attempts \
                     THEN format('lease expired %s times: the worker stopped renewing it', attempts) \
                     ELSE error END, \
                 leased_until = NULL \
             WHERE id IN (SELECT id FROM tasks WHERE state = 'LEASED' AND leased_until < now() \
                          FOR UPDATE SKIP LOCKED) \
             RETURNING id, worker_id, job_id, state",
        )
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<i64> = expired.iter().map(|e| e.0).collect();
        self.fail_runs_of_tasks(&mut *tx, &ids, "").await?;
        // A restore whose lease expired is queued again: so is its run.
        sqlx::query(
            "UPDATE restore_runs u SET status = 'QUEUED' FROM tasks t \
             WHERE t.id = u.task_id AND t.id = ANY($1) AND t.state = 'QUEUED' AND u.status = 'RUNNING'",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        for (id, worker, job, state) in &expired {
            let (level, text) = if state == "FAILED" {
                (
                    v1::MessageLevel::Error,
                    format!("task {id} failed: its lease expired and no attempts are left"),
                )
            } else {
                (
                    v1::MessageLevel::Warning,
                    format!("task {id}: lease expired (worker silent); queued again"),
                )
            };
            self.add_message(&mut *tx, level, "TASK", Some(*worker), *job, &text)
                .await?;
        }
        // Sessions of coordinators that died without closing them.
        sqlx::query("DELETE FROM worker_sessions WHERE stale_after < now() - interval '1 hour'")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(expired.len() as u64)
    }
}
