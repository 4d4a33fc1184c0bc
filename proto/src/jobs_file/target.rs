//! The target of a copy or a cron restore in the jobs file: which job's
//! dumps go where, checked the same way for both.
use std::collections::BTreeMap;

use super::{Copy, JobsFileError, Result};
use crate::model::{excerpt, validate_identifier};
use crate::v1::{DumpJob, DumpType, ExistingDatabase};
use toml::Spanned;

/// The target keys a copy and a restore share.
pub(super) struct TargetEntry<'a> {
    pub job: &'a Spanned<String>,
    pub to: &'a Spanned<String>,
    pub database: &'a str,
    pub existing: Option<&'a Spanned<String>>,
    pub destructive: bool,
}

impl TargetEntry<'_> {
    /// Checks the target of `key`, `copies.NAME` or `restores.NAME`: a full or
    /// schema job of the file, an instance of the file, never the dumped
    /// database itself, destructive policies only when confirmed.
    pub fn check(
        &self,
        key: &str,
        start: usize,
        job_ids: &BTreeMap<String, i64>,
        dump_jobs: &[DumpJob],
        instance_ids: &BTreeMap<String, i64>,
        bad: &dyn Fn(usize, String, String) -> JobsFileError,
    ) -> Result<Copy> {
        let name = key.split_once('.').map_or(key, |(_, n)| n);
        let what = if key.starts_with("copies.") {
            "copy name"
        } else {
            "restore name"
        };
        validate_identifier(what, name)
            .map_err(|err| bad(start, key.to_string(), err.to_string()))?;
        let job = job_ids
            .get(self.job.get_ref())
            .and_then(|id| dump_jobs.iter().find(|j| j.id == *id))
            .ok_or_else(|| {
                bad(
                    self.job.span().start,
                    format!("{key}.job"),
                    format!(
                        "no job {} in this file",
                        crate::model::quoted(&excerpt(self.job.get_ref()))
                    ),
                )
            })?;
        let instance_id = instance_ids
            .get(self.to.get_ref())
            .copied()
            .ok_or_else(|| {
                bad(
                    self.to.span().start,
                    format!("{key}.to"),
                    format!(
                        "no instance {} in this file",
                        crate::model::quoted(&excerpt(self.to.get_ref()))
                    ),
                )
            })?;
        if !matches!(job.dump_type(), DumpType::Full | DumpType::Schema) {
            return Err(bad(
                start,
                key.to_string(),
                "only full and schema dumps are restored this way (cluster-wide dumps: restore them by hand)"
                    .into(),
            ));
        }
        if !self.database.is_empty() {
            validate_identifier("database", self.database)
                .map_err(|err| bad(start, format!("{key}.database"), err.to_string()))?;
        }
        let database = if self.database.is_empty() {
            job.database.clone()
        } else {
            self.database.to_string()
        };
        if instance_id == job.instance_id && database == job.database {
            return Err(bad(
                start,
                key.to_string(),
                "would restore the dumped database over itself: name another database or instance"
                    .into(),
            ));
        }
        let existing = match self.existing.map(|x| x.get_ref().as_str()) {
            None | Some("rename") => ExistingDatabase::Rename,
            Some("leave") => ExistingDatabase::Leave,
            Some("drop") => ExistingDatabase::Drop,
            Some("drop_before") => ExistingDatabase::DropBefore,
            Some("truncate") => ExistingDatabase::Truncate,
            Some(other) => {
                return Err(bad(
                    self.existing.map_or(start, |x| x.span().start),
                    format!("{key}.existing"),
                    format!(
                        "{} is not a policy (rename, leave, drop, drop_before, truncate)",
                        crate::model::quoted(&excerpt(other))
                    ),
                ));
            }
        };
        let destructive = matches!(
            existing,
            ExistingDatabase::Drop | ExistingDatabase::DropBefore | ExistingDatabase::Truncate
        );
        if destructive && !self.destructive {
            return Err(bad(
                start,
                format!("{key}.existing"),
                "this policy can destroy the target database: add destructive = true to confirm"
                    .into(),
            ));
        }
        Ok(Copy {
            name: name.to_string(),
            job_id: job.id,
            instance_id,
            database,
            existing,
        })
    }
}
