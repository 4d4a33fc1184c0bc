//! The catalog side of retention: pins, the dumps a worker's retention must
//! never remove (sent with its schedule), the preview of a job's retention
//! with the worker's own rule (`pgsnapman_proto::retention`), and the expiry
//! of FAILED dump rows. The worker does the deleting; nothing here does.
use pgsnapman_proto::retention::{self, Candidate, Policy, Verdict};

use super::Catalog;
use crate::error::{ApiError, ApiResult};
use crate::rows::{self, DumpRow, JobRow};

/// Most successful dumps a preview reads for one job (a job keeping more
/// has a retention nobody previews line by line).
pub const PREVIEW_MAX_DUMPS: i64 = 10_000;

/// Dumps of a worker retention must keep: pinned ones, ones a restore job
/// still to run names (a SINGLE job without a finished run, or a REPEAT job
/// with a fixed dump), and ones a QUEUED or RUNNING restore run reads, on
/// whichever worker it runs (migration 0024 bumps the holder's schedule
/// when such a run comes or goes). `$1`: the worker holding the dumps.
const PROTECTED_SQL: &str = "SELECT d.dump_uuid::text, d.pinned FROM dumps d \
    WHERE d.worker_id = $1 AND (d.pinned OR EXISTS (SELECT 1 FROM restore_jobs r \
      WHERE r.source_dump_id = d.id AND (r.kind = 'REPEAT' OR (r.kind = 'SINGLE' \
      AND NOT EXISTS (SELECT 1 FROM restore_runs u WHERE u.restore_job_id = r.id \
      AND u.status IN ('SUCCEEDED', 'FAILED', 'ABORTED'))))) \
      OR EXISTS (SELECT 1 FROM restore_runs q WHERE q.dump_id = d.id \
      AND q.status IN ('QUEUED', 'RUNNING'))) \
    ORDER BY d.dump_uuid";

impl Catalog {
    /// Pins or unpins a stored dump; a change bumps the schedule version of
    /// the worker holding it, so its mirror (and retention) follows.
    pub async fn set_pinned(&self, dump_id: i64, pinned: bool) -> ApiResult<DumpRow> {
        let dump = self.dump(dump_id).await?;
        if dump.status == "FAILED" {
            return Err(ApiError::Precondition(format!(
                "dump {dump_id} is FAILED: it holds no data to keep"
            )));
        }
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query("UPDATE dumps SET pinned = $2 WHERE id = $1 AND pinned <> $2")
            .bind(dump_id)
            .bind(pinned)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed > 0 {
            self.bump_schedule(&mut *tx, &[dump.worker_id]).await?;
        }
        tx.commit().await?;
        self.dump(dump_id).await
    }

    /// The dump UUIDs retention on `worker_id` must keep, with whether each
    /// is pinned (else a restore job names it).
    pub async fn protected_dumps(&self, worker_id: i64) -> ApiResult<Vec<(String, bool)>> {
        Ok(sqlx::query_as(PROTECTED_SQL)
            .bind(worker_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Bumps the schedule of the worker holding `dump_id` (a restore job
    /// naming it came or went), if the dump exists.
    pub(super) async fn bump_holder_of<'e, E>(&self, exec: E, dump_id: i64) -> ApiResult<()>
    where
        E: sqlx::PgExecutor<'e>,
    {
        sqlx::query(
            "UPDATE workers SET schedule_version = schedule_version + 1 \
             WHERE id = (SELECT worker_id FROM dumps WHERE id = $1)",
        )
        .bind(dump_id)
        .execute(exec)
        .await?;
        Ok(())
    }

    /// What the next retention run of `job_id` keeps and removes: the
    /// successful dumps its worker holds, newest first, each with its
    /// verdict. Days are cut in `timezone` (empty: UTC).
    pub async fn preview_retention(
        &self,
        job_id: i64,
        timezone: &str,
    ) -> ApiResult<(JobRow, Vec<(DumpRow, Verdict)>)> {
        let tz = retention::timezone(timezone).map_err(ApiError::Invalid)?;
        let job = self.job(job_id).await?;
        let dumps: Vec<DumpRow> = sqlx::query_as(&format!(
            "SELECT {} FROM dumps d JOIN workers w ON w.id = d.worker_id \
             WHERE d.job_id = $1 AND d.worker_id = $2 AND d.status IN ('SUCCEEDED', 'REMOVING') \
             ORDER BY d.id LIMIT $3",
            rows::DUMP_COLUMNS
        ))
        .bind(job_id)
        .bind(job.worker_id)
        .bind(PREVIEW_MAX_DUMPS + 1)
        .fetch_all(&self.pool)
        .await?;
        if i64::try_from(dumps.len()).unwrap_or(i64::MAX) > PREVIEW_MAX_DUMPS {
            return Err(ApiError::Invalid(format!(
                "job {job_id} has more than {PREVIEW_MAX_DUMPS} successful dumps: too many to preview"
            )));
        }
        let protected = self.protected_dumps(job.worker_id).await?;
        let candidates: Vec<Candidate> = dumps
            .iter()
            .map(|d| {
                let uuid = d.dump_uuid.to_string();
                let named = protected.iter().any(|(u, pinned)| *u == uuid && !pinned);
                Candidate {
                    dump_uuid: uuid,
                    started_at: d.started_at,
                    pinned: d.pinned,
                    named_by_restore: named,
                }
            })
            .collect();
        let policy = job
            .to_proto()
            .retention
            .as_ref()
            .map(Policy::from)
            .unwrap_or_default();
        let verdicts = retention::apply(policy, &tz, &candidates);
        let out = verdicts
            .into_iter()
            .map(|v| (dumps[v.index].clone(), v))
            .collect();
        Ok((job, out))
    }

    /// Deletes FAILED dump rows that finished more than `keep` ago
    /// (`retention.failed_dumps`); they hold no data anywhere.
    pub async fn expire_failed_dumps(&self, keep: std::time::Duration) -> ApiResult<u64> {
        Ok(sqlx::query(
            "DELETE FROM dumps WHERE id = ANY(ARRAY(SELECT id FROM dumps \
             WHERE status = 'FAILED' AND finished_at < now() - $1::interval LIMIT $2))",
        )
        .bind(keep)
        .bind(PREVIEW_MAX_DUMPS)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}
