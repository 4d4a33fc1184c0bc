//! Registered scripts (docs/scripts.md): add a version, list, read, remove
//! (refused while a job runs it), and what a worker's schedule and dump
//! tasks carry of them. Contents are checked here, never run.
use chrono::{DateTime, Utc};
use pgsnapman_proto::script::{
    MAX_SCRIPT_BYTES_PER_WORKER, content_hash, validate_content, validate_name,
};
use pgsnapman_proto::{timestamp, v1};

use super::Catalog;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScriptRow {
    pub name: String,
    pub hash: String,
    pub size_bytes: i32,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub job_ids: Vec<i64>,
}

const COLUMNS: &str = "s.name, s.hash, octet_length(s.content) AS size_bytes, s.comment, \
    s.created_at, s.updated_at, \
    COALESCE((SELECT array_agg(j.id ORDER BY j.id) FROM dump_jobs j WHERE j.script_name = s.name), '{}') AS job_ids";

impl ScriptRow {
    pub fn to_proto(&self, content: Vec<u8>) -> v1::Script {
        v1::Script {
            name: self.name.clone(),
            hash: self.hash.clone(),
            size_bytes: u64::try_from(self.size_bytes).unwrap_or(0),
            comment: self.comment.clone(),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            content,
            job_ids: self.job_ids.clone(),
        }
    }
}

impl Catalog {
    /// Registers `name`, or replaces its content (a new hash) and comment.
    /// The workers whose jobs run it get the new version with their
    /// schedule.
    pub async fn add_script(&self, req: &v1::AddScriptRequest) -> ApiResult<ScriptRow> {
        validate_name(&req.name)?;
        validate_content(&req.name, &req.content)?;
        let hash = content_hash(&req.content);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO scripts (name, content, hash, comment) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET content = EXCLUDED.content, hash = EXCLUDED.hash, \
             comment = EXCLUDED.comment, updated_at = now()",
        )
        .bind(&req.name)
        .bind(&req.content)
        .bind(&hash)
        .bind(&req.comment)
        .execute(&mut *tx)
        .await?;
        let workers: Vec<i64> =
            sqlx::query_scalar("SELECT DISTINCT worker_id FROM dump_jobs WHERE script_name = $1")
                .bind(&req.name)
                .fetch_all(&mut *tx)
                .await?;
        self.check_script_budget(&mut tx, &workers).await?;
        self.bump_schedule(&mut *tx, &workers).await?;
        tx.commit().await?;
        self.script(&req.name).await
    }

    pub async fn script(&self, name: &str) -> ApiResult<ScriptRow> {
        validate_name(name)?;
        sqlx::query_as::<_, ScriptRow>(&format!(
            "SELECT {COLUMNS} FROM scripts s WHERE s.name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("script {name:?} is not registered")))
    }

    /// The script's current content and hash.
    pub async fn script_source(&self, name: &str) -> ApiResult<v1::ScriptSource> {
        let (content, hash): (Vec<u8>, String) =
            sqlx::query_as("SELECT content, hash FROM scripts WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("script {name:?} is not registered")))?;
        Ok(v1::ScriptSource {
            name: name.to_string(),
            content,
            hash,
        })
    }

    pub async fn list_scripts(&self) -> ApiResult<Vec<ScriptRow>> {
        Ok(sqlx::query_as::<_, ScriptRow>(&format!(
            "SELECT {COLUMNS} FROM scripts s ORDER BY s.name"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes a script no job runs.
    pub async fn remove_script(&self, name: &str) -> ApiResult<()> {
        let row = self.script(name).await?;
        if !row.job_ids.is_empty() {
            return Err(ApiError::Precondition(in_use(name, &row.job_ids)));
        }
        let restore_jobs: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM restore_jobs WHERE script_name = $1 ORDER BY id LIMIT 11",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        if !restore_jobs.is_empty() {
            return Err(ApiError::Precondition(
                in_use(name, &restore_jobs).replace("dump job(s)", "restore job(s)"),
            ));
        }
        let res = sqlx::query("DELETE FROM scripts WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await;
        match res {
            // A job added since the check above.
            Err(e) if crate::error::is_fk_violation(&e) => Err(ApiError::Precondition(format!(
                "script {name:?} is used by a dump or restore job: remove or change the job first"
            ))),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(()),
        }
    }

    /// The scripts the SCRIPT jobs among `jobs` run (each once).
    pub async fn scripts_of_jobs(
        &self,
        jobs: &[crate::rows::JobRow],
    ) -> ApiResult<Vec<v1::ScriptSource>> {
        let mut names: Vec<String> = jobs.iter().filter_map(|j| j.script_name.clone()).collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, Vec<u8>, String)> = sqlx::query_as(
            "SELECT name, content, hash FROM scripts WHERE name = ANY($1) ORDER BY name",
        )
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, content, hash)| v1::ScriptSource {
                name,
                content,
                hash,
            })
            .collect())
    }

    /// Refuses (in `tx`, before its commit) a change that makes the scripts
    /// of one of `workers`' jobs larger than
    /// [`MAX_SCRIPT_BYTES_PER_WORKER`] in all: they travel in its schedule.
    pub(super) async fn check_script_budget(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        workers: &[i64],
    ) -> ApiResult<()> {
        let over: Option<(String, i64)> = sqlx::query_as(
            "SELECT w.name, sum(octet_length(s.content))::bigint FROM workers w \
             JOIN (SELECT DISTINCT worker_id, script_name FROM dump_jobs WHERE script_name IS NOT NULL) j \
               ON j.worker_id = w.id \
             JOIN scripts s ON s.name = j.script_name \
             WHERE w.id = ANY($1) GROUP BY w.name HAVING sum(octet_length(s.content)) > $2 LIMIT 1",
        )
        .bind(workers)
        .bind(i64::try_from(MAX_SCRIPT_BYTES_PER_WORKER).unwrap_or(i64::MAX))
        .fetch_optional(&mut **tx)
        .await?;
        match over {
            Some((worker, bytes)) => Err(ApiError::Invalid(format!(
                "the scripts of worker {worker}'s jobs would hold {bytes} bytes, more than the \
                 {MAX_SCRIPT_BYTES_PER_WORKER} bytes (8 MiB) a worker's schedule carries"
            ))),
            None => Ok(()),
        }
    }

    /// Checks that `name` is registered (for a SCRIPT job).
    pub(super) async fn require_script(&self, name: &str) -> ApiResult<()> {
        validate_name(name)?;
        let found: Option<String> = sqlx::query_scalar("SELECT name FROM scripts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        if found.is_none() {
            return Err(ApiError::NotFound(format!(
                "script {name:?} is not registered (pgsnap script add {name} FILE)"
            )));
        }
        Ok(())
    }
}

fn in_use(name: &str, jobs: &[i64]) -> String {
    let ids: Vec<String> = jobs.iter().take(10).map(i64::to_string).collect();
    let more = if jobs.len() > 10 { ", …" } else { "" };
    format!(
        "script {name:?} is used by dump job(s) {}{more}: remove those jobs or point them at another script first",
        ids.join(", ")
    )
}
