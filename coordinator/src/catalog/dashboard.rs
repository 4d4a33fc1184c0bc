//! The dashboard's read queries (docs/dashboard.md): one page of jobs,
//! dumps or messages at a time, by keyset on an indexed column (never
//! OFFSET), so that a page costs the same with 100,000 catalog rows.
use chrono::{DateTime, Utc};

use super::Catalog;
use crate::error::ApiResult;

/// A dump job with its newest dump and its newest good dump.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobOverview {
    pub id: i64,
    pub worker_name: String,
    /// The worker's `scheduler.timezone` from its last Hello (`None`: not
    /// reported, read as UTC).
    pub worker_timezone: Option<String>,
    pub instance_name: String,
    pub database: String,
    pub schema_name: String,
    pub dump_type: String,
    pub cron: String,
    pub kind: String,
    pub status: String,
    pub keep_daily: i32,
    pub keep_weekly: i32,
    pub keep_monthly: i32,
    pub keep_yearly: i32,
    pub last_dump_id: Option<i64>,
    pub last_status: Option<String>,
    pub last_finished_at: Option<DateTime<Utc>>,
    pub last_good_at: Option<DateTime<Utc>>,
}

/// A row of the catalog page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DumpLine {
    pub id: i64,
    pub job_id: i64,
    pub worker_name: String,
    pub database: String,
    pub schema_name: String,
    pub dump_type: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub dump_bytes: i64,
    pub stored_bytes: i64,
    pub verified: String,
    pub restore_verified_ok: Option<bool>,
    pub tables: Option<i32>,
    pub table_rows: Option<i64>,
    pub message: String,
}

/// A row of the messages page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageLine {
    pub id: i64,
    pub logged_at: DateTime<Utc>,
    pub level: i16,
    pub class: String,
    pub worker_name: Option<String>,
    pub job_id: Option<i64>,
    pub text: String,
}

/// What is not protected: instances without an ACTIVE job, jobs that are
/// HALTED or whose database discovery found gone, and databases the last
/// discovery list named that have no job (and no ACTIVE CLUSTER job covers).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Unprotected {
    pub what: String,
    pub instance_name: String,
    pub database: String,
    pub job_id: Option<i64>,
    pub since: Option<DateTime<Utc>>,
}

/// Filters of the messages page (all optional).
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub min_level: i16,
    pub worker: Option<String>,
    pub job_id: Option<i64>,
}

/// The jobs page ($1: after this id, $2: limit).
const JOBS: &str = "SELECT j.id, w.name AS worker_name, w.timezone AS worker_timezone, \
    i.name AS instance_name, j.database, \
    j.schema_name, j.dump_type, j.cron, j.kind, j.status, j.keep_daily, j.keep_weekly, \
    j.keep_monthly, j.keep_yearly, ld.id AS last_dump_id, ld.status AS last_status, \
    ld.finished_at AS last_finished_at, lg.finished_at AS last_good_at \
    FROM dump_jobs j JOIN workers w ON w.id = j.worker_id JOIN instances i ON i.id = j.instance_id \
    LEFT JOIN LATERAL (SELECT d.id, d.status, d.finished_at FROM dumps d WHERE d.job_id = j.id \
      ORDER BY d.started_at DESC LIMIT 1) ld ON true \
    LEFT JOIN LATERAL (SELECT d.finished_at FROM dumps d WHERE d.job_id = j.id \
      AND d.status = 'SUCCEEDED' ORDER BY d.started_at DESC LIMIT 1) lg ON true \
    WHERE j.id > $1 ORDER BY j.id LIMIT $2";

/// The catalog page ($1: before this id, $2: limit, $3: job or NULL); public
/// for the e2e test that checks its plan.
pub const DUMPS: &str = "SELECT d.id, d.job_id, w.name AS worker_name, d.database, d.schema_name, \
    d.dump_type, d.status, d.started_at, d.finished_at, d.dump_bytes, d.stored_bytes, d.verified, \
    d.restore_verified_ok, \
    CASE WHEN jsonb_typeof(d.table_rows) = 'array' THEN jsonb_array_length(d.table_rows) END AS tables, \
    CASE WHEN jsonb_typeof(d.table_rows) = 'array' THEN (SELECT sum((e->>'rows')::bigint)::bigint \
      FROM jsonb_array_elements(d.table_rows) e) END AS table_rows, \
    d.message \
    FROM dumps d JOIN workers w ON w.id = d.worker_id \
    WHERE d.id < $1 AND ($3::bigint IS NULL OR d.job_id = $3) ORDER BY d.id DESC LIMIT $2";

