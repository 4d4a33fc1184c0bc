//! Restoring a pg_dumpall script (CLUSTER, CLUSTER_SCHEMA, GLOBALS) through
//! psql with ON_ERROR_STOP into the maintenance database. `CREATE ROLE` of
//! roles the target has is left out (pg_dumpall always writes one for the
//! role it ran as), and so is `ALTER ROLE … WITH …` of the role the worker
//! restores as, so that the script never changes its own password or
//! attributes. Not atomic: what ran before an error stays.
use std::collections::BTreeSet;

use anyhow::{Context, Result};

use super::pipeline::{self, Script, ScriptSource, Stored};
use super::script::Rules;
use super::target::step_error;
use super::{Abort, Run};
use crate::progress::TaskProgress;

impl Run<'_> {
    pub(super) async fn cluster(&mut self, progress: &TaskProgress) -> Result<()> {
        let manifest = self.manifest(progress)?;
        let file = self.plan.stream_file();
        if manifest.file(file).is_none() {
            return Err(Abort(format!("dump {} holds no {file}", self.plan.dump_uuid)).into());
        }
        let facts = self
            .target
            .inspect(&self.admin, &[], &[], self.cancel)
            .await
            .map_err(|e| step_error("cannot reach the target server", e))?;
        let tools = self.tools(&facts)?;
        let psql = self.script_psql(&tools)?;
        self.log_target(&facts, &psql).await;
        let ignored: Vec<&str> = [
            (self.plan.schema.is_some(), "schema"),
            (
                !self.plan.tablespaces.map.is_empty() || self.plan.tablespaces.keep,
                "tablespaces",
            ),
            (self.plan.owner.is_some(), "owner"),
            (!self.plan.extra_options.is_empty(), "extra options"),
            (self.plan.parallel > 1, "parallel jobs"),
        ]
        .into_iter()
        .filter_map(|(set, what)| set.then_some(what))
        .collect();
        if !ignored.is_empty() {
            self.log
                .info(format!(
                    "a cluster dump restores as dumped: {} do not apply",
                    ignored.join(", ")
                ))
                .await;
        }
        let out = self
            .target
            .sql(
                &self.admin,
                &["SELECT coalesce(json_agg(rolname), '[]'::json) FROM pg_roles"],
                self.cancel,
            )
            .await
            .map_err(|e| step_error("cannot list the target's roles", e))?;
        let existing: BTreeSet<String> = serde_json::from_str(&out).with_context(|| {
            format!(
                "unexpected answer from the target: {}",
                crate::runner::process::excerpt(&out)
            )
        })?;
        self.log
            .info(format!(
                "running the {} script through psql into \"{}\" (ON_ERROR_STOP; not atomic)",
                self.plan.dump_type.label(),
                self.admin,
            ))
            .await;
        let script = Script {
            source: ScriptSource::Plain(Stored {
                store: self.store.clone(),
                dump: self.plan.dump_uuid,
                file: file.to_string(),
            }),
            rules: Rules {
                existing_roles: existing,
                protected_role: Some(facts.user.clone()),
                ..Rules::default()
            },
            prelude: String::new(),
            postlude: String::new(),
            transaction: false,
        };
        let cmd = self.psql_script(&psql, &self.admin.clone());
        let ran = pipeline::run_script(
            script,
            cmd,
            self.done.clone(),
            self.cancel,
            self.runner.kill_grace(),
        )
        .await?;
        if !ran.report.roles_skipped.is_empty() {
            self.log
                .info(format!(
                    "CREATE ROLE left out for roles the target has: {}",
                    ran.report.roles_skipped.join(", ")
                ))
                .await;
        }
        if ran.report.protected_role_skipped {
            self.log
                .info(format!(
                    "ALTER ROLE … WITH of \"{}\" (the role restoring) left out: its password and attributes stay",
                    facts.user
                ))
                .await;
        }
        self.judge_script(&ran)
            .await
            .context("the cluster restore is not atomic: what ran before the error stays")
    }
}
