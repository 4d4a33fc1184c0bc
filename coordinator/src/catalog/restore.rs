//! Restore jobs and restore runs: checking targets, queuing a run (with its
//! RESTORE task, on the worker that holds the dump), firing SINGLE and
//! REPEAT jobs, triggering copies after dumps, and applying what workers
//! report about runs. Copy jobs and server restores are in `copy.rs`.
use chrono::{DateTime, Utc};
use pgsnapman_proto::model::{CronExpr, validate_restore_target};
use pgsnapman_proto::v1;

use super::Catalog;
use crate::error::{ApiError, ApiResult};
use crate::rows::{
    self, DUMP_COLUMNS, DumpRow, RESTORE_JOB_COLUMNS, RESTORE_RUN_COLUMNS, RestoreJobRow,
    RestoreLogRow, RestoreRunRow, TaskRow,
};

/// Most missed REPEAT fire times walked through to find the latest one.
const MAX_MISSED_FIRES: usize = 100_000;

pub(super) fn job_query(filter: &str) -> String {
    format!(
        "SELECT {RESTORE_JOB_COLUMNS} FROM restore_jobs r \
         JOIN instances i ON i.id = r.target_instance_id {filter}"
    )
}

impl Catalog {
    /// Checks a restore target and fills in its defaults (FULL, RENAME).
    pub async fn checked_target(
        &self,
        t: Option<&v1::RestoreTarget>,
    ) -> ApiResult<v1::RestoreTarget> {
        let mut t = t
            .cloned()
            .ok_or_else(|| ApiError::Invalid("a restore needs a target".into()))?;
        self.instance(t.instance_id).await?;
        if t.restore_type == 0 {
            t.restore_type = v1::RestoreType::Full as i32;
        }
        rows::restore_type_label(t.restore_type)?;
        if t.existing_database == 0 {
            t.existing_database = v1::ExistingDatabase::Rename as i32;
        }
        rows::existing_database_label(t.existing_database)?;
        validate_restore_target(&t)?;
        if !t.script_name.is_empty() {
            // A script restore runs only a registered script (docs/scripts.md).
            self.require_script(&t.script_name).await?;
        }
        Ok(t)
    }

