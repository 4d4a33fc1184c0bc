//! Copy jobs (a dump job whose every successful dump triggers restores onto
//! one or more targets) and server restores (every database of an instance
//! onto another, each from its latest good dump).
use pgsnapman_proto::v1;

use super::Catalog;
use crate::error::{ApiError, ApiResult};
use crate::rows::{DUMP_COLUMNS, DumpRow, JobRow, RestoreJobRow};

/// A copy job as the catalog holds it.
pub struct CopyJobRows {
    pub dump_job: JobRow,
    pub restore_jobs: Vec<RestoreJobRow>,
    pub last_dump: Option<DumpRow>,
}

impl Catalog {
    /// Creates the dump job (halted while its restores are added, so no
    /// dump can run without them) and one TRIGGER restore job per target,
    /// then gives the dump job the status asked for. Every target is checked
    /// before anything is created; if a later step fails, what was created
    /// is removed again.
    pub async fn add_copy_job(&self, req: &v1::AddCopyJobRequest) -> ApiResult<CopyJobRows> {
        let dump_req = req
            .dump
            .as_ref()
            .ok_or_else(|| ApiError::Invalid("a copy job needs its dump job".into()))?;
        if req.targets.is_empty() {
            return Err(ApiError::Invalid(
                "a copy job needs at least one target".into(),
            ));
        }
        if dump_req.kind == v1::JobKind::Single as i32 {
            return Err(ApiError::Invalid(
                "a copy job repeats: its dump job cannot be SINGLE (use pgsnap restore now for one copy)"
                    .into(),
            ));
        }
        let mut targets = Vec::with_capacity(req.targets.len());
        for t in &req.targets {
            let t = self.checked_target(Some(t)).await?;
            check_not_own_source(dump_req, &t)?;
            targets.push(t);
        }
        let status = match dump_req.status {
            0 => "ACTIVE",
            s => crate::rows::status_label(s)?,
        };
        let mut halted = dump_req.clone();
        halted.status = v1::Status::Halted as i32;
        if halted.comment.is_empty() {
            halted.comment.clone_from(&req.comment);
        }
        let job = self.add_job(&halted).await?;
        let mut restore_jobs = Vec::with_capacity(targets.len());
        for target in targets {
            let added = self
                .add_restore_job(&v1::AddRestoreJobRequest {
                    kind: v1::RestoreJobKind::Trigger as i32,
                    source_job_id: job.id,
                    source_dump_id: 0,
                    target: Some(target),
                    cron: String::new(),
                    run_at: None,
                    status: 0,
                    comment: req.comment.clone(),
                })
                .await;
            match added {
                Ok(r) => restore_jobs.push(r),
                Err(e) => {
                    for r in &restore_jobs {
                        let _ = self.remove_restore_job(r.id).await;
                    }
                    let _ = self.remove_job(job.id).await;
                    return Err(e);
                }
            }
        }
        let dump_job = self.set_job_status(job.id, status).await?;
        Ok(CopyJobRows {
            dump_job,
            restore_jobs,
            last_dump: None,
        })
    }

    /// Every dump job with TRIGGER restore jobs, with its latest dump.
    pub async fn list_copy_jobs(&self) -> ApiResult<Vec<CopyJobRows>> {
        let job_ids: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT r.source_job_id FROM restore_jobs r JOIN dump_jobs j ON j.id = r.source_job_id \
             WHERE r.kind = 'TRIGGER' ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(job_ids.len());
        for id in job_ids {
            let dump_job = self.job(id).await?;
            let restore_jobs = self
                .list_restore_jobs(&v1::ListRestoreJobsRequest {
                    source_job_id: Some(id),
                    target_instance_id: None,
                })
                .await?
                .into_iter()
                .filter(|r| r.kind == "TRIGGER")
                .collect();
            let last_dump = self.last_dump(id).await?;
            out.push(CopyJobRows {
                dump_job,
                restore_jobs,
                last_dump,
            });
        }
        Ok(out)
    }

