//! Dump verification (issue 14 item 4, docs/verification.md): `VerifyDumpNow`
//! queues a VERIFY_DUMP task on the worker that stores the dump; its
//! `DumpVerified` result is kept on the dump row (migration 0021).
use chrono::{DateTime, Utc};
use pgsnapman_proto::model::{excerpt, quoted};
use pgsnapman_proto::v1;

use super::Catalog;
use super::events::Messages;
use crate::error::{ApiError, ApiResult};
use crate::rows::{self, TaskRow};

/// At most this many user checks per verification, each at most
/// `MAX_CHECK_BYTES` (docs/verification.md).
pub const MAX_CHECKS: usize = 32;
pub const MAX_CHECK_BYTES: usize = 8 * 1024;

/// What a VERIFY_DUMP task was asked (`tasks.params`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Params {
    method: String,
    #[serde(default)]
    instance_id: i64,
    #[serde(default)]
    checks: Vec<String>,
}

/// Checks a request's method and checks (pure).
fn check_request(req: &v1::VerifyDumpNowRequest) -> ApiResult<()> {
    match req.method.as_str() {
        "read" => {
            if req.instance_id != 0 || !req.checks.is_empty() {
                return Err(ApiError::Invalid(
                    "--instance and --check apply to --method restore only".into(),
                ));
            }
        }
        "restore" => {}
        other => {
            return Err(ApiError::Invalid(format!(
                "verification method {} is not one of read, restore",
                quoted(other)
            )));
        }
    }
    check_checks(&req.checks)
}

/// Checks user checks against the limits (pure): at most `MAX_CHECKS`,
/// none empty, each at most `MAX_CHECK_BYTES`.
pub(super) fn check_checks(checks: &[String]) -> ApiResult<()> {
    if checks.len() > MAX_CHECKS {
        return Err(ApiError::Invalid(format!(
            "{} checks given; at most {MAX_CHECKS}",
            checks.len()
        )));
    }
    for c in checks {
        if c.trim().is_empty() {
            return Err(ApiError::Invalid("a check is empty".into()));
        }
        if c.len() > MAX_CHECK_BYTES {
            return Err(ApiError::Invalid(format!(
                "check {} is too long; at most {MAX_CHECK_BYTES} bytes",
                quoted(c)
            )));
        }
    }
    Ok(())
}

