//! A dump job's scheduled verification settings (migration 0022,
//! docs/verification.md): checked here on add and edit; the worker fires
//! them from its mirrored schedule. Who may set checks is the Admin
//! service's rule (admin only), not this module's.
use pgsnapman_proto::model::{CronExpr, quoted};
use pgsnapman_proto::v1;

use super::Catalog;
use super::verify::check_checks;
use crate::error::{ApiError, ApiResult};
use crate::rows::JobRow;

/// The columns `verify_cron`, `verify_method`, `verify_instance_id` and
/// `verify_checks` of one job, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Settings {
    /// Normalised five-field cron; empty: off.
    pub cron: String,
    pub method: String,
    pub instance_id: Option<i64>,
    pub checks: Vec<String>,
}

impl Settings {
    /// What a job row holds now.
    pub fn of(job: &JobRow) -> Self {
        Self {
            cron: job.verify_cron.clone(),
            method: job.verify_method.clone(),
            instance_id: job.verify_instance_id,
            checks: job.verify_checks.clone(),
        }
    }

    /// Off: no cron, read, nothing else.
    pub fn off() -> Self {
        Self {
            cron: String::new(),
            method: "read".into(),
            instance_id: None,
            checks: Vec::new(),
        }
    }

    /// The settings of a new job.
    pub fn of_add(req: &v1::AddDumpJobRequest) -> ApiResult<Self> {
        Self::off().changed(
            Some(&req.verify_cron),
            Some(&req.verify_method),
            Some(req.verify_instance_id),
            Some(&req.verify_checks),
        )
    }

    /// These settings with an edit's changes (`None`: unchanged).
    pub fn of_update(job: &JobRow, req: &v1::UpdateDumpJobRequest) -> ApiResult<Self> {
        if req.no_verify {
            if req.verify_cron.is_some()
                || req.verify_method.is_some()
                || req.verify_instance_id.is_some()
                || req.verify_checks.is_some()
            {
                return Err(ApiError::Invalid(
                    "--no-verify turns scheduled verification off: give no other --verify-* flag"
                        .into(),
                ));
            }
            return Ok(Self::off());
        }
        Self::of(job).changed(
            req.verify_cron.as_ref(),
            req.verify_method.as_ref(),
            req.verify_instance_id,
            req.verify_checks.as_ref().map(|c| &c.checks),
        )
    }

    /// Applies changes and checks the result (pure).
    fn changed(
        mut self,
        cron: Option<&String>,
        method: Option<&String>,
        instance_id: Option<i64>,
        checks: Option<&Vec<String>>,
    ) -> ApiResult<Self> {
        if let Some(c) = cron {
            self.cron = if c.trim().is_empty() {
                String::new()
            } else {
                CronExpr::parse(c)
                    .map_err(|e| ApiError::Invalid(format!("verify cron: {e}")))?
                    .as_str()
                    .to_string()
            };
        }
        if let Some(m) = method {
            self.method = match m.as_str() {
                "" | "read" => "read".into(),
                "restore" => "restore".into(),
                other => {
                    return Err(ApiError::Invalid(format!(
                        "verification method {} is not one of read, restore",
                        quoted(other)
                    )));
                }
            };
        }
        if let Some(i) = instance_id {
            self.instance_id = (i != 0).then_some(i);
        }
        if let Some(c) = checks {
            check_checks(c)?;
            self.checks = c.clone();
        }
        if self.method == "read" && (self.instance_id.is_some() || !self.checks.is_empty()) {
            return Err(ApiError::Invalid(
                "--verify-instance and --verify-check apply to --verify-method restore only".into(),
            ));
        }
        Ok(self)
    }

    /// Checks what needs the catalog: a restore verification needs a
    /// database dump and an existing instance.
    pub async fn check_against(&self, catalog: &Catalog, dump_type: v1::DumpType) -> ApiResult<()> {
        if self.method != "restore" {
            return Ok(());
        }
        if dump_type.is_cluster_wide() {
            return Err(ApiError::Invalid(format!(
                "a {} job's dumps can be verified with --verify-method read only",
                dump_type.label()
            )));
        }
        if let Some(id) = self.instance_id {
            catalog.instance(id).await.map_err(|e| match e {
                ApiError::NotFound(_) => {
                    ApiError::NotFound(format!("verification instance {id} not found"))
                }
                other => other,
            })?;
        }
        Ok(())
    }

    /// Writes the settings to job `id`.
    pub async fn store(&self, tx: &mut sqlx::PgTransaction<'_>, id: i64) -> ApiResult<()> {
        sqlx::query(
            "UPDATE dump_jobs SET verify_cron = $2, verify_method = $3, verify_instance_id = $4, \
             verify_checks = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(&self.cron)
        .bind(&self.method)
        .bind(self.instance_id)
        .bind(&self.checks)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(cron: &str, method: &str, instance: i64, checks: &[&str]) -> v1::AddDumpJobRequest {
        v1::AddDumpJobRequest {
            verify_cron: cron.into(),
            verify_method: method.into(),
            verify_instance_id: instance,
            verify_checks: checks.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn new_job_settings_are_checked() {
        assert_eq!(
            Settings::of_add(&add("", "", 0, &[])).unwrap(),
            Settings::off()
        );
        let s = Settings::of_add(&add("0  3 * * *", "restore", 7, &["SELECT true"])).unwrap();
        assert_eq!(s.cron, "0 3 * * *");
        assert_eq!(s.instance_id, Some(7));
        let e = Settings::of_add(&add("61 * * * *", "read", 0, &[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("verify cron: invalid cron expression \"61 * * * *\""),
            "{e}"
        );
        let e = Settings::of_add(&add("0 3 * * *", "copy", 0, &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"copy\" is not one of read, restore"), "{e}");
        assert!(Settings::of_add(&add("0 3 * * *", "read", 0, &["SELECT true"])).is_err());
        assert!(Settings::of_add(&add("0 3 * * *", "read", 3, &[])).is_err());
        let many = vec!["SELECT true"; super::super::verify::MAX_CHECKS + 1];
        assert!(Settings::of_add(&add("0 3 * * *", "restore", 0, &many)).is_err());
    }

    #[test]
    fn edits_change_only_what_they_name_and_no_verify_clears() {
        let cur = Settings::of_add(&add("0 3 * * *", "restore", 7, &["SELECT true"])).unwrap();
        let req = v1::UpdateDumpJobRequest {
            verify_cron: Some("0 4 * * *".into()),
            ..Default::default()
        };
        let next = cur
            .clone()
            .changed(req.verify_cron.as_ref(), None, None, None)
            .unwrap();
        assert_eq!(next.cron, "0 4 * * *");
        assert_eq!(next.checks, cur.checks);
        let row_free = Settings::off();
        assert_eq!(
            row_free
                .changed(
                    Some(&String::new()),
                    Some(&"read".into()),
                    Some(0),
                    Some(&vec![])
                )
                .unwrap(),
            Settings::off()
        );
        // Switching to read while checks remain is refused.
        assert!(cur.changed(None, Some(&"read".into()), None, None).is_err());
    }
}