    /// The latest successful dump of a dump job.
    pub async fn latest_good_dump(&self, job_id: i64) -> ApiResult<Option<DumpRow>> {
        Ok(sqlx::query_as::<_, DumpRow>(&format!(
            "SELECT {DUMP_COLUMNS} FROM dumps d JOIN workers w ON w.id = d.worker_id \
             WHERE d.job_id = $1 AND d.status = 'SUCCEEDED' ORDER BY d.finished_at DESC, d.id DESC LIMIT 1"
        ))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn add_restore_job(
        &self,
        req: &v1::AddRestoreJobRequest,
    ) -> ApiResult<RestoreJobRow> {
        let kind = match req.kind {
            0 => "SINGLE",
            k => rows::restore_job_kind_label(k)?,
        };
        let status = match req.status {
            0 => "ACTIVE",
            s => rows::status_label(s)?,
        };
        let (source_job, source_dump) = (req.source_job_id, req.source_dump_id);
        if (source_job == 0) == (source_dump == 0) {
            return Err(ApiError::Invalid(
                "name exactly one source: a dump job (its latest good dump) or one dump".into(),
            ));
        }
        if kind == "TRIGGER" && source_job == 0 {
            return Err(ApiError::Invalid(
                "a TRIGGER restore job follows a dump job: name the source job".into(),
            ));
        }
        let (worker, cluster_wide) = if source_job != 0 {
            let job = self.job(source_job).await?;
            let t = v1::DumpType::from_label(&job.dump_type).unwrap_or(v1::DumpType::Full);
            (job.worker_id, t.is_cluster_wide())
        } else {
            let dump = self.dump(source_dump).await?;
            if dump.status != "SUCCEEDED" {
                return Err(ApiError::Precondition(format!(
                    "dump {source_dump} is {}, not a dump to restore",
                    dump.status
                )));
            }
            let t = v1::DumpType::from_label(&dump.dump_type).unwrap_or(v1::DumpType::Full);
            (dump.worker_id, t.is_cluster_wide())
        };
        let target = self.checked_target(req.target.as_ref()).await?;
        if cluster_wide
            && (!target.schema.is_empty() || target.restore_type != v1::RestoreType::Full as i32)
        {
            return Err(ApiError::Invalid(
                "a cluster-wide dump (CLUSTER, CLUSTER_SCHEMA, GLOBALS) restores whole, through psql: no schema, type FULL".into(),
            ));
        }
        let cron = match kind {
            "REPEAT" => CronExpr::parse(&req.cron)?.as_str().to_string(),
            _ if !req.cron.is_empty() => {
                return Err(ApiError::Invalid(format!(
                    "only REPEAT restore jobs have a cron (this one is {kind})"
                )));
            }
            _ => String::new(),
        };
        let run_at = req
            .run_at
            .as_ref()
            .and_then(pgsnapman_proto::from_timestamp);
        if run_at.is_some() && kind != "SINGLE" {
            return Err(ApiError::Invalid(format!(
                "only SINGLE restore jobs have a time to run at (this one is {kind})"
            )));
        }
        let map = serde_json::to_value(&target.tablespace_map)
            .map_err(|e| ApiError::Invalid(format!("tablespace map: {e}")))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO restore_jobs (worker_id, source_job_id, source_dump_id, target_instance_id, \
             target_database, schema_name, restore_type, existing_database, kind, cron, run_at, roles, \
             target_owner, tablespace_map, keep_tablespaces, parallel_jobs, extra_options, status, comment, \
             script_name) \
             VALUES ($1, NULLIF($2, 0), NULLIF($3, 0), $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19, NULLIF($20, '')) RETURNING id",
        )
        .bind(worker)
        .bind(source_job)
        .bind(source_dump)
        .bind(target.instance_id)
        .bind(&target.database)
        .bind(&target.schema)
        .bind(rows::restore_type_label(target.restore_type)?)
        .bind(rows::existing_database_label(target.existing_database)?)
        .bind(kind)
        .bind(&cron)
        .bind(run_at)
        .bind(target.roles)
        .bind(&target.owner)
        .bind(map)
        .bind(target.keep_tablespaces)
        .bind(i32::try_from(target.parallel_jobs).unwrap_or(0))
        .bind(&target.extra_options)
        .bind(status)
        .bind(&req.comment)
        .bind(&target.script_name)
        .fetch_one(&self.pool)
        .await?;
        if source_dump != 0 {
            // The holder's retention must now keep that dump (retain).
            self.bump_holder_of(&self.pool, source_dump).await?;
        }
        self.restore_job(id).await
    }

    pub async fn restore_job(&self, id: i64) -> ApiResult<RestoreJobRow> {
        sqlx::query_as::<_, RestoreJobRow>(&job_query("WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("restore job {id} not found")))
    }

    pub async fn list_restore_jobs(
        &self,
        req: &v1::ListRestoreJobsRequest,
    ) -> ApiResult<Vec<RestoreJobRow>> {
        Ok(sqlx::query_as::<_, RestoreJobRow>(&job_query(
            "WHERE ($1::bigint IS NULL OR r.source_job_id = $1) \
             AND ($2::bigint IS NULL OR r.target_instance_id = $2) ORDER BY r.id",
        ))
        .bind(req.source_job_id)
        .bind(req.target_instance_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The newest run of a restore job.
    pub async fn last_run(&self, restore_job_id: i64) -> ApiResult<Option<RestoreRunRow>> {
        Ok(sqlx::query_as::<_, RestoreRunRow>(&format!(
            "SELECT {RESTORE_RUN_COLUMNS} FROM restore_runs u WHERE u.restore_job_id = $1 \
             ORDER BY u.id DESC LIMIT 1"
        ))
        .bind(restore_job_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn set_restore_job_status(&self, id: i64, status: &str) -> ApiResult<RestoreJobRow> {
        let n =
            sqlx::query("UPDATE restore_jobs SET status = $2, updated_at = now() WHERE id = $1")
                .bind(id)
                .bind(status)
                .execute(&self.pool)
                .await?
                .rows_affected();
        if n == 0 {
            return Err(ApiError::NotFound(format!("restore job {id} not found")));
        }
        self.restore_job(id).await
    }

    /// Removes a restore job; its queued run is cancelled, runs already
    /// made stay in the log.
    pub async fn remove_restore_job(&self, id: i64) -> ApiResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE restore_runs SET status = 'ABORTED', finished_at = now(), \
             error = 'its restore job was removed before it ran' \
             WHERE restore_job_id = $1 AND status = 'QUEUED'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tasks SET state = 'CANCELLED', finished_at = now(), \
             error = 'its restore job was removed' \
             WHERE restore_job_id = $1 AND kind = 'RESTORE' AND state = 'QUEUED'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let removed: Option<Option<i64>> =
            sqlx::query_scalar("DELETE FROM restore_jobs WHERE id = $1 RETURNING source_dump_id")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(source_dump) = removed else {
            return Err(ApiError::NotFound(format!("restore job {id} not found")));
        };
        if let Some(dump) = source_dump {
            // The holder's retention may now remove that dump (retain).
            self.bump_holder_of(&mut *tx, dump).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Runs a restore job now, or restores one dump as given: a run and its
    /// task on the worker that holds the dump.
    pub async fn restore_now(&self, req: &v1::RestoreNowRequest) -> ApiResult<TaskRow> {
        use v1::restore_now_request::What;
        let (job, dump, target) = match &req.what {
            Some(What::RestoreJobId(id)) => {
                let job = self.restore_job(*id).await?;
                if job.status == "HALTED" {
                    return Err(ApiError::Precondition(format!(
                        "restore job {id} is halted"
                    )));
                }
                let dump = self.dump_of_job(&job).await?.ok_or_else(|| {
                    ApiError::Precondition(format!(
                        "restore job {id} has no dump to restore yet (its dump job has no successful dump)"
                    ))
                })?;
                let target = job.target();
                (Some(job.id), dump, target)
            }
            Some(What::Dump(a)) => {
                let dump = self.dump(a.dump_id).await?;
                if dump.status != "SUCCEEDED" {
                    return Err(ApiError::Precondition(format!(
                        "dump {} is {}, not a dump to restore",
                        dump.id, dump.status
                    )));
                }
                let target = self.checked_target(a.target.as_ref()).await?;
                (None, dump, target)
            }
            None => {
                return Err(ApiError::Invalid(
                    "name a restore job, or a dump and a target".into(),
                ));
            }
        };
        let instance = self.instance(target.instance_id).await?;
        if instance.status == "HALTED" {
            return Err(ApiError::Precondition(format!(
                "target instance {} ({}) is halted",
                instance.id, instance.name
            )));
        }
        let holder = self.worker_by_id(dump.worker_id).await?;
        let worker = match holder.restore_worker_id {
            Some(r) => self.worker_by_id(r).await?,
            None => holder,
        };
        if worker.status == "HALTED" {
            return Err(ApiError::Precondition(format!(
                "worker {} that would restore dump {} is halted",
                worker.name, dump.id
            )));
        }
        let mut tx = self.pool.begin().await?;
        let task = self
            .queue_run(&mut tx, job, &dump, &target, "ADHOC")
            .await?
            .ok_or_else(|| ApiError::Precondition("the restore could not be queued".into()))?;
        tx.commit().await?;
        self.task(task).await
    }

    /// The dump a restore job restores now: its fixed dump, or the latest
    /// good one of its source job.
    async fn dump_of_job(&self, job: &RestoreJobRow) -> ApiResult<Option<DumpRow>> {
        match (job.source_dump_id, job.source_job_id) {
            (Some(d), _) => self.dump(d).await.map(Some),
            (None, Some(j)) => self.latest_good_dump(j).await,
            (None, None) => Ok(None),
        }
    }

    /// Queues a run of `dump` onto `target` (and its task). A restore job
    /// has at most one queued run: a newer dump takes the queued run's place
    /// (copy jobs behind a backlog restore only the newest); an older one
    /// (by finish time, then id) leaves it as it is. Returns the
    /// task id, `None` if a unique rule refused it (a SINGLE job's run
    /// exists already).
    pub(super) async fn queue_run(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        restore_job: Option<i64>,
        dump: &DumpRow,
        target: &v1::RestoreTarget,
        origin: &str,
    ) -> ApiResult<Option<i64>> {
        let mut target = target.clone();
        let cluster_wide =
            v1::DumpType::from_label(&dump.dump_type).is_some_and(v1::DumpType::is_cluster_wide);
        if cluster_wide {
            target.database.clear();
        } else if target.database.is_empty() {
            target.database = dump.database.clone();
        }
        // A worker may hand its restores to a restore worker that reads its
        // store.
        let runner: i64 =
            sqlx::query_scalar("SELECT COALESCE(restore_worker_id, id) FROM workers WHERE id = $1")
                .bind(dump.worker_id)
                .fetch_one(&mut **tx)
                .await?;
        if let Some(job) = restore_job {
            // The queued task, its run, and its dump as (finished_at, id):
            // NULL if gone.
            type Queued = (i64, Option<i64>, Option<DateTime<Utc>>, Option<i64>);
            let queued: Option<Queued> = sqlx::query_as(
                "SELECT t.id, t.restore_run_id, d.finished_at, d.id FROM tasks t \
                     LEFT JOIN dumps d ON d.id = t.dump_id WHERE t.restore_job_id = $1 \
                     AND t.kind = 'RESTORE' AND t.state = 'QUEUED' FOR UPDATE OF t",
            )
            .bind(job)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some((task, _, Some(at), Some(id))) = queued
                && (at, id) >= (dump.finished_at, dump.id)
            {
                // Never backwards: the queued run already restores this
                // dump or a newer one.
                return Ok(Some(task));
            }
            if let Some((task, run, _, _)) = queued {
                sqlx::query("UPDATE tasks SET dump_id = $2, worker_id = $3 WHERE id = $1")
                    .bind(task)
                    .bind(dump.id)
                    .bind(runner)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query(
                    "UPDATE restore_runs SET dump_id = $2, dump_uuid = $3, worker_id = $4, \
                     source_database = $5, target = $6 WHERE id = $1",
                )
                .bind(run)
                .bind(dump.id)
                .bind(dump.dump_uuid)
                .bind(runner)
                .bind(&dump.database)
                .bind(rows::target_json(&target))
                .execute(&mut **tx)
                .await?;
                return Ok(Some(task));
            }
        }
        let run: i64 = sqlx::query_scalar(
            "INSERT INTO restore_runs (restore_job_id, dump_id, dump_uuid, worker_id, source_database, \
             target_instance_id, target) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(restore_job)
        .bind(dump.id)
        .bind(dump.dump_uuid)
        .bind(runner)
        .bind(&dump.database)
        .bind(target.instance_id)
        .bind(rows::target_json(&target))
        .fetch_one(&mut **tx)
        .await?;
        let task: Option<i64> = sqlx::query_scalar(
            "INSERT INTO tasks (kind, worker_id, dump_id, restore_job_id, restore_run_id, max_attempts, origin) \
             VALUES ('RESTORE', $1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(runner)
        .bind(dump.id)
        .bind(restore_job)
        .bind(run)
        .bind(self.max_attempts)
        .bind(origin)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(task) = task else {
            sqlx::query("DELETE FROM restore_runs WHERE id = $1")
                .bind(run)
                .execute(&mut **tx)
                .await?;
            return Ok(None);
        };
        sqlx::query("UPDATE restore_runs SET task_id = $2 WHERE id = $1")
            .bind(run)
            .bind(task)
            .execute(&mut **tx)
            .await?;
        Ok(Some(task))
    }

    /// Queues the copies that successful dumps trigger (ACTIVE TRIGGER
    /// restore jobs of their dump jobs). Called in the transaction that
    /// records the dumps, so a replayed event never triggers twice.
    pub(super) async fn trigger_restores(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        dump_ids: &[i64],
    ) -> ApiResult<Vec<i64>> {
        if dump_ids.is_empty() {
            return Ok(Vec::new());
        }
        let dumps: Vec<DumpRow> = sqlx::query_as(&format!(
            "SELECT {DUMP_COLUMNS} FROM dumps d JOIN workers w ON w.id = d.worker_id \
             WHERE d.id = ANY($1) AND d.status = 'SUCCEEDED' AND d.job_id <> 0 ORDER BY d.finished_at, d.id"
        ))
        .bind(dump_ids)
        .fetch_all(&mut **tx)
        .await?;
        let mut tasks = Vec::new();
        for dump in dumps {
            let jobs: Vec<RestoreJobRow> = sqlx::query_as(&job_query(
                "WHERE r.kind = 'TRIGGER' AND r.status = 'ACTIVE' AND r.source_job_id = $1 ORDER BY r.id",
            ))
            .bind(dump.job_id)
            .fetch_all(&mut **tx)
            .await?;
            for job in jobs {
                if let Some(t) = self
                    .queue_run(tx, Some(job.id), &dump, &job.target(), "TRIGGER")
                    .await?
                {
                    tasks.push(t);
                }
            }
        }
        Ok(tasks)
    }

    /// Queues the runs of SINGLE jobs whose time has come and of REPEAT
    /// jobs whose cron fired since their last run (only the latest missed
    /// fire counts). Safe with several coordinators: a SINGLE job's run is
    /// unique, a REPEAT fire is claimed by a compare-and-set of its time.
    pub async fn queue_due_restores(&self, now: DateTime<Utc>) -> ApiResult<Vec<i64>> {
        let mut queued = Vec::new();
        let singles: Vec<RestoreJobRow> = sqlx::query_as(&job_query(
            "WHERE r.kind = 'SINGLE' AND r.status = 'ACTIVE' AND (r.run_at IS NULL OR r.run_at <= $1) \
             AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.restore_job_id = r.id AND t.origin = 'SINGLE')",
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        for job in singles {
            // No dump yet (its dump job has not succeeded): wait for one.
            let Some(dump) = self.dump_of_job(&job).await? else {
                continue;
            };
            let mut tx = self.pool.begin().await?;
            if let Some(t) = self
                .queue_run(&mut tx, Some(job.id), &dump, &job.target(), "SINGLE")
                .await?
            {
                sqlx::query("UPDATE restore_jobs SET last_fired_at = $2 WHERE id = $1")
                    .bind(job.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                queued.push(t);
            }
            tx.commit().await?;
        }
        let repeats: Vec<RestoreJobRow> = sqlx::query_as(&job_query(
            "WHERE r.kind = 'REPEAT' AND r.status = 'ACTIVE'",
        ))
        .fetch_all(&self.pool)
        .await?;
        for job in repeats {
            let Ok(cron) = CronExpr::parse(&job.cron) else {
                continue;
            };
            let base = job.last_fired_at.unwrap_or(job.created_at);
            let Some(fire) = latest_fire(&cron, base, now) else {
                continue;
            };
            let Some(dump) = self.dump_of_job(&job).await? else {
                continue;
            };
            let mut tx = self.pool.begin().await?;
            let claimed = sqlx::query(
                "UPDATE restore_jobs SET last_fired_at = $2 WHERE id = $1 \
                 AND last_fired_at IS NOT DISTINCT FROM $3",
            )
            .bind(job.id)
            .bind(fire)
            .bind(job.last_fired_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 1
                && let Some(t) = self
                    .queue_run(&mut tx, Some(job.id), &dump, &job.target(), "REPEAT")
                    .await?
            {
                queued.push(t);
            }
            tx.commit().await?;
        }
        Ok(queued)
    }

    /// What the worker needs to run a leased RESTORE task; marks its run
    /// RUNNING.
    pub(super) async fn restore_spec(&self, task: &TaskRow) -> ApiResult<v1::RestoreSpec> {
        let run_id = task
            .restore_run_id
            .ok_or_else(|| ApiError::Invalid(format!("restore task {} has no run", task.id)))?;
        let run = self.restore_run(run_id).await?;
        let dump = self.dump(run.dump_id).await.map_err(|e| match e {
            ApiError::NotFound(_) => ApiError::Precondition(format!(
                "dump {} of restore run {run_id} no longer exists",
                run.dump_id
            )),
            other => other,
        })?;
        // Another worker's store is read only where the catalog says so:
        // the dump's worker names this one as its restore worker now (the
        // mapping may have changed since the task was queued).
        if dump.worker_id != task.worker_id {
            let allowed: Option<bool> = sqlx::query_scalar(
                "SELECT restore_worker_id IS NOT DISTINCT FROM $2 FROM workers WHERE id = $1",
            )
            .bind(dump.worker_id)
            .bind(task.worker_id)
            .fetch_optional(&self.pool)
            .await?;
            if allowed != Some(true) {
                return Err(ApiError::Forbidden(format!(
                    "restore run {run_id}: dump {} is in worker {}'s store, whose restore worker is no longer the worker of task {}; restore it again",
                    dump.id, dump.worker_name, task.id
                )));
            }
        }
        let target = serde_json::from_str(&run.target)
            .map(|v: serde_json::Value| rows::target_from_json(&v))
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("restore run {run_id} target: {e}")))?;
        let instance = self.instance(target.instance_id).await?;
        // A script restore gets the script's current version with the task;
        // the run records which one (the worker runs nothing else).
        let script = if target.script_name.is_empty() {
            None
        } else {
            Some(
                self.script_source(&target.script_name)
                    .await
                    .map_err(|e| match e {
                        ApiError::NotFound(m) => {
                            ApiError::Precondition(format!("restore run {run_id}: {m}"))
                        }
                        other => other,
                    })?,
            )
        };
        sqlx::query(
            "UPDATE restore_runs SET status = 'RUNNING', started_at = COALESCE(started_at, now()), \
             worker_id = $2, script_hash = $3 WHERE id = $1",
        )
        .bind(run_id)
        .bind(task.worker_id)
        .bind(script.as_ref().map_or("", |s| s.hash.as_str()))
        .execute(&self.pool)
        .await?;
        Ok(v1::RestoreSpec {
            run_id,
            restore_job_id: run.restore_job_id.unwrap_or(0),
            dump_uuid: dump.dump_uuid.to_string(),
            source_database: dump.database.clone(),
            source_schema: dump.schema_name.clone(),
            dump_type: rows::dump_type_value(&dump.dump_type),
            format: rows::format_value(&dump.format),
            dump_server_version: dump.server_version.clone(),
            dump_client_version: dump.client_version.clone(),
            restore_metadata_json: dump.restore_metadata.clone().unwrap_or_default(),
            target: Some(target),
            // Sealed to the worker that runs the restore (it may read the
            // dump from another worker's store).
            target_instance: Some(self.connection_for(&instance, task.worker_id).await?),
            dump_worker_name: dump.worker_name.clone(),
            script,
            // Only to the restore worker granted above: the dump worker's
            // store, read-only, with the restore worker's own credentials.
            dump_store: if dump.worker_id == task.worker_id {
                None
            } else {
                self.store_location(dump.worker_id).await?
            },
        })
    }

    pub async fn restore_run(&self, id: i64) -> ApiResult<RestoreRunRow> {
        sqlx::query_as::<_, RestoreRunRow>(&format!(
            "SELECT {RESTORE_RUN_COLUMNS} FROM restore_runs u WHERE u.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("restore run {id} not found")))
    }

    pub async fn list_restore_runs(
        &self,
        req: &v1::ListRestoreRunsRequest,
    ) -> ApiResult<Vec<RestoreRunRow>> {
        let status = match req.status {
            0 => None,
            s => Some(rows::restore_status_label(s)?),
        };
        Ok(sqlx::query_as::<_, RestoreRunRow>(&format!(
            "SELECT {RESTORE_RUN_COLUMNS} FROM restore_runs u \
             WHERE ($1::bigint IS NULL OR u.restore_job_id = $1) \
             AND ($2::bigint IS NULL OR u.target_instance_id = $2) \
             AND ($3::text IS NULL OR u.status = $3) ORDER BY u.id DESC LIMIT $4"
        ))
        .bind(req.restore_job_id)
        .bind(req.target_instance_id)
        .bind(status)
        .bind(super::limit(req.limit))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn restore_log(&self, run_id: i64) -> ApiResult<(RestoreRunRow, Vec<RestoreLogRow>)> {
        let run = self.restore_run(run_id).await?;
        let lines = sqlx::query_as::<_, RestoreLogRow>(
            "SELECT id, run_id, logged_at, level, text FROM restore_log WHERE run_id = $1 ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        Ok((run, lines))
    }

    /// A line of a run's log from the worker running it (other workers'
    /// lines are refused: false).
    pub(super) async fn apply_restore_log(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        e: &v1::RestoreLogEntry,
        at: DateTime<Utc>,
    ) -> ApiResult<bool> {
        let level = match v1::MessageLevel::try_from(e.level) {
            Ok(v1::MessageLevel::Unspecified) | Err(_) => v1::MessageLevel::Info,
            Ok(l) => l,
        };
        let n = sqlx::query(
            "INSERT INTO restore_log (run_id, level, text, logged_at) \
             SELECT $1, $2, $3, $4 WHERE EXISTS \
             (SELECT 1 FROM restore_runs WHERE id = $1 AND worker_id = $5)",
        )
        .bind(e.run_id)
        .bind(level as i16)
        .bind(&e.text)
        .bind(at)
        .bind(worker_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// The end of a run, from the worker that ran it. Returns the run, or
    /// `None` for a run of another worker.
    pub(super) async fn apply_restore_finished(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        f: &v1::RestoreFinished,
        at: DateTime<Utc>,
    ) -> ApiResult<Option<RestoreRunRow>> {
        let status = rows::restore_status_label(f.status).unwrap_or("FAILED");
        let status = if matches!(status, "QUEUED" | "RUNNING") {
            "FAILED"
        } else {
            status
        };
        let time = |t: &Option<prost_types::Timestamp>| {
            t.as_ref().and_then(pgsnapman_proto::from_timestamp)
        };
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let n = sqlx::query(
            "UPDATE restore_runs SET status = $3, error = $4, \
             started_at = COALESCE($5, started_at), finished_at = COALESCE($6, $7), \
             bytes_total = $8, bytes_done = $9, warnings = $10 \
             WHERE id = $1 AND worker_id = $2",
        )
        .bind(f.run_id)
        .bind(worker_id)
        .bind(status)
        .bind(&f.error)
        .bind(time(&f.started_at))
        .bind(time(&f.finished_at))
        .bind(at)
        .bind(big(f.bytes_total))
        .bind(big(f.bytes_done))
        .bind(i32::try_from(f.warnings).unwrap_or(i32::MAX))
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        // Its dump's protection ends with it: migration 0024 bumps the holder.
        let run = sqlx::query_as::<_, RestoreRunRow>(&format!(
            "SELECT {RESTORE_RUN_COLUMNS} FROM restore_runs u WHERE u.id = $1"
        ))
        .bind(f.run_id)
        .fetch_one(&mut **tx)
        .await?;
        Ok(Some(run))
    }

    /// Fails the run of a RESTORE task that ended without a
    /// RestoreFinished (rejected by the worker, or out of lease attempts).
    pub(super) async fn fail_runs_of_tasks<'e, E: sqlx::PgExecutor<'e>>(
        &self,
        exec: E,
        task_ids: &[i64],
        error: &str,
    ) -> ApiResult<()> {
        sqlx::query(
            "UPDATE restore_runs u SET status = 'FAILED', finished_at = now(), \
             error = CASE WHEN $2 = '' THEN t.error ELSE $2 END \
             FROM tasks t WHERE t.id = u.task_id AND u.task_id = ANY($1) \
             AND t.state IN ('FAILED', 'CANCELLED') AND u.status IN ('QUEUED', 'RUNNING')",
        )
        .bind(task_ids)
        .bind(error)
        .execute(exec)
        .await?;
        Ok(())
    }
}

/// The latest cron fire time in (`after`, `now`], if any.
fn latest_fire(cron: &CronExpr, after: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut last = None;
    let mut t = after;
    for _ in 0..MAX_MISSED_FIRES {
        match cron.next_after(&t) {
            Some(next) if next <= now => {
                last = Some(next);
                t = next;
            }
            _ => break,
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn latest_missed_fire_only() {
        let cron = CronExpr::parse("0 * * * *").unwrap();
        let base = Utc.with_ymd_and_hms(2026, 11, 24, 1, 30, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 4, 10, 0).unwrap();
        assert_eq!(
            latest_fire(&cron, base, now),
            Some(Utc.with_ymd_and_hms(2026, 11, 24, 4, 0, 0).unwrap())
        );
        let soon = Utc.with_ymd_and_hms(2026, 11, 24, 1, 59, 0).unwrap();
        assert_eq!(latest_fire(&cron, base, soon), None);
    }
}
