//! The catalog side of the workers' pack stores: deleting a dump (through a
//! DELETE task on its worker), verification and rebuild tasks, the figures
//! workers report, and applying the store events they upload.
use chrono::{DateTime, Utc};
use pgsnapman_proto::v1;

use super::Catalog;
use crate::error::{ApiError, ApiResult};
use crate::rows::{StoreStatsRow, TaskRow};

impl Catalog {
    /// Deletes a dump. A FAILED dump has no data anywhere: its row goes at
    /// once and no task is needed (`None`). A stored dump is marked REMOVING
    /// and a DELETE task is queued on the worker that holds it; the row goes
    /// when the worker reports the deletion.
    pub async fn delete_dump(&self, dump_id: i64) -> ApiResult<Option<TaskRow>> {
        let dump = self.dump(dump_id).await?;
        let restoring: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE kind = 'RESTORE' AND dump_id = $1 \
             AND state IN ('QUEUED', 'LEASED') LIMIT 1",
        )
        .bind(dump_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(task) = restoring {
            return Err(ApiError::Precondition(format!(
                "dump {dump_id} is being restored (task {task}); delete it when that ends"
            )));
        }
        if dump.status == "FAILED" {
            sqlx::query("DELETE FROM dumps WHERE id = $1")
                .bind(dump_id)
                .execute(&self.pool)
                .await?;
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE dumps SET status = 'REMOVING' WHERE id = $1")
            .bind(dump_id)
            .execute(&mut *tx)
            .await?;
        let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO tasks (kind, worker_id, job_id, dump_id, max_attempts) \
             VALUES ('DELETE', $1, NULLIF($2, 0), $3, $4) RETURNING id",
        )
        .bind(dump.worker_id)
        .bind(dump.job_id)
        .bind(dump_id)
        .bind(self.max_attempts)
        .fetch_one(&mut *tx)
        .await;
        let id = match inserted {
            Ok(id) => id,
            Err(e) if crate::error::is_unique_violation(&e) => {
                return Err(ApiError::Exists(format!(
                    "dump {dump_id} is already being deleted (see pgsnap task list --worker {})",
                    dump.worker_name
                )));
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        self.task(id).await.map(Some)
    }

    /// Queues a VERIFY or REBUILD task on a worker.
    pub async fn store_task(&self, r: Option<&v1::WorkerRef>, kind: &str) -> ApiResult<TaskRow> {
        let worker = self
            .worker_ref(r)
            .await?
            .ok_or_else(|| ApiError::Invalid("name the worker by id or name".into()))?;
        if worker.status == "HALTED" {
            return Err(ApiError::Precondition(format!(
                "worker {} is halted",
                worker.name
            )));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tasks (kind, worker_id, max_attempts) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(kind)
        .bind(worker.id)
        .bind(self.max_attempts)
        .fetch_one(&self.pool)
        .await?;
        self.task(id).await
    }

    pub async fn list_store_stats(
        &self,
        r: Option<&v1::WorkerRef>,
    ) -> ApiResult<Vec<StoreStatsRow>> {
        let worker = self.worker_ref(r).await?;
        Ok(sqlx::query_as::<_, StoreStatsRow>(
            "SELECT s.worker_id, w.name AS worker_name, s.reported_at, s.packs, s.pack_bytes, \
             s.chunks, s.unique_raw_bytes, s.stored_bytes, s.dumps, s.logical_bytes, s.free_bytes, \
             s.backend, s.backend_location, s.cache_bytes, s.cache_limit, s.encrypted, s.key_id \
             FROM store_stats s JOIN workers w ON w.id = s.worker_id \
             WHERE $1::bigint IS NULL OR s.worker_id = $1 ORDER BY s.worker_id",
        )
        .bind(worker.map(|w| w.id))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Keeps the newest figures a worker reported.
    pub(super) async fn apply_store_stats(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        s: &v1::StoreStats,
        at: DateTime<Utc>,
    ) -> ApiResult<()> {
        let big = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let reported = s
            .reported_at
            .as_ref()
            .and_then(pgsnapman_proto::from_timestamp)
            .unwrap_or(at);
        sqlx::query(
            "INSERT INTO store_stats (worker_id, reported_at, packs, pack_bytes, chunks, \
             unique_raw_bytes, stored_bytes, dumps, logical_bytes, free_bytes, \
             backend, backend_location, cache_bytes, cache_limit, encrypted, key_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (worker_id) DO UPDATE SET reported_at = EXCLUDED.reported_at, \
             packs = EXCLUDED.packs, pack_bytes = EXCLUDED.pack_bytes, chunks = EXCLUDED.chunks, \
             unique_raw_bytes = EXCLUDED.unique_raw_bytes, stored_bytes = EXCLUDED.stored_bytes, \
             dumps = EXCLUDED.dumps, logical_bytes = EXCLUDED.logical_bytes, \
             free_bytes = EXCLUDED.free_bytes, backend = EXCLUDED.backend, \
             backend_location = EXCLUDED.backend_location, cache_bytes = EXCLUDED.cache_bytes, \
             cache_limit = EXCLUDED.cache_limit, encrypted = EXCLUDED.encrypted, \
             key_id = EXCLUDED.key_id \
             WHERE store_stats.reported_at <= EXCLUDED.reported_at",
        )
        .bind(worker_id)
        .bind(reported)
        .bind(big(s.packs))
        .bind(big(s.pack_bytes))
        .bind(big(s.chunks))
        .bind(big(s.unique_raw_bytes))
        .bind(big(s.stored_bytes))
        .bind(big(s.dumps))
        .bind(big(s.logical_bytes))
        .bind(big(s.free_bytes))
        .bind(if s.backend.is_empty() {
            "local"
        } else {
            &s.backend
        })
        .bind(&s.backend_location)
        .bind(big(s.cache_bytes))
        .bind(big(s.cache_limit))
        .bind(s.encrypted)
        .bind(&s.key_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Removes the rows of dumps the worker deleted from its store. Returns
    /// how many rows went.
    pub(super) async fn apply_dumps_deleted(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        d: &v1::DumpsDeleted,
    ) -> ApiResult<u64> {
        let uuids = parse_uuids(&d.dump_uuids);
        Ok(
            sqlx::query("DELETE FROM dumps WHERE worker_id = $1 AND dump_uuid = ANY($2)")
                .bind(worker_id)
                .bind(&uuids)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        )
    }

    /// Sets the stored bytes of the worker's own dumps it compressed after
    /// storing them (a row of another worker, or one already gone, is left
    /// alone).
    pub(super) async fn apply_dumps_compressed(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        c: &v1::DumpsCompressed,
    ) -> ApiResult<()> {
        for d in &c.dumps {
            let Ok(uuid) = uuid::Uuid::parse_str(&d.dump_uuid) else {
                continue;
            };
            let bytes = i64::try_from(d.stored_bytes).unwrap_or(i64::MAX);
            sqlx::query(
                "UPDATE dumps SET stored_bytes = $3 WHERE worker_id = $1 AND dump_uuid = $2",
            )
            .bind(worker_id)
            .bind(uuid)
            .bind(bytes)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Marks the verified dumps YES or FAILED. Returns the catalog ids of
    /// the failed ones.
    pub(super) async fn apply_store_verified(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        v: &v1::StoreVerified,
        at: DateTime<Utc>,
    ) -> ApiResult<Vec<i64>> {
        sqlx::query(
            "UPDATE dumps SET verified = 'YES', verified_at = $3 \
             WHERE worker_id = $1 AND dump_uuid = ANY($2)",
        )
        .bind(worker_id)
        .bind(parse_uuids(&v.good_dump_uuids))
        .bind(at)
        .execute(&mut **tx)
        .await?;
        Ok(sqlx::query_scalar(
            "UPDATE dumps SET verified = 'FAILED', verified_at = $3 \
             WHERE worker_id = $1 AND dump_uuid = ANY($2) RETURNING id",
        )
        .bind(worker_id)
        .bind(parse_uuids(&v.bad_dump_uuids))
        .bind(at)
        .fetch_all(&mut **tx)
        .await?)
    }
}

/// The UUIDs among `texts`; anything else is skipped (it cannot match a row).
fn parse_uuids(texts: &[String]) -> Vec<uuid::Uuid> {
    texts
        .iter()
        .filter_map(|t| uuid::Uuid::parse_str(t).ok())
        .collect()
}