impl Catalog {
    /// Queues a VERIFY_DUMP task on the worker that stores the dump.
    pub async fn verify_dump_now(&self, req: &v1::VerifyDumpNowRequest) -> ApiResult<TaskRow> {
        check_request(req)?;
        let dump = self.dump(req.dump_id).await?;
        if dump.status != "SUCCEEDED" {
            return Err(ApiError::Precondition(format!(
                "dump {} is {}, not a dump to verify",
                dump.id, dump.status
            )));
        }
        let mut instance_id = 0;
        if req.method == "restore" {
            if v1::DumpType::from_label(&dump.dump_type).is_some_and(v1::DumpType::is_cluster_wide)
            {
                return Err(ApiError::Precondition(format!(
                    "dump {} is a cluster dump: it can be verified with --method read only",
                    dump.id
                )));
            }
            instance_id = if req.instance_id == 0 {
                dump.instance_id
            } else {
                req.instance_id
            };
            let instance = self.instance(instance_id).await.map_err(|e| match e {
                ApiError::NotFound(_) => {
                    ApiError::NotFound(format!("instance {instance_id} not found"))
                }
                other => other,
            })?;
            if instance.status == "HALTED" {
                return Err(ApiError::Precondition(format!(
                    "instance {} ({}) is halted",
                    instance.id, instance.name
                )));
            }
        }
        let worker = self.worker_by_id(dump.worker_id).await?;
        if worker.status == "HALTED" {
            return Err(ApiError::Precondition(format!(
                "worker {} that stores dump {} is halted",
                worker.name, dump.id
            )));
        }
        let params = Params {
            method: req.method.clone(),
            instance_id,
            checks: req.checks.clone(),
        };
        let params = serde_json::to_value(&params).map_err(|e| ApiError::Internal(e.into()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tasks (kind, worker_id, dump_id, max_attempts, origin, params) \
             VALUES ('VERIFY_DUMP', $1, $2, $3, 'ADHOC', $4) RETURNING id",
        )
        .bind(worker.id)
        .bind(dump.id)
        .bind(self.max_attempts)
        .bind(params)
        .fetch_one(&self.pool)
        .await?;
        self.task(id).await
    }

    /// What the worker needs to run a leased VERIFY_DUMP task.
    pub(super) async fn verify_dump_spec(&self, task: &TaskRow) -> ApiResult<v1::VerifyDumpSpec> {
        let dump_id = task
            .dump_id
            .ok_or_else(|| ApiError::Invalid(format!("verify task {} names no dump", task.id)))?;
        let params: Option<sqlx::types::Json<Params>> =
            sqlx::query_scalar("SELECT params FROM tasks WHERE id = $1")
                .bind(task.id)
                .fetch_one(&self.pool)
                .await?;
        let params = params
            .ok_or_else(|| ApiError::Invalid(format!("verify task {} has no parameters", task.id)))?
            .0;
        let dump = self.dump(dump_id).await?;
        if dump.worker_id != task.worker_id {
            return Err(ApiError::Forbidden(format!(
                "verify task {}: dump {dump_id} is in worker {}'s store, not this worker's",
                task.id, dump.worker_name
            )));
        }
        let mut spec = v1::VerifyDumpSpec {
            dump_uuid: dump.dump_uuid.to_string(),
            method: params.method.clone(),
            dump_type: rows::dump_type_value(&dump.dump_type),
            format: rows::format_value(&dump.format),
            instance: None,
            expected_rows: Vec::new(),
            rows_counted: dump.table_rows_counted,
            checks: params.checks,
        };
        if params.method == "restore" {
            let instance = self.instance(params.instance_id).await?;
            spec.instance = Some(self.connection_for(&instance, task.worker_id).await?);
            spec.expected_rows = self.dump_table_rows(dump_id).await?;
        }
        Ok(spec)
    }

    /// Keeps a verification's result on its dump row and completes its
    /// task; a failure is an ERROR message naming the tables and checks.
    pub(super) async fn apply_dump_verified(
        &self,
        tx: &mut sqlx::PgTransaction<'_>,
        worker_id: i64,
        v: &v1::DumpVerified,
        at: DateTime<Utc>,
        msgs: &mut Messages,
    ) -> ApiResult<()> {
        let what = if v.job_id != 0 {
            format!(
                "scheduled verification (job {}) of dump {} by {}",
                v.job_id, v.dump_uuid, v.method
            )
        } else {
            format!("verification of dump {} by {}", v.dump_uuid, v.method)
        };
        let job_id = (v.job_id != 0).then_some(v.job_id);
        let error = if v.ok {
            String::new()
        } else {
            failure_text(&what, v)
        };
        // A scheduled verification has no task: its result always applies.
        let applies = match v.task.as_ref() {
            None => true,
            Some(t) => self
                .finish_task(tx, Some(t), v.ok, None, &error, None)
                .await?
                .applied(),
        };
        let task_id = v.task.as_ref().map_or(0, |t| t.task_id);
        if !applies {
            msgs.push(
                v1::MessageLevel::Warning,
                "VERIFY",
                None,
                format!("stale result of dump verification task {task_id} ignored"),
                at,
            );
            return Ok(());
        }
        let mismatches: Vec<serde_json::Value> = v
            .mismatches
            .iter()
            .map(|m| {
                serde_json::json!({"schema": m.schema, "table": m.table,
                    "expected": m.expected, "found": m.found})
            })
            .collect();
        let detail = serde_json::json!({
            "error": v.error,
            "mismatches": mismatches,
            "failed_checks": v.failed_checks,
            "tables_checked": v.tables_checked,
        });
        let uuid = uuid::Uuid::parse_str(&v.dump_uuid)
            .map_err(|e| ApiError::Invalid(format!("dump uuid {}: {e}", quoted(&v.dump_uuid))))?;
        let _: Option<i64> = sqlx::query_scalar(
            "UPDATE dumps SET restore_verified_method = $3, restore_verified_at = $4, \
             restore_verified_ok = $5, restore_verified_detail = $6 \
             WHERE dump_uuid = $1 AND worker_id = $2 RETURNING id",
        )
        .bind(uuid)
        .bind(worker_id)
        .bind(&v.method)
        .bind(at)
        .bind(v.ok)
        .bind(&detail)
        .fetch_optional(&mut **tx)
        .await?;
        if v.ok {
            msgs.push(
                v1::MessageLevel::Info,
                "VERIFY",
                job_id,
                format!("{what} succeeded ({} table(s) compared)", v.tables_checked),
                at,
            );
        } else {
            msgs.push(v1::MessageLevel::Error, "VERIFY", job_id, error, at);
        }
        Ok(())
    }
}

/// The ERROR message of a failed verification: the error, each table whose
/// count differs, each check that failed.
fn failure_text(what: &str, v: &v1::DumpVerified) -> String {
    let mut parts = Vec::new();
    if !v.error.is_empty() {
        parts.push(v.error.clone());
    }
    for m in &v.mismatches {
        let found = if m.found < 0 {
            "missing".to_string()
        } else {
            format!("{} row(s)", m.found)
        };
        parts.push(format!(
            "table {}.{}: expected {} row(s), found {found}",
            m.schema, m.table, m.expected
        ));
    }
    for c in &v.failed_checks {
        parts.push(format!("check failed: {}", excerpt(c)));
    }
    format!("{what} FAILED: {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, checks: &[&str]) -> v1::VerifyDumpNowRequest {
        v1::VerifyDumpNowRequest {
            dump_id: 1,
            method: method.into(),
            instance_id: 0,
            checks: checks.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn requests_are_checked() {
        assert!(check_request(&req("read", &[])).is_ok());
        assert!(check_request(&req("restore", &["SELECT true"])).is_ok());
        let e = check_request(&req("copy", &[])).unwrap_err().to_string();
        assert!(e.contains("\"copy\" is not one of read, restore"), "{e}");
        assert!(check_request(&req("read", &["SELECT true"])).is_err());
        assert!(check_request(&req("restore", &[" "])).is_err());
        let long = "x".repeat(MAX_CHECK_BYTES + 1);
        let e = check_request(&req("restore", &[&long]))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400 && e.contains('…'), "{e}");
        let many = vec!["SELECT true"; MAX_CHECKS + 1];
        assert!(check_request(&req("restore", &many)).is_err());
    }

    #[test]
    fn failures_name_tables_and_checks() {
        let v = v1::DumpVerified {
            ok: false,
            mismatches: vec![v1::RowMismatch {
                schema: "s".into(),
                table: "t".into(),
                expected: 3,
                found: -1,
            }],
            failed_checks: vec!["SELECT false".into()],
            ..Default::default()
        };
        let t = failure_text("dump 1", &v);
        assert!(
            t.contains("table s.t: expected 3 row(s), found missing"),
            "{t}"
        );
        assert!(t.contains("check failed: SELECT false"), "{t}");
    }
}
