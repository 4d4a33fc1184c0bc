//! Dump jobs.
use pgsnapman_proto::model::{CronExpr, validate_dump_options, validate_identifier};
use pgsnapman_proto::v1;

use super::Catalog;
use super::verify_schedule::Settings as VerifySettings;
use crate::error::{ApiError, ApiResult};
use crate::rows::{self, JobRow};

const COLUMNS: &str = "id, worker_id, instance_id, database, schema_name, dump_type, format, \
    extra_options, cron, kind, status, keep_daily, keep_weekly, keep_monthly, keep_yearly, \
    parallel_jobs, comment, created_at, updated_at, pause_replay, on_demand, script_name, \
    verify_cron, verify_method, verify_instance_id, verify_checks";

/// Unset retention: 14 daily, 2 weekly, 5 monthly, 2 yearly.
pub(super) const DEFAULT_RETENTION: v1::Retention = v1::Retention {
    keep_daily: 14,
    keep_weekly: 2,
    keep_monthly: 5,
    keep_yearly: 2,
};

pub(super) fn retention_cols(r: &v1::Retention) -> ApiResult<[i32; 4]> {
    let f = |v: u32, what: &str| {
        i32::try_from(v)
            .ok()
            .filter(|v| *v <= 100_000)
            .ok_or_else(|| ApiError::Invalid(format!("retention {what} {v} is too large")))
    };
    Ok([
        f(r.keep_daily, "keep_daily")?,
        f(r.keep_weekly, "keep_weekly")?,
        f(r.keep_monthly, "keep_monthly")?,
        f(r.keep_yearly, "keep_yearly")?,
    ])
}

/// The script a job of `dump_type` runs: required for SCRIPT jobs, refused
/// for the others.
fn script_of(dump_type: v1::DumpType, name: &str) -> ApiResult<Option<&str>> {
    match (dump_type == v1::DumpType::Script, name.is_empty()) {
        (true, true) => Err(ApiError::Invalid(
            "a SCRIPT job needs a script: name a registered one (--script NAME)".into(),
        )),
        (true, false) => Ok(Some(name)),
        (false, true) => Ok(None),
        (false, false) => Err(ApiError::Invalid(format!(
            "only a SCRIPT job runs a script, not a {} job",
            dump_type.label()
        ))),
    }
}

/// A SCRIPT job's extra options are its script's arguments; other jobs'
/// are pg_dump options.
fn check_options(dump_type: v1::DumpType, options: &[String]) -> ApiResult<()> {
    if dump_type == v1::DumpType::Script {
        pgsnapman_proto::script::validate_arguments(options)?;
    } else {
        validate_dump_options(options)?;
    }
    Ok(())
}

fn parallel(n: u32) -> ApiResult<i32> {
    if n > 64 {
        return Err(ApiError::Invalid(format!(
            "parallel_jobs {n} is more than 64"
        )));
    }
    Ok(i32::try_from(n).unwrap_or(0))
}

