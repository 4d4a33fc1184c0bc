//! The catalog: every read and write of the coordinator's Postgres database.
//! The schema comes only from `coordinator/migrations/`, applied at start.
use std::time::Duration;

use anyhow::Context;
use pgsnapman_proto::v1;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::{ApiError, ApiResult};
use crate::rows::{WORKER_COLUMNS, WORKER_JOIN, WorkerRow};

mod auth;
mod copy;
pub mod dashboard;
mod discovery;
mod events;
mod identity;
mod instances;
mod jobs;
pub mod metrics;
pub mod notify;
mod ownership;
mod passwords;
mod restore;
mod retention;
mod scripts;
mod sessions;
mod store;
mod store_location;
mod tasks;
mod verify;
mod verify_schedule;

pub use auth::{AuditEntry, AuditFilter};
pub use copy::CopyJobRows;
pub use events::{BatchOutcome, Pruned};
pub use identity::{CertificateOwner, Enrollment, TokenRefused, normalize_serial};
pub use sessions::OpenRefused;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Clone)]
pub struct Catalog {
    pub pool: PgPool,
    pub max_attempts: i32,
}

impl Catalog {
    /// Connects and applies pending migrations (under sqlx's advisory lock, so
    /// several coordinators may start at once).
    pub async fn open(
        options: PgConnectOptions,
        max_connections: u32,
        max_attempts: u32,
    ) -> anyhow::Result<Self> {
        let options = options.application_name("pgsnapman-coordinator");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .context("connect to the catalog")?;
        MIGRATOR
            .run(&pool)
            .await
            .context("apply catalog migrations")?;
        Ok(Self {
            pool,
            max_attempts: i32::try_from(max_attempts).unwrap_or(3),
        })
    }

    // ───────────── workers ─────────────