    /// The newest dump of a dump job, whatever its status (by
    /// `dumps_job (job_id, started_at)`).
    pub async fn last_dump(&self, job_id: i64) -> ApiResult<Option<DumpRow>> {
        Ok(sqlx::query_as::<_, DumpRow>(&format!(
            "SELECT {DUMP_COLUMNS} FROM dumps d JOIN workers w ON w.id = d.worker_id \
             WHERE d.job_id = $1 ORDER BY d.started_at DESC, d.id DESC LIMIT 1"
        ))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// One SINGLE restore job (as soon as possible) per database of the
    /// source instance that has a successful whole-database FULL dump, from
    /// the latest one, onto the target instance under the same name. The
    /// target's maintenance database and template databases are left out.
    /// UNSPECIFIED existing_database means LEAVE here: a server restore does
    /// not replace databases unless told to.
    pub async fn restore_server(
        &self,
        req: &v1::RestoreServerRequest,
    ) -> ApiResult<(Vec<RestoreJobRow>, Vec<String>)> {
        let source = self.instance(req.source_instance_id).await?;
        let mut base = req.target.clone().unwrap_or_default();
        if !base.database.is_empty() || !base.schema.is_empty() {
            return Err(ApiError::Invalid(
                "a server restore keeps every database's name and restores all schemas: give no database or schema"
                    .into(),
            ));
        }
        if base.existing_database == 0 {
            base.existing_database = v1::ExistingDatabase::Leave as i32;
        }
        let base = self.checked_target(Some(&base)).await?;
        let target = self.instance(base.instance_id).await?;
        if target.id == source.id {
            return Err(ApiError::Invalid(
                "a server restore copies onto another instance".into(),
            ));
        }
        let latest: Vec<DumpRow> = sqlx::query_as(&format!(
            "SELECT DISTINCT ON (d.database) {DUMP_COLUMNS} FROM dumps d JOIN workers w ON w.id = d.worker_id \
             WHERE d.instance_id = $1 AND d.status = 'SUCCEEDED' AND d.dump_type = 'FULL' \
             AND d.schema_name = '' ORDER BY d.database, d.finished_at DESC, d.id DESC"
        ))
        .bind(source.id)
        .fetch_all(&self.pool)
        .await?;
        let without: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT d.database FROM dumps d WHERE d.instance_id = $1 AND d.database <> '' \
             AND NOT EXISTS (SELECT 1 FROM dumps g WHERE g.instance_id = d.instance_id \
             AND g.database = d.database AND g.status = 'SUCCEEDED' AND g.dump_type = 'FULL' \
             AND g.schema_name = '') ORDER BY 1",
        )
        .bind(source.id)
        .fetch_all(&self.pool)
        .await?;
        let mut skipped: Vec<String> = without
            .into_iter()
            .map(|d| format!("{d}: no successful whole-database FULL dump"))
            .collect();
        let mut jobs = Vec::new();
        for dump in latest {
            if dump.database == target.maintenance_db || dump.database.starts_with("template") {
                skipped.push(format!(
                    "{}: the target's maintenance or a template database",
                    dump.database
                ));
                continue;
            }
            let mut t = base.clone();
            t.database.clone_from(&dump.database);
            jobs.push(
                self.add_restore_job(&v1::AddRestoreJobRequest {
                    kind: v1::RestoreJobKind::Single as i32,
                    source_job_id: 0,
                    source_dump_id: dump.id,
                    target: Some(t),
                    cron: String::new(),
                    run_at: None,
                    status: 0,
                    comment: format!("server restore from instance {}", source.name),
                })
                .await?,
            );
        }
        Ok((jobs, skipped))
    }
}

/// Refuses a copy onto the database it copies (same instance, same
/// database; for a cluster-wide dump, same instance): every dump would be
/// restored over the database it was just taken from.
fn check_not_own_source(dump: &v1::AddDumpJobRequest, t: &v1::RestoreTarget) -> ApiResult<()> {
    if t.instance_id != dump.instance_id {
        return Ok(());
    }
    let cluster_wide = v1::DumpType::try_from(dump.dump_type).is_ok_and(|d| d.is_cluster_wide());
    let database = if t.database.is_empty() {
        &dump.database
    } else {
        &t.database
    };
    if cluster_wide || *database == dump.database {
        return Err(ApiError::Invalid(
            "a copy target is the copy job's own source (same instance and database): every dump would be restored over the database it was taken from; name another database or instance"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_onto_its_own_source_is_refused() {
        let dump = v1::AddDumpJobRequest {
            instance_id: 1,
            database: "app".into(),
            ..Default::default()
        };
        let target = |instance_id, database: &str| v1::RestoreTarget {
            instance_id,
            database: database.into(),
            ..Default::default()
        };
        assert!(check_not_own_source(&dump, &target(1, "app")).is_err());
        assert!(check_not_own_source(&dump, &target(1, "")).is_err());
        assert!(check_not_own_source(&dump, &target(1, "app_test")).is_ok());
        assert!(check_not_own_source(&dump, &target(2, "app")).is_ok());
        let globals = v1::AddDumpJobRequest {
            dump_type: v1::DumpType::Globals as i32,
            database: String::new(),
            ..dump
        };
        assert!(check_not_own_source(&globals, &target(1, "")).is_err());
        assert!(check_not_own_source(&globals, &target(2, "")).is_ok());
    }
}
