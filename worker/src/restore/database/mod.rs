//! Restoring a database dump (FULL or SCHEMA, any format): either into a
//! new database under a temporary name that takes the target's name at the
//! end (RENAME, DROP, DROP_BEFORE, a missing target), or inside the existing
//! database in one transaction (DATA + TRUNCATE, one schema into an
//! existing database). The order of the steps is what keeps the target
//! intact on failure; see docs/worker.md "Restores".
mod archive;
mod in_place;
mod properties;

use anyhow::{Result, bail};
use pgsnapman_proto::v1::{DumpFormat, RestoreSpec};

use self::archive::Archive;
use super::classify::Source;
use super::metadata::{self, Metadata};
use super::names;
use super::pipeline::{self, Script, ScriptSource, Stored};
use super::plan::{Decision, Swap, decide};
use super::target::{Facts, admin_db, create_database_sql, database_acl_sql, step_error};
use super::{Abort, Run};
use crate::progress::TaskProgress;
use crate::runner::client::ClientTools;
use crate::runner::connection;

/// How a restore script's statements commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commits {
    /// All in one transaction, synchronously: an existing database, which
    /// sessions use while it runs and which must be durable when the
    /// restore reports success.
    OneTransaction,
    /// Each on its own, asynchronously (`connection::commit_async`): a new
    /// database no one sees before the swap, whose synchronous commit
    /// makes them durable.
    Unseen,
}

/// The names of one database restore.
struct Names {
    target: String,
    temp: String,
    backup: String,
    old: String,
}

/// Everything learned before the first change.
struct Prepared {
    meta: Option<Metadata>,
    facts: Facts,
    tools: ClientTools,
    /// psql for plain scripts.
    psql: ClientTools,
    names: Names,
    manifest: pgsnapman_store::Manifest,
}