    pub async fn register_worker(&self, name: &str) -> ApiResult<WorkerRow> {
        pgsnapman_proto::model::validate_worker_name(name)?;
        let res =
            sqlx::query_scalar::<_, i64>("INSERT INTO workers (name) VALUES ($1) RETURNING id")
                .bind(name)
                .fetch_one(&self.pool)
                .await;
        match res {
            Ok(id) => self.worker_by_id(id).await,
            Err(e) if crate::error::is_unique_violation(&e) => Err(ApiError::Exists(format!(
                "worker {name:?} is already registered"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_workers(&self) -> ApiResult<Vec<WorkerRow>> {
        Ok(sqlx::query_as::<_, WorkerRow>(&format!(
            "SELECT {WORKER_COLUMNS} FROM workers w {WORKER_JOIN} ORDER BY w.id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn worker_by_id(&self, id: i64) -> ApiResult<WorkerRow> {
        sqlx::query_as::<_, WorkerRow>(&format!(
            "SELECT {WORKER_COLUMNS} FROM workers w {WORKER_JOIN} WHERE w.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("worker {id} not found")))
    }

    pub async fn worker_by_name(&self, name: &str) -> ApiResult<WorkerRow> {
        sqlx::query_as::<_, WorkerRow>(&format!(
            "SELECT {WORKER_COLUMNS} FROM workers w {WORKER_JOIN} WHERE w.name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "worker {} is not registered (pgsnap worker register NAME)",
                pgsnapman_proto::model::quoted(name)
            ))
        })
    }

    /// A worker named by id or name; `None` when the reference is unset.
    pub async fn worker_ref(&self, r: Option<&v1::WorkerRef>) -> ApiResult<Option<WorkerRow>> {
        match r.and_then(|r| r.r#ref.as_ref()) {
            None => Ok(None),
            Some(v1::worker_ref::Ref::Id(id)) => self.worker_by_id(*id).await.map(Some),
            Some(v1::worker_ref::Ref::Name(name)) if name.is_empty() => Ok(None),
            Some(v1::worker_ref::Ref::Name(name)) => self.worker_by_name(name).await.map(Some),
        }
    }

    pub async fn set_worker_status(&self, id: i64, status: &str) -> ApiResult<WorkerRow> {
        sqlx::query(
            "UPDATE workers SET status = $2, schedule_version = schedule_version + 1 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .execute(&self.pool)
        .await?;
        self.worker_by_id(id).await
    }

    /// Names (or with `None` clears) the worker that runs restores of
    /// `id`'s dumps.
    pub async fn set_restore_worker(&self, id: i64, restore: Option<i64>) -> ApiResult<WorkerRow> {
        if restore == Some(id) {
            return Err(ApiError::Invalid(
                "a worker restores its own dumps anyway: clear the restore worker instead".into(),
            ));
        }
        sqlx::query("UPDATE workers SET restore_worker_id = $2 WHERE id = $1")
            .bind(id)
            .bind(restore)
            .execute(&self.pool)
            .await?;
        self.worker_by_id(id).await
    }

    /// Records what a worker said in Hello.
    pub async fn hello(
        &self,
        id: i64,
        agent_version: &str,
        client_majors: &[u32],
        outbox_backlog: u64,
        timezone: Option<&str>,
    ) -> ApiResult<()> {
        let majors: Vec<i32> = client_majors
            .iter()
            .filter_map(|m| i32::try_from(*m).ok())
            .collect();
        sqlx::query(
            "UPDATE workers SET last_seen_at = now(), agent_version = $2, client_majors = $3, \
             outbox_backlog = $4, timezone = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(agent_version)
        .bind(majors)
        .bind(i64::try_from(outbox_backlog).unwrap_or(i64::MAX))
        .bind(timezone)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn confirm_schedule(&self, id: i64, version: u64) -> ApiResult<()> {
        sqlx::query(
            "UPDATE workers SET confirmed_schedule_version = GREATEST(confirmed_schedule_version, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(i64::try_from(version).unwrap_or(0))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Bumps the schedule version of the given workers.
    pub async fn bump_schedule<'e, E>(&self, exec: E, worker_ids: &[i64]) -> ApiResult<()>
    where
        E: sqlx::PgExecutor<'e>,
    {
        sqlx::query(
            "UPDATE workers SET schedule_version = schedule_version + 1 WHERE id = ANY($1)",
        )
        .bind(worker_ids)
        .execute(exec)
        .await?;
        Ok(())
    }

    pub async fn schedule_version(&self, worker_id: i64) -> ApiResult<(i64, String)> {
        Ok(sqlx::query_as::<_, (i64, String)>(
            "SELECT schedule_version, status FROM workers WHERE id = $1",
        )
        .bind(worker_id)
        .fetch_one(&self.pool)
        .await?)
    }

    // ───────────── lease-stream sessions ─────────────

    pub async fn open_session(
        &self,
        session: uuid::Uuid,
        worker_id: i64,
        stale_after: Duration,
    ) -> ApiResult<()> {
        sqlx::query(
            "INSERT INTO worker_sessions (session_id, worker_id, stale_after) \
             VALUES ($1, $2, now() + $3)",
        )
        .bind(session)
        .bind(worker_id)
        .bind(stale_after)
        .execute(&self.pool)
        .await?;
        sqlx::query("UPDATE workers SET last_seen_at = now() WHERE id = $1")
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The worker was heard from on this session.
    pub async fn touch_session(
        &self,
        session: uuid::Uuid,
        worker_id: i64,
        stale_after: Duration,
    ) -> ApiResult<()> {
        sqlx::query(
            "UPDATE worker_sessions SET seen_at = now(), stale_after = now() + $2 WHERE session_id = $1",
        )
        .bind(session)
        .bind(stale_after)
        .execute(&self.pool)
        .await?;
        sqlx::query("UPDATE workers SET last_seen_at = now() WHERE id = $1")
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn close_session(&self, session: uuid::Uuid) -> ApiResult<()> {
        sqlx::query("DELETE FROM worker_sessions WHERE session_id = $1")
            .bind(session)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ───────────── messages ─────────────

    pub async fn add_message<'e, E>(
        &self,
        exec: E,
        level: v1::MessageLevel,
        class: &str,
        worker_id: Option<i64>,
        job_id: Option<i64>,
        text: &str,
    ) -> ApiResult<()>
    where
        E: sqlx::PgExecutor<'e>,
    {
        sqlx::query(
            "INSERT INTO messages (level, class, worker_id, job_id, text) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(level as i16)
        .bind(class)
        .bind(worker_id)
        .bind(job_id)
        .bind(text)
        .execute(exec)
        .await?;
        Ok(())
    }

    pub async fn list_messages(
        &self,
        req: &v1::ListMessagesRequest,
    ) -> ApiResult<Vec<crate::rows::MessageRow>> {
        let worker = self.worker_ref(req.worker.as_ref()).await?;
        let mut q = sqlx::QueryBuilder::new(
            "SELECT m.id, m.logged_at, m.level, m.class, m.worker_id, m.job_id, m.text, \
             w.name AS worker_name FROM messages m LEFT JOIN workers w ON w.id = m.worker_id WHERE true",
        );
        if req.min_level > 0 {
            q.push(" AND m.level >= ")
                .push_bind(i16::try_from(req.min_level).unwrap_or(5));
        }
        if let Some(w) = worker {
            q.push(" AND m.worker_id = ").push_bind(w.id);
        }
        if let Some(job) = req.job_id {
            q.push(" AND m.job_id = ").push_bind(job);
        }
        if let Some(since) = req.since.as_ref().and_then(pgsnapman_proto::from_timestamp) {
            q.push(" AND m.logged_at >= ").push_bind(since);
        }
        if let Some(class) = &req.class {
            q.push(" AND upper(m.class) = upper(")
                .push_bind(class.clone())
                .push(")");
        }
        q.push(" ORDER BY m.id DESC LIMIT ")
            .push_bind(limit(req.limit));
        let mut rows: Vec<crate::rows::MessageRow> =
            q.build_query_as().fetch_all(&self.pool).await?;
        rows.reverse();
        Ok(rows)
    }
}

/// The id an import asks for (`AddInstanceRequest.id`,
/// `AddDumpJobRequest.id`): none for 0; otherwise it must lie in the
/// standalone range and be free in `table` (docs/standalone.md).
async fn import_id(
    conn: &mut sqlx::PgConnection,
    table: ImportTable,
    id: i64,
) -> ApiResult<Option<i64>> {
    if id == 0 {
        return Ok(None);
    }
    let what = table.what();
    if !pgsnapman_proto::jobs_file::is_standalone_id(id) {
        return Err(ApiError::Invalid(format!(
            "{what} id {id} is outside the standalone range [2^40, 2^41): only a standalone \
             worker's ids may be given (leave the id out for a new one)"
        )));
    }
    let taken: bool = sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE id = $1)",
        table.name()
    ))
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    if taken {
        return Err(ApiError::Exists(format!("{what} id {id} is taken")));
    }
    Ok(Some(id))
}

/// The tables an import may give ids in.
#[derive(Debug, Clone, Copy)]
enum ImportTable {
    Instances,
    DumpJobs,
}

impl ImportTable {
    fn name(self) -> &'static str {
        match self {
            Self::Instances => "instances",
            Self::DumpJobs => "dump_jobs",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Instances => "instance",
            Self::DumpJobs => "dump job",
        }
    }
}

/// A list limit: 0 means 100, at most 10000.
pub fn limit(requested: u32) -> i64 {
    match requested {
        0 => 100,
        n => i64::from(n.min(10_000)),
    }
}
