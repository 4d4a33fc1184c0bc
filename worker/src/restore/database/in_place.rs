//! A restore inside the existing database, in one transaction: DATA with
//! TRUNCATE (the dumped tables truncated in the same transaction as the
//! load), or one schema created or replaced (RENAME keeps the old one as
//! `<schema>_pgsnapman_bak`). Nothing commits unless the whole script ran.
use anyhow::{Result, bail};
use pgsnapman_proto::v1::{DumpFormat, RestoreType};

use super::{Commits, Prepared};
use crate::restore::names::{self, quote_ident};
use crate::restore::pipeline::{ScriptSource, Stored};
use crate::restore::plan::InPlace;
use crate::restore::target::step_error;
use crate::restore::{Abort, Run, toc};

impl Run<'_> {
    /// Changes the existing database in one transaction: truncate and load
    /// data, or create (or replace) one schema and restore into it.
    pub(super) async fn in_place(&mut self, p: &Prepared, kind: InPlace) -> Result<()> {
        let db = p.names.target.clone();
        let plain = self.plan.format == DumpFormat::Plain;
        if self.plan.parallel > 1 {
            self.log
                .info("parallel jobs are not used: a restore into the existing database runs in one transaction")
                .await;
        }
        let archive = if plain {
            None
        } else {
            Some(self.archive(p, false, false).await?)
        };
        let mut prelude = String::new();
        match kind {
            InPlace::Truncate => {
                let Some(archive) = &archive else {
                    return Err(Abort("a plain dump cannot be restored data-only".into()).into());
                };
                let entries = self.toc(p, archive).await?;
                let texts: Vec<&str> = toc::table_data(&entries)
                    .into_iter()
                    .filter(|t| {
                        self.plan.schema.as_ref().is_none_or(|s| {
                            t.starts_with(&format!("{} ", s.replace(['\n', '\r'], " ")))
                        })
                    })
                    .collect();
                let candidates = self
                    .target
                    .tables(&db, self.plan.schema.as_deref(), self.cancel)
                    .await
                    .map_err(|e| step_error("cannot list the target's tables", e))?;
                let tables = toc::resolve_tables(&texts, &candidates).map_err(Abort)?;
                if tables.is_empty() {
                    self.log
                        .info("the dump holds no table data: nothing to truncate")
                        .await;
                } else {
                    let list: Vec<String> = tables
                        .iter()
                        .map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t)))
                        .collect();
                    self.log
                        .info(format!("truncating the {} dumped table(s), in the same transaction as the load", list.len()))
                        .await;
                    prelude.push_str(&format!("TRUNCATE ONLY {};\n", list.join(", ")));
                }
            }
            InPlace::CreateSchema | InPlace::ReplaceSchema { .. } => {
                let Some(schema) = self.plan.schema.clone() else {
                    bail!("a schema restore without a schema");
                };
                if let InPlace::ReplaceSchema { keep_backup } = kind {
                    if keep_backup {
                        let bak = names::backup_schema(&schema);
                        prelude.push_str(&format!(
                            "DROP SCHEMA IF EXISTS {b} CASCADE;\nALTER SCHEMA {s} RENAME TO {b};\n",
                            b = quote_ident(&bak),
                            s = quote_ident(&schema)
                        ));
                        self.log
                            .info(format!("schema \"{schema}\" exists: it becomes \"{bak}\" (an older one is dropped)"))
                            .await;
                    } else {
                        prelude
                            .push_str(&format!("DROP SCHEMA {} CASCADE;\n", quote_ident(&schema)));
                        self.log
                            .info(format!(
                                "schema \"{schema}\" exists: it is dropped (CASCADE)"
                            ))
                            .await;
                    }
                }
                if plain {
                    prelude.push_str(&self.plain_prelude());
                }
                if let Some(archive) = &archive {
                    prelude.push_str(&self.schema_sql(p, archive, &schema).await?);
                }
            }
        }
        self.create_roles(p).await?;
        let source = match archive {
            None => ScriptSource::Plain(Stored {
                store: self.store.clone(),
                dump: self.plan.dump_uuid,
                file: self.plan.stream_file().to_string(),
            }),
            Some(archive) => {
                let triggers = self.plan.restore_type == RestoreType::Data && p.facts.superuser;
                if self.plan.restore_type == RestoreType::Data && !triggers {
                    self.log
                        .info("not a superuser: triggers stay enabled while the data loads (foreign keys are checked in the dump's table order)")
                        .await;
                }
                let mut cmd = self.pg_restore(&p.tools);
                cmd.args(self.selection_args(true, triggers))
                    .arg("--file=-");
                let input = archive.input_of(&mut cmd);
                ScriptSource::PgRestore {
                    cmd: Box::new(cmd),
                    input,
                }
            }
        };
        self.log
            .info(format!(
                "restoring into the existing database \"{db}\" in one transaction"
            ))
            .await;
        self.script_into(p, source, plain, prelude, Commits::OneTransaction, &db)
            .await?;
        self.log.info("committed").await;
        Ok(())
    }
}
