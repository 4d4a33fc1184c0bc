//! What a database restore sets beyond the dump: the roles it needs
//! (created before), and the database's owner, ACL, connection limit,
//! settings and comment (applied to the new database before it takes the target's
//! name; settings are keyed by its OID, so they follow the rename).
use std::collections::BTreeSet;

use anyhow::Result;
use pgsnapman_proto::model::excerpt;
use pgsnapman_proto::v1::RestoreType;

use super::Prepared;
use crate::restore::Run;
use crate::restore::names::{quote_ident, quote_literal};
use crate::restore::target::{role_plan, settings_sql, step_error};

impl Run<'_> {
    /// Creates the roles the dump needs that the target lacks (role
    /// handling on), in one transaction.
    pub(super) async fn create_roles(&mut self, p: &Prepared) -> Result<()> {
        let (true, Some(meta)) = (self.plan.roles, &p.meta) else {
            return Ok(());
        };
        if self.plan.restore_type == RestoreType::Data {
            // Data only: no object gets an owner or a privilege.
            return Ok(());
        }
        let existing: BTreeSet<String> = p.facts.roles.iter().cloned().collect();
        let plan = role_plan(meta, &existing);
        for s in &plan.skipped {
            self.log.warn(format!("not created: {s}")).await;
            self.warnings += 1;
        }
        if plan.statements.is_empty() {
            self.log
                .info("every role the dump needs exists on the target")
                .await;
            return Ok(());
        }
        self.target
            .transaction(&self.admin, &plan.statements, self.cancel)
            .await
            .map_err(|e| step_error("cannot create the roles the dump needs", e))?;
        self.created_roles = plan.create.clone();
        self.log
            .info(format!(
                "created the roles the dump needs (with their memberships): {}",
                plan.create
                    .iter()
                    .map(|r| quote_ident(r))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .await;
        if !plan.login_without_password.is_empty() {
            self.log
                .warn(format!(
                    "login roles created without a password (passwords are not captured; set them with ALTER ROLE … PASSWORD): {}",
                    plan.login_without_password.iter().map(|r| quote_ident(r)).collect::<Vec<_>>().join(", ")
                ))
                .await;
            self.warnings += 1;
        }
        Ok(())
    }

    /// The database's ACL, connection limit and settings (role handling
    /// on; its owner came with CREATE DATABASE), or its connection limit and
    /// settings only (off). The ACL fails the run; a setting the target
    /// refuses is a warning. No statement, no psql.
    pub(super) async fn apply_metadata(
        &mut self,
        p: &Prepared,
        db: &str,
        acl: &[String],
    ) -> Result<()> {
        let Some(m) = &p.meta else {
            return Ok(());
        };
        let mut statements = acl.to_vec();
        if m.connection_limit >= 0 {
            statements.push(format!(
                "ALTER DATABASE {} CONNECTION LIMIT {}",
                quote_ident(db),
                m.connection_limit
            ));
        }
        if !statements.is_empty() {
            self.target
                .transaction(
                    &self.admin,
                    &statements,
                    &tokio_util::sync::CancellationToken::new(),
                )
                .await
                .map_err(|e| step_error("cannot set the database's privileges", e))?;
        }
        if self.plan.roles {
            self.log
                .info(format!(
                    "database owner \"{}\", {} privilege(s){}",
                    m.owner,
                    if m.acl_is_default {
                        "default".to_string()
                    } else {
                        m.acl.len().to_string()
                    },
                    if m.connection_limit >= 0 {
                        format!(", connection limit {}", m.connection_limit)
                    } else {
                        String::new()
                    }
                ))
                .await;
        }
        let (settings, skipped) = settings_sql(db, m, self.plan.roles);
        for s in skipped {
            self.log.warn(format!("not restored: {s}")).await;
            self.warnings += 1;
        }
        let all: Vec<&str> = settings.iter().map(String::as_str).collect();
        let mut applied = 0;
        // One psql for all of them; after a refusal, one by one to know
        // which (setting one again is harmless).
        if settings.len() > 1 && self.target.sql_now(&self.admin, &all).await.is_ok() {
            applied = settings.len();
        } else {
            for s in &settings {
                match self.target.sql_now(&self.admin, &[s]).await {
                    Ok(_) => applied += 1,
                    Err(e) => {
                        self.log
                            .warn(format!(
                                "the target refused a setting ({}): {e:#}",
                                crate::runner::process::excerpt(s)
                            ))
                            .await;
                        self.warnings += 1;
                    }
                }
            }
        }
        if applied > 0 {
            self.log
                .info(format!("{applied} database setting(s) restored"))
                .await;
        }
        if let Some(comment) = &m.comment {
            let sql = format!(
                "COMMENT ON DATABASE {} IS {}",
                quote_ident(db),
                quote_literal(comment)
            );
            match self.target.sql_now(&self.admin, &[&sql]).await {
                Ok(_) => self.log.info("database comment restored").await,
                Err(e) => {
                    // The error may quote the statement: never the whole comment.
                    let e = format!("{e:#}");
                    self.log
                        .warn(format!(
                            "the target refused the database comment: {}",
                            excerpt(&e)
                        ))
                        .await;
                    self.warnings += 1;
                }
            }
        }
        if m.is_template {
            self.log
                .info("the dumped database was a template; the restored one is not")
                .await;
        }
        if !m.allow_connections {
            self.log
                .info("the dumped database refused connections; the restored one allows them")
                .await;
        }
        Ok(())
    }
}