impl Catalog {
    pub async fn add_job(&self, req: &v1::AddDumpJobRequest) -> ApiResult<JobRow> {
        let instance = self.instance(req.instance_id).await?;
        let dump_type = match req.dump_type {
            0 => v1::DumpType::Full,
            t => v1::DumpType::try_from(t)
                .map_err(|_| ApiError::Invalid(format!("dump type {t} is not valid")))?,
        };
        let script = script_of(dump_type, &req.script_name)?;
        if let Some(name) = script {
            self.require_script(name).await?;
            if req.parallel_jobs > 1 {
                return Err(ApiError::Invalid(
                    "a SCRIPT job has no parallel_jobs: its script decides how it dumps".into(),
                ));
            }
        }
        let format = match req.format {
            0 => dump_type.default_format(),
            f => v1::DumpFormat::try_from(f)
                .map_err(|_| ApiError::Invalid(format!("dump format {f} is not valid")))?,
        };
        if dump_type.is_cluster_wide() {
            if !req.database.is_empty() || !req.schema.is_empty() {
                return Err(ApiError::Invalid(format!(
                    "a {} dump covers the whole cluster: give no database or schema",
                    dump_type.label()
                )));
            }
            if format != v1::DumpFormat::Plain {
                return Err(ApiError::Invalid(format!(
                    "a {} dump is always PLAIN (pg_dumpall writes SQL only)",
                    dump_type.label()
                )));
            }
        } else {
            validate_identifier("database", &req.database)?;
            if !req.schema.is_empty() {
                validate_identifier("schema", &req.schema)?;
            }
        }
        let cron = CronExpr::parse(&req.cron)?;
        check_options(dump_type, &req.extra_options)?;
        let kind = match req.kind {
            0 => "REPEAT",
            k => rows::job_kind_label(k)?,
        };
        let status = match req.status {
            0 => "ACTIVE",
            s => rows::status_label(s)?,
        };
        let worker = match self.worker_ref(req.worker.as_ref()).await? {
            Some(w) => w.id,
            None => instance.default_worker_id.ok_or_else(|| {
                ApiError::Invalid(format!(
                    "instance {} ({}) has no default worker; name the worker of the job",
                    instance.id, instance.name
                ))
            })?,
        };
        let [kd, kw, km, ky] =
            retention_cols(req.retention.as_ref().unwrap_or(&DEFAULT_RETENTION))?;
        let verify = VerifySettings::of_add(req)?;
        verify.check_against(self, dump_type).await?;
        let mut tx = self.pool.begin().await?;
        let wanted = super::import_id(&mut tx, super::ImportTable::DumpJobs, req.id).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO dump_jobs (id, worker_id, instance_id, database, schema_name, dump_type, format, \
             extra_options, cron, kind, status, keep_daily, keep_weekly, keep_monthly, keep_yearly, \
             parallel_jobs, comment, pause_replay, on_demand, script_name) \
             VALUES (COALESCE($20, nextval(pg_get_serial_sequence('dump_jobs', 'id'))), \
             $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19) RETURNING id",
        )
        .bind(worker)
        .bind(instance.id)
        .bind(&req.database)
        .bind(&req.schema)
        .bind(dump_type.label())
        .bind(format.label())
        .bind(&req.extra_options)
        .bind(cron.as_str())
        .bind(kind)
        .bind(status)
        .bind(kd)
        .bind(kw)
        .bind(km)
        .bind(ky)
        .bind(parallel(req.parallel_jobs)?)
        .bind(&req.comment)
        .bind(req.pause_replay)
        .bind(req.on_demand)
        .bind(script)
        .bind(wanted)
        .fetch_one(&mut *tx)
        .await?;
        verify.store(&mut tx, id).await?;
        self.check_script_budget(&mut tx, &[worker]).await?;
        self.bump_schedule(&mut *tx, &[worker]).await?;
        tx.commit().await?;
        self.job(id).await
    }

    pub async fn job(&self, id: i64) -> ApiResult<JobRow> {
        sqlx::query_as::<_, JobRow>(&format!("SELECT {COLUMNS} FROM dump_jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("dump job {id} not found")))
    }

    pub async fn list_jobs(&self, req: &v1::ListDumpJobsRequest) -> ApiResult<Vec<JobRow>> {
        let worker = self.worker_ref(req.worker.as_ref()).await?;
        let mut q = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM dump_jobs WHERE true"));
        if let Some(i) = req.instance_id {
            q.push(" AND instance_id = ").push_bind(i);
        }
        if let Some(w) = worker {
            q.push(" AND worker_id = ").push_bind(w.id);
        }
        if req.status != 0 {
            q.push(" AND status = ")
                .push_bind(rows::status_label(req.status)?);
        }
        q.push(" ORDER BY id");
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }

    /// Jobs a worker runs (its schedule).
    pub async fn jobs_of_worker(&self, worker_id: i64) -> ApiResult<Vec<JobRow>> {
        Ok(sqlx::query_as::<_, JobRow>(&format!(
            "SELECT {COLUMNS} FROM dump_jobs WHERE worker_id = $1 ORDER BY id"
        ))
        .bind(worker_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn update_job(&self, req: &v1::UpdateDumpJobRequest) -> ApiResult<JobRow> {
        let cur = self.job(req.id).await?;
        let cron = match &req.cron {
            Some(c) => CronExpr::parse(c)?.as_str().to_string(),
            None => cur.cron.clone(),
        };
        let dump_type = v1::DumpType::from_label(&cur.dump_type).unwrap_or(v1::DumpType::Full);
        let options = match &req.extra_options {
            Some(o) => {
                check_options(dump_type, &o.options)?;
                o.options.clone()
            }
            None => cur.extra_options.clone(),
        };
        let [kd, kw, km, ky] = match &req.retention {
            Some(r) => retention_cols(r)?,
            None => [
                cur.keep_daily,
                cur.keep_weekly,
                cur.keep_monthly,
                cur.keep_yearly,
            ],
        };
        let worker = self
            .worker_ref(req.worker.as_ref())
            .await?
            .map_or(cur.worker_id, |w| w.id);
        let format = match req.format {
            0 => cur.format.clone(),
            f => rows::format_label(f)?.to_string(),
        };
        let cluster = v1::DumpType::from_label(&cur.dump_type).is_some_and(|t| t.is_cluster_wide());
        if cluster && format != "PLAIN" {
            return Err(ApiError::Invalid(format!(
                "a {} dump is always PLAIN",
                cur.dump_type
            )));
        }
        let parallel_jobs = match req.parallel_jobs {
            Some(n) => parallel(n)?,
            None => cur.parallel_jobs,
        };
        let script = match &req.script_name {
            Some(name) => {
                let s = script_of(dump_type, name)?;
                if let Some(n) = s {
                    self.require_script(n).await?;
                }
                s.map(str::to_string)
            }
            None => cur.script_name.clone(),
        };
        let verify = VerifySettings::of_update(&cur, req)?;
        verify.check_against(self, dump_type).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE dump_jobs SET cron = $2, extra_options = $3, keep_daily = $4, keep_weekly = $5, \
             keep_monthly = $6, keep_yearly = $7, comment = $8, worker_id = $9, format = $10, \
             parallel_jobs = $11, pause_replay = $12, on_demand = $13, script_name = $14, \
             updated_at = now() WHERE id = $1",
        )
        .bind(req.id)
        .bind(&cron)
        .bind(&options)
        .bind(kd)
        .bind(kw)
        .bind(km)
        .bind(ky)
        .bind(req.comment.as_ref().unwrap_or(&cur.comment))
        .bind(worker)
        .bind(&format)
        .bind(parallel_jobs)
        .bind(req.pause_replay.unwrap_or(cur.pause_replay))
        .bind(req.on_demand.unwrap_or(cur.on_demand))
        .bind(&script)
        .execute(&mut *tx)
        .await?;
        verify.store(&mut tx, req.id).await?;
        self.check_script_budget(&mut tx, &[worker]).await?;
        self.bump_schedule(&mut *tx, &[worker, cur.worker_id])
            .await?;
        tx.commit().await?;
        self.job(req.id).await
    }

    pub async fn set_job_status(&self, id: i64, status: &str) -> ApiResult<JobRow> {
        let cur = self.job(id).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE dump_jobs SET status = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(status)
            .execute(&mut *tx)
            .await?;
        self.bump_schedule(&mut *tx, &[cur.worker_id]).await?;
        tx.commit().await?;
        self.job(id).await
    }

    /// Removes the job; its catalog rows stay. Queued tasks are cancelled.
    pub async fn remove_job(&self, id: i64) -> ApiResult<()> {
        let cur = self.job(id).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE tasks SET state = 'CANCELLED', finished_at = now(), error = 'job removed' \
             WHERE job_id = $1 AND state = 'QUEUED'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM dump_jobs WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.bump_schedule(&mut *tx, &[cur.worker_id]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_dumps(&self, req: &v1::ListDumpsRequest) -> ApiResult<Vec<rows::DumpRow>> {
        let worker = self.worker_ref(req.worker.as_ref()).await?;
        let mut q = sqlx::QueryBuilder::new(format!(
            "SELECT {} FROM dumps d JOIN workers w ON w.id = d.worker_id WHERE true",
            rows::DUMP_COLUMNS
        ));
        if let Some(j) = req.job_id {
            q.push(" AND d.job_id = ").push_bind(j);
        }
        if let Some(i) = req.instance_id {
            q.push(" AND d.instance_id = ").push_bind(i);
        }
        if let Some(db) = &req.database {
            q.push(" AND d.database = ").push_bind(db.clone());
        }
        if req.status != 0 {
            q.push(" AND d.status = ")
                .push_bind(rows::dump_status_label(req.status)?);
        }
        if let Some(w) = worker {
            q.push(" AND d.worker_id = ").push_bind(w.id);
        }
        if let Some(since) = req.since.as_ref().and_then(pgsnapman_proto::from_timestamp) {
            q.push(" AND d.started_at >= ").push_bind(since);
        }
        q.push(" ORDER BY d.started_at DESC, d.id DESC LIMIT ")
            .push_bind(super::limit(req.limit));
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }

    pub async fn dump(&self, id: i64) -> ApiResult<rows::DumpRow> {
        sqlx::query_as::<_, rows::DumpRow>(&format!(
            "SELECT {} FROM dumps d JOIN workers w ON w.id = d.worker_id WHERE d.id = $1",
            rows::DUMP_COLUMNS
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("dump {id} not found in the catalog")))
    }

    /// The rows per table counted when dump `id` was taken (empty when
    /// none were counted).
    pub async fn dump_table_rows(&self, id: i64) -> ApiResult<Vec<v1::TableRowCount>> {
        let json: Option<sqlx::types::Json<Vec<rows::TableRowsJson>>> =
            sqlx::query_scalar("SELECT table_rows FROM dumps WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten();
        Ok(json
            .map(|j| j.0.iter().map(rows::TableRowsJson::to_proto).collect())
            .unwrap_or_default())
    }
}