/// The messages page ($1: before this id, $2: limit, $3: lowest level,
/// $4: worker name or NULL, $5: job or NULL).
pub const MESSAGES: &str = "SELECT m.id, m.logged_at, m.level, m.class, w.name AS worker_name, \
    m.job_id, m.text FROM messages m LEFT JOIN workers w ON w.id = m.worker_id \
    WHERE m.id < $1 AND m.level >= $3 AND ($4::text IS NULL OR w.name = $4) \
    AND ($5::bigint IS NULL OR m.job_id = $5) ORDER BY m.id DESC LIMIT $2";

/// The restore jobs page: the restore job columns of ListRestoreJobs,
/// $1: after this id, $2: limit; public for the e2e test that checks its
/// plan.
pub fn restore_jobs_query() -> String {
    super::restore::job_query("WHERE r.id > $1 ORDER BY r.id LIMIT $2")
}

const UNPROTECTED: &str = "SELECT 'no active job' AS what, i.name AS instance_name, \
      '' AS database, NULL::bigint AS job_id, NULL::timestamptz AS since \
    FROM instances i WHERE NOT EXISTS (SELECT 1 FROM dump_jobs j \
      WHERE j.instance_id = i.id AND j.status = 'ACTIVE') \
    UNION ALL SELECT CASE WHEN j.status = 'HALTED' THEN 'job halted' ELSE 'database gone' END, \
      i.name, j.database, j.id, CASE WHEN j.status = 'HALTED' THEN j.updated_at \
      ELSE j.database_missing_since END \
    FROM dump_jobs j JOIN instances i ON i.id = j.instance_id \
    WHERE j.status = 'HALTED' OR j.database_missing_since IS NOT NULL \
    UNION ALL SELECT 'discovered, no job', i.name, l.database, NULL::bigint, NULL::timestamptz \
    FROM instance_discovery d JOIN instances i ON i.id = d.instance_id \
    CROSS JOIN LATERAL unnest(d.databases) AS l(database) \
    WHERE NOT EXISTS (SELECT 1 FROM dump_jobs j WHERE j.instance_id = d.instance_id \
        AND j.database = l.database) \
      AND NOT EXISTS (SELECT 1 FROM dump_jobs j WHERE j.instance_id = d.instance_id \
        AND j.status = 'ACTIVE' AND j.dump_type = 'CLUSTER') \
    ORDER BY 2, 3 LIMIT $1";

impl Catalog {
    /// Up to `limit` jobs with an id above `after`, by id.
    pub async fn dashboard_jobs(&self, after: i64, limit: i64) -> ApiResult<Vec<JobOverview>> {
        Ok(sqlx::query_as::<_, JobOverview>(JOBS)
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Up to `limit` dumps with an id below `before`, newest first.
    pub async fn dashboard_dumps(
        &self,
        before: i64,
        job_id: Option<i64>,
        limit: i64,
    ) -> ApiResult<Vec<DumpLine>> {
        Ok(sqlx::query_as::<_, DumpLine>(DUMPS)
            .bind(before)
            .bind(limit)
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Up to `limit` messages with an id below `before`, newest first.
    pub async fn dashboard_messages(
        &self,
        before: i64,
        f: &MessageFilter,
        limit: i64,
    ) -> ApiResult<Vec<MessageLine>> {
        Ok(sqlx::query_as::<_, MessageLine>(MESSAGES)
            .bind(before)
            .bind(limit)
            .bind(f.min_level)
            .bind(f.worker.as_deref())
            .bind(f.job_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Up to `limit` restore jobs with an id above `after`, by id.
    pub async fn dashboard_restore_jobs(
        &self,
        after: i64,
        limit: i64,
    ) -> ApiResult<Vec<crate::rows::RestoreJobRow>> {
        Ok(sqlx::query_as(&restore_jobs_query())
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// At most `limit` rows of what is not backed up.
    pub async fn dashboard_unprotected(&self, limit: i64) -> ApiResult<Vec<Unprotected>> {
        Ok(sqlx::query_as::<_, Unprotected>(UNPROTECTED)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }
}
