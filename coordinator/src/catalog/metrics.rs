//! The catalog figures of the coordinator's `/metrics` (docs/metrics.md):
//! four small queries, each a count over a partial index, a few hundred
//! worker rows, or one index probe per active job. The caller bounds the time.
use chrono::{DateTime, Utc};

use super::Catalog;

/// What one scrape reads from the catalog.
#[derive(Debug, Default)]
pub struct Figures {
    /// (kind, state, count) of the tasks QUEUED or LEASED.
    pub tasks: Vec<(String, String, i64)>,
    /// (state "online"/"offline", count) of the workers not revoked.
    pub workers: Vec<(String, i64)>,
    /// (status, count) of the rows of `dumps`.
    pub dumps: Vec<(String, i64)>,
    /// The last successful dump of every ACTIVE REPEAT job.
    pub jobs: Vec<JobSuccess>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct JobSuccess {
    pub job_id: i64,
    pub instance: String,
    pub database: String,
    pub dump_type: String,
    /// When its latest successful dump finished; `None`: never.
    pub last_success: Option<DateTime<Utc>>,
}

impl Catalog {
    /// Reads the figures on one connection, one query after the other.
    pub async fn metrics_figures(&self) -> Result<Figures, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        // One branch per state: each is answered by its partial index
        // (tasks_queue, tasks_leases), whatever the size of the history.
        let tasks = sqlx::query_as(
            "SELECT kind, 'queued', count(*) FROM tasks WHERE state = 'QUEUED' GROUP BY kind \
             UNION ALL \
             SELECT kind, 'leased', count(*) FROM tasks WHERE state = 'LEASED' GROUP BY kind",
        )
        .fetch_all(&mut *conn)
        .await?;
        let workers = sqlx::query_as(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM worker_sessions s WHERE s.worker_id = w.id \
                 AND s.stale_after > now()) THEN 'online' ELSE 'offline' END, count(*) \
             FROM workers w WHERE w.revoked_at IS NULL GROUP BY 1",
        )
        .fetch_all(&mut *conn)
        .await?;
        let dumps = sqlx::query_as("SELECT status, count(*) FROM dumps GROUP BY status")
            .fetch_all(&mut *conn)
            .await?;
        // One backward walk of dumps_job (job_id, started_at) per job,
        // stopping at its newest SUCCEEDED row.
        let jobs = sqlx::query_as(
            "SELECT j.id AS job_id, i.name AS instance, j.database, j.dump_type, \
                 (SELECT d.finished_at FROM dumps d WHERE d.job_id = j.id \
                  AND d.status = 'SUCCEEDED' ORDER BY d.started_at DESC LIMIT 1) AS last_success \
             FROM dump_jobs j JOIN instances i ON i.id = j.instance_id \
             WHERE j.status = 'ACTIVE' AND j.kind = 'REPEAT' ORDER BY j.id",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(Figures {
            tasks,
            workers,
            dumps,
            jobs,
        })
    }
}