impl Run<'_> {
    pub(super) async fn database(
        &mut self,
        spec: &RestoreSpec,
        progress: &TaskProgress,
    ) -> Result<()> {
        let manifest = self.manifest(progress)?;
        let meta =
            metadata::parse(&spec.restore_metadata_json).map_err(|e| Abort(format!("{e:#}")))?;
        let target = self.plan.database.clone();
        let names = Names {
            temp: names::temp_database(&target, self.plan.run_id),
            backup: names::backup_database(&target),
            old: names::old_database(&target, self.plan.run_id),
            target,
        };
        self.admin = admin_db(
            self.plan.maintenance_db(),
            &[&names.target, &names.temp, &names.backup, &names.old],
        )
        .to_string();
        let mut roles: Vec<&str> = meta
            .as_ref()
            .map(|m| m.roles.iter().map(|r| r.name.as_str()).collect())
            .unwrap_or_default();
        if let Some(m) = &meta {
            roles.push(&m.owner);
        }
        roles.push(self.plan.roles_off_owner());
        let dbs = [
            names.target.as_str(),
            &names.temp,
            &names.backup,
            &names.old,
        ];
        let facts = self
            .target
            .inspect(&self.admin, &dbs, &roles, self.cancel)
            .await
            .map_err(|e| step_error("cannot reach the target server", e))?;
        let tools = self.tools(&facts)?;
        let psql = if self.plan.format == DumpFormat::Plain {
            self.script_psql(&tools)?
        } else {
            tools.clone()
        };
        self.log_target(&facts, &psql).await;
        if !self.plan.roles && !facts.has_role(self.plan.roles_off_owner()) {
            return Err(Abort(format!(
                "role \"{}\" (the owner with role handling off) does not exist on the target, and with role handling off no role is created",
                self.plan.roles_off_owner()
            ))
            .into());
        }
        if meta.is_none() {
            self.log
                .warn("the dump carries no restore metadata: the database gets the target's default encoding and locale, and no role is created")
                .await;
            self.warnings += 1;
        }
        let exists = facts.has_database(&names.target);
        let schema_exists = match (&self.plan.schema, exists) {
            (Some(s), true) => Some(
                self.target
                    .schema_exists(&names.target, s, self.cancel)
                    .await
                    .map_err(|e| step_error("cannot look at the target database", e))?,
            ),
            _ => None,
        };
        let p = Prepared {
            meta,
            facts,
            tools,
            psql,
            names,
            manifest,
        };
        match decide(&self.plan, exists, schema_exists) {
            Decision::Abort(reason) => Err(Abort(reason).into()),
            Decision::New { drop_first, swap } => self.new_database(&p, drop_first, swap).await,
            Decision::InPlace(kind) => self.in_place(&p, kind).await,
        }
    }

    /// Who owns the new database (and a schema created without its entry).
    fn owner(&self, p: &Prepared) -> String {
        match (&p.meta, self.plan.roles) {
            (Some(m), true) => m.owner.clone(),
            (None, true) => p.facts.user.clone(),
            (_, false) => self.plan.roles_off_owner().to_string(),
        }
    }

    async fn new_database(&mut self, p: &Prepared, drop_first: bool, swap: Swap) -> Result<()> {
        let n = &p.names;
        // Everything that can refuse comes before the first change.
        let tablespace = p
            .meta
            .as_ref()
            .and_then(|m| m.tablespace.as_deref())
            .filter(|t| *t != "pg_default")
            .map(|t| self.plan.tablespaces.target(t))
            .filter(|t| !t.is_empty());
        let owner = self.owner(p);
        let create = create_database_sql(
            &n.temp,
            p.meta.as_ref(),
            &owner,
            tablespace.as_deref(),
            p.facts.major(),
        )
        .map_err(Abort)?;
        let acl = match (&p.meta, self.plan.roles) {
            (Some(m), true) => database_acl_sql(&n.temp, m).map_err(Abort)?,
            _ => Vec::new(),
        };
        let plain = self.plan.format == DumpFormat::Plain;
        let rewrite = !self.plan.tablespaces.map.is_empty();
        let direct = !plain && !rewrite;
        let parallel = direct && self.plan.parallel > 1;
        if !direct && self.plan.parallel > 1 && !self.jobs_by_default {
            self.log
                .info("parallel jobs are not used: this restore runs as one script through psql")
                .await;
        }
        let archive = if plain {
            None
        } else {
            Some(self.archive(p, parallel, direct).await?)
        };
        // A custom archive not served under `restore.default_jobs` is
        // streamed to one job rather than spooled.
        let parallel = parallel && !matches!(archive, Some(Archive::Stream(_)));
        self.create_roles(p).await?;
        if drop_first {
            let ended = self
                .target
                .drop_database(&self.admin, &n.target)
                .await
                .map_err(|e| step_error("DROP_BEFORE", e))?;
            self.target_dropped = true;
            self.log
                .info(format!(
                    "DROP_BEFORE: dropped database \"{}\" (ended {ended} session(s))",
                    n.target
                ))
                .await;
        }
        if p.facts.has_database(&n.temp) {
            self.target.drop_database(&self.admin, &n.temp).await?;
            self.log
                .info(format!(
                    "dropped \"{}\", left by an earlier attempt of this run",
                    n.temp
                ))
                .await;
        }
        // Recorded first: a CREATE DATABASE that completes as the run is
        // cancelled must still be dropped by the cleanup.
        self.created_db = Some(n.temp.clone());
        self.target
            .sql(&self.admin, &[&create], self.cancel)
            .await
            .map_err(|e| step_error("cannot create the database", e))?;
        self.log
            .info(format!(
                "created database \"{}\" (owner \"{owner}\"{}) to restore into",
                n.temp,
                tablespace
                    .as_ref()
                    .map_or(String::new(), |t| format!(", tablespace \"{t}\""))
            ))
            .await;
        if let (Some(schema), Some(archive)) = (&self.plan.schema, &archive) {
            let sql = self.schema_sql(p, archive, schema).await?;
            let file = self.spool.path().join("schema-create.sql");
            std::fs::write(&file, &sql)
                .map_err(|e| anyhow::anyhow!("write {}: {e}", file.display()))?;
            let mut cmd = self.psql_script(&p.tools, &n.temp);
            cmd.arg(format!("--file={}", file.display()));
            let ran = self.run_tool(cmd, Source::Psql, None, false).await?;
            if !ran.status.success() {
                bail!(
                    "cannot create schema \"{schema}\": {}",
                    ran.classifier.fatal_text(3)
                );
            }
            self.log.info(format!("created schema \"{schema}\"")).await;
        }
        self.restore_into_new(p, archive, &n.temp, parallel).await?;
        self.apply_metadata(p, &n.temp, &acl).await?;
        self.swap(n, swap).await
    }

    /// The restore proper into the new database.
    async fn restore_into_new(
        &mut self,
        p: &Prepared,
        archive: Option<Archive>,
        db: &str,
        parallel: bool,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let ran_script = match archive {
            None => {
                let src = Stored {
                    store: self.store.clone(),
                    dump: self.plan.dump_uuid,
                    file: self.plan.stream_file().to_string(),
                };
                self.log.info("running the plain dump through psql").await;
                Some((ScriptSource::Plain(src), true))
            }
            Some(archive) if !self.plan.tablespaces.map.is_empty() => {
                let mut cmd = self.pg_restore(&p.tools);
                cmd.args(self.selection_args(true, false)).arg("--file=-");
                let input = archive.input_of(&mut cmd);
                self.log
                    .info("restoring through pg_restore --file=- and psql (tablespaces are mapped)")
                    .await;
                Some((
                    ScriptSource::PgRestore {
                        cmd: Box::new(cmd),
                        input,
                    },
                    false,
                ))
            }
            Some(archive) => {
                let mut cmd = self.pg_restore(&p.tools);
                cmd.args(self.selection_args(false, false))
                    .arg(format!("--dbname={}", self.conninfo(db)));
                // Nothing sees the new database before the swap.
                connection::commit_async(&mut cmd);
                if parallel {
                    cmd.arg(format!("--jobs={}", self.plan.parallel));
                }
                let input = archive.input_of(&mut cmd);
                self.log
                    .info(format!(
                        "running pg_restore{}",
                        if parallel {
                            format!(" -j {}", self.plan.parallel)
                        } else {
                            String::new()
                        }
                    ))
                    .await;
                let ran = self.run_tool(cmd, Source::PgRestore, input, true).await?;
                // A data file cut short by the store explains any error.
                self.check_served().await?;
                self.judge_pg_restore(&ran).await?;
                None
            }
        };
        if let Some((source, plain)) = ran_script {
            let prelude = if plain {
                self.plain_prelude()
            } else {
                String::new()
            };
            self.script_into(p, source, plain, prelude, Commits::Unseen, db)
                .await?;
        }
        self.log
            .info(format!(
                "restored into \"{db}\" in {:.1} s",
                started.elapsed().as_secs_f64()
            ))
            .await;
        Ok(())
    }

    /// Gives the new database the target's name. Never cancelled: it is a
    /// few short statements, and stopping half-way would be worse.
    async fn swap(&mut self, n: &Names, swap: Swap) -> Result<()> {
        let t = &self.target;
        match swap {
            Swap::Fresh => {
                t.rename_database(&self.admin, &n.temp, &n.target).await?;
            }
            Swap::Rename | Swap::Drop => {
                let aside = if swap == Swap::Rename {
                    &n.backup
                } else {
                    &n.old
                };
                if swap == Swap::Rename && t.database_exists(&self.admin, &n.backup).await? {
                    t.drop_database(&self.admin, &n.backup).await?;
                    self.log
                        .info(format!("dropped the older backup \"{}\"", n.backup))
                        .await;
                }
                let ended = t.rename_database(&self.admin, &n.target, aside).await?;
                if let Err(e) = t.rename_database(&self.admin, &n.temp, &n.target).await {
                    // Put the old one back; the new one is dropped by the cleanup.
                    return match t.rename_database(&self.admin, aside, &n.target).await {
                        Ok(_) => Err(e),
                        Err(back) => Err(e.context(format!(
                            "and the previous database could not be renamed back: it is \"{aside}\" ({back:#})"
                        ))),
                    };
                }
                self.log
                    .info(format!(
                        "swapped: the previous \"{}\" is now \"{aside}\" (ended {ended} session(s))",
                        n.target
                    ))
                    .await;
            }
        }
        self.created_db = None;
        self.log
            .info(format!("\"{}\" is now database \"{}\"", n.temp, n.target))
            .await;
        if swap == Swap::Drop {
            match t.drop_database(&self.admin, &n.old).await {
                Ok(_) => {
                    self.log
                        .info(format!("dropped the previous database (\"{}\")", n.old))
                        .await
                }
                Err(e) => {
                    self.log
                        .warn(format!(
                            "the previous database stays as \"{}\": {e:#}",
                            n.old
                        ))
                        .await;
                    self.warnings += 1;
                }
            }
        }
        Ok(())
    }

    /// Runs a script (a plain dump, or `pg_restore --file=-`) through the
    /// filter into psql on `db`, committing as `commits` says.
    async fn script_into(
        &mut self,
        p: &Prepared,
        source: ScriptSource,
        plain: bool,
        prelude: String,
        commits: Commits,
        db: &str,
    ) -> Result<()> {
        let psql = if plain { &p.psql } else { &p.tools };
        let transaction = commits == Commits::OneTransaction;
        let mut rules = self.rules(plain);
        rules.drop_transaction_control = transaction;
        let mut cmd = self.psql_script(psql, db);
        if commits == Commits::Unseen {
            connection::commit_async(&mut cmd);
        }
        let script = Script {
            source,
            rules,
            prelude,
            postlude: String::new(),
            transaction,
        };
        let ran = pipeline::run_script(
            script,
            cmd,
            self.done.clone(),
            self.cancel,
            self.runner.kill_grace(),
        )
        .await?;
        self.judge_script(&ran).await
    }

    /// Runs a client program to its end with `input` on stdin (counted in
    /// the progress if `count`), its stderr classified.
    async fn run_tool(
        &self,
        cmd: tokio::process::Command,
        source: Source,
        input: Option<Stored>,
        count: bool,
    ) -> Result<pipeline::Ran> {
        let program = match source {
            Source::PgRestore => "pg_restore",
            Source::Psql => "psql",
        };
        let progress = if count {
            self.done.clone()
        } else {
            Default::default()
        };
        pipeline::run(
            cmd,
            program,
            source,
            input,
            false,
            progress,
            self.cancel,
            self.runner.kill_grace(),
        )
        .await
    }

    /// Judges a direct pg_restore run: fatal errors fail it, harmless ones
    /// are logged and counted; the exit status must agree.
    async fn judge_pg_restore(&mut self, ran: &pipeline::Ran) -> Result<()> {
        let c = &ran.classifier;
        self.log_classified(c, "pg_restore").await;
        if c.fatal_count > 0 {
            bail!(
                "pg_restore reported {} error(s):\n{}",
                c.fatal_count,
                c.fatal_text(10)
            );
        }
        if ran.status.success() {
            return Ok(());
        }
        let explained = ran.status.code() == Some(1)
            && c.harmless_count > 0
            && c.ignored_reported == Some(c.harmless_count);
        if explained {
            return Ok(());
        }
        bail!(
            "pg_restore exited with {} ({} error(s) reported, {} recognised as harmless)",
            ran.status,
            c.ignored_reported.unwrap_or(0),
            c.harmless_count
        )
    }
}
