//! How pg_restore reads the archive of a database restore: streamed or
//! spooled, its table of contents, the SQL of one schema's entry, and the
//! options and filter rules that follow from the restore's settings.
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Result, bail};
use pgsnapman_proto::v1::{DumpFormat, RestoreType};
use tokio::process::Command;

use super::Prepared;
use crate::restore::classify::Source;
use crate::restore::names::quote_ident;
use crate::restore::pipeline::{self, Stored};
use crate::restore::script::Rules;
use crate::restore::{Abort, Run, read_spooled, served, toc};

/// Where pg_restore reads the archive.
#[derive(Clone)]
pub(super) enum Archive {
    /// Streamed from the store into its stdin.
    Stream(Stored),
    /// A spooled file or directory.
    Path(PathBuf),
}

impl Archive {
    /// Names a spooled archive in `cmd`'s arguments; a streamed one is
    /// returned as the command's input.
    pub(super) fn input_of(self, cmd: &mut Command) -> Option<Stored> {
        match self {
            Archive::Stream(s) => Some(s),
            Archive::Path(path) => {
                cmd.arg(path);
                None
            }
        }
    }
}

impl Run<'_> {
    /// The archive as pg_restore reads it: streamed (custom format, one
    /// job), served (into a new database: toc.dat written, the data files
    /// FIFOs filled on demand; a custom archive for `-j` is served as a
    /// directory archive), else spooled (a custom archive for `-j` not
    /// served: pg_restore's workers seek in the file; directory format
    /// through a script, where a cut-short file could commit).
    pub(super) async fn archive(
        &mut self,
        p: &Prepared,
        parallel: bool,
        servable: bool,
    ) -> Result<Archive> {
        let stored = |file: &str| Stored {
            store: self.store.clone(),
            dump: self.plan.dump_uuid,
            file: file.to_string(),
        };
        let directory = self.plan.format == DumpFormat::Directory;
        if !directory && !parallel {
            return Ok(Archive::Stream(stored(self.plan.stream_file())));
        }
        let names: Vec<String> = p.manifest.files.iter().map(|f| f.name.clone()).collect();
        let data_files = names.iter().filter(|n| served::is_data_file(n)).count();
        let serve = directory && servable && data_files <= served::SERVE_MAX_FILES;
        if directory {
            let dir = self.spool.path().join("dump");
            std::fs::create_dir(&dir)
                .map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
            if serve {
                // Only the tables of contents take space in the spool.
                let tocs = p
                    .manifest
                    .files
                    .iter()
                    .filter(|f| !served::is_data_file(&f.name))
                    .map(|f| f.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>())
                    .sum();
                self.check_space(tocs)?;
                match self.serve(&names, &dir, data_files, parallel).await {
                    Ok(()) => {
                        if parallel {
                            let sizes = p
                                .manifest
                                .files
                                .iter()
                                .map(|f| (f.name.clone(), f.size))
                                .collect();
                            self.order_served(&dir, sizes).await?;
                        }
                        return Ok(Archive::Path(dir));
                    }
                    Err(e) => {
                        self.serve_failed(e).await?;
                        std::fs::remove_dir_all(&dir)
                            .and_then(|()| std::fs::create_dir(&dir))
                            .map_err(|e| anyhow::anyhow!("empty {}: {e}", dir.display()))?;
                    }
                }
            }
            self.check_space(p.manifest.logical_bytes)?;
            self.spool_files(p, parallel, names, &dir).await?;
            return Ok(Archive::Path(dir));
        }
        if servable {
            let dir = self.spool.path().join("dump");
            std::fs::create_dir(&dir)
                .map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
            // Only toc.dat takes space in the spool: the reserve covers it.
            self.check_space(0)?;
            match self.serve_custom(p, &dir).await {
                Ok(None) => return Ok(Archive::Path(dir)),
                Ok(Some(why)) if self.jobs_by_default => {
                    self.log
                        .info(format!(
                            "the custom archive is not served to pg_restore -j through named pipes ({why}): streaming it to one job (restore.default_jobs applies to served archives only)"
                        ))
                        .await;
                    std::fs::remove_dir_all(&dir)
                        .map_err(|e| anyhow::anyhow!("remove {}: {e}", dir.display()))?;
                    return Ok(Archive::Stream(Stored {
                        store: self.store.clone(),
                        dump: self.plan.dump_uuid,
                        file: self.plan.stream_file().to_string(),
                    }));
                }
                Ok(Some(why)) => {
                    self.log
                        .info(format!(
                            "the custom archive is not served to pg_restore -j through named pipes ({why}): spooling it"
                        ))
                        .await;
                }
                Err(e) => self.serve_failed(e).await?,
            }
            std::fs::remove_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("remove {}: {e}", dir.display()))?;
        }
        self.check_space(p.manifest.logical_bytes)?;
        let dir = self.spool.path().to_path_buf();
        self.spool_files(p, parallel, vec![self.plan.stream_file().to_string()], &dir)
            .await?;
        Ok(Archive::Path(dir.join(self.plan.stream_file())))
    }

    /// ABORTED unless the spool's file system has `needed` bytes free plus
    /// the reserve.
    fn check_space(&self, needed: u64) -> Result<()> {
        let free = pipeline::free_bytes(self.spool.path())?;
        if free < needed.saturating_add(pipeline::SPOOL_RESERVE) {
            return Err(Abort(format!(
                "the spool has {free} bytes free; spooling this {} dump needs {needed} plus {} in reserve",
                self.plan.format.label(),
                pipeline::SPOOL_RESERVE
            ))
            .into());
        }
        Ok(())
    }

    /// Serves the directory dump from `dir` (see `served`): written tables
    /// of contents, FIFOs for the data files.
    async fn serve(
        &mut self,
        names: &[String],
        dir: &std::path::Path,
        data_files: usize,
        parallel: bool,
    ) -> Result<()> {
        self.log
            .info(format!(
                "serving the archive's {data_files} data files to pg_restore{} through named pipes (nothing spooled)",
                if parallel { " -j" } else { "" }
            ))
            .await;
        let (store, dump, names, dir) = (
            self.store.clone(),
            self.plan.dump_uuid,
            names.to_vec(),
            dir.to_path_buf(),
        );
        let (done, cancel) = (self.done.clone(), self.cancel.clone());
        let served = tokio::task::spawn_blocking(move || {
            served::Served::start(&store, dump, &names, &dir, done, &cancel)
        })
        .await
        .map_err(|e| anyhow::anyhow!("the thread preparing the named pipes failed: {e}"))??;
        self.served = Some(served);
        Ok(())
    }

    /// After serving failed with `e`: a cancel stays an error; anything else
    /// is logged, and the archive is spooled instead.
    async fn serve_failed(&self, e: anyhow::Error) -> Result<()> {
        if e.is::<pipeline::Cancelled>() {
            return Err(e);
        }
        self.log
            .warn(format!(
                "cannot serve the archive through named pipes ({e:#}): spooling it instead"
            ))
            .await;
        Ok(())
    }

    /// Serves the custom archive as a directory archive in `dir` (see
    /// `served::Served::start_custom`); `Some(why)` when it is not one served.
    async fn serve_custom(
        &mut self,
        p: &Prepared,
        dir: &std::path::Path,
    ) -> Result<Option<String>> {
        let (store, dump, stream, dir2) = (
            self.store.clone(),
            self.plan.dump_uuid,
            self.plan.stream_file().to_string(),
            dir.to_path_buf(),
        );
        let recorded = p.manifest.meta.data_blocks.clone();
        // Block sizes come from the recorded offsets (used only if the
        // blocks are served from them); a scanned archive's are not known
        // before pg_restore starts.
        let sizes = recorded.as_deref().and_then(|at| {
            let archive = p.manifest.files.iter().find(|f| f.name == stream)?;
            Some(served::block_sizes(at, archive.size))
        });
        let (done, cancel) = (self.done.clone(), self.cancel.clone());
        let started = tokio::task::spawn_blocking(move || {
            served::Served::start_custom(
                &store,
                dump,
                &stream,
                recorded.as_deref(),
                &dir2,
                done,
                &cancel,
            )
        })
        .await
        .map_err(|e| anyhow::anyhow!("the thread preparing the named pipes failed: {e}"))??;
        let served = match started {
            Ok(served) => served,
            Err(why) => return Ok(Some(why)),
        };
        let (_, blocks) = served.counts();
        self.log
            .info(format!(
                "serving the custom archive's {blocks} data blocks to pg_restore -j as a directory archive through named pipes (nothing spooled; block offsets {})",
                if served.scans() {
                    "found by reading the archive: the manifest has none"
                } else {
                    "from the manifest"
                }
            ))
            .await;
        let scans = served.scans();
        self.served = Some(served);
        if let (false, Some(sizes)) = (scans, sizes) {
            self.order_served(dir, sizes).await?;
        }
        Ok(None)
    }

    /// Orders the served toc.dat in `dir` largest data first for
    /// pg_restore -j (`served::order_largest_first`), and says so.
    async fn order_served(
        &self,
        dir: &std::path::Path,
        sizes: std::collections::HashMap<String, u64>,
    ) -> Result<()> {
        let dir = dir.to_path_buf();
        let ordered =
            tokio::task::spawn_blocking(move || served::order_largest_first(&dir, &sizes))
                .await
                .map_err(|e| anyhow::anyhow!("the thread ordering the data files failed: {e}"))?;
        let line = match ordered {
            Ok(0) => "the data files are already in pg_restore -j's largest-first order".into(),
            Ok(moved) => format!(
                "ordered the data files largest first for pg_restore -j (the sizes of named pipes read as 0): {moved} entries of the served toc.dat renumbered, so the entry ids in pg_restore's messages are the served toc.dat's, not pg_restore --list's of the stored dump"
            ),
            Err(why) => format!(
                "the served toc.dat keeps pg_dump's entry ids ({why}): pg_restore -j starts the data in dump-id order"
            ),
        };
        self.log.info(line).await;
        Ok(())
    }

    /// Writes `files` of the dump into `dir`.
    async fn spool_files(
        &self,
        p: &Prepared,
        parallel: bool,
        files: Vec<String>,
        dir: &std::path::Path,
    ) -> Result<()> {
        self.log
            .info(format!(
                "spooling the archive ({} bytes) for pg_restore{}",
                p.manifest.logical_bytes,
                if parallel { " -j" } else { "" }
            ))
            .await;
        pipeline::spool(
            &self.store,
            self.plan.dump_uuid,
            files,
            dir,
            self.done.clone(),
            self.cancel,
        )
        .await
    }

    /// After pg_restore read a served archive: the store error that cut a
    /// data file short, if any (then the restored database is incomplete).
    pub(super) async fn check_served(&self) -> Result<()> {
        let Some(served) = &self.served else {
            return Ok(());
        };
        served.check()?;
        let (complete, total) = served.counts();
        self.log
            .info(format!(
                "served {complete} of {total} data files to pg_restore to their end"
            ))
            .await;
        Ok(())
    }

    /// Runs `pg_restore <args>` on the archive with its output to a file in
    /// the spool; returns that file's text.
    pub(super) async fn pg_restore_to_file(
        &self,
        p: &Prepared,
        archive: &Archive,
        args: &[OsString],
        file: &str,
    ) -> Result<String> {
        let out = self.spool.path().join(file);
        let mut cmd = self.pg_restore(&p.tools);
        cmd.args(args).arg(format!("--file={}", out.display()));
        let input = archive.clone().input_of(&mut cmd);
        let ran = self.run_tool(cmd, Source::PgRestore, input, false).await?;
        if !ran.status.success() || ran.classifier.fatal_count > 0 {
            bail!(
                "pg_restore cannot read the archive ({}): {}",
                ran.status,
                ran.classifier.fatal_text(3)
            );
        }
        read_spooled(&out)
    }

    /// The archive's table of contents.
    pub(super) async fn toc(&self, p: &Prepared, archive: &Archive) -> Result<Vec<toc::Entry>> {
        let text = self
            .pg_restore_to_file(p, archive, &["--list".into()], "toc.list")
            .await?;
        Ok(toc::parse(&text))
    }

    /// SQL that creates the one restored schema: the archive's SCHEMA entry
    /// with its comment and privileges, or `CREATE SCHEMA` when it has none.
    pub(super) async fn schema_sql(
        &self,
        p: &Prepared,
        archive: &Archive,
        schema: &str,
    ) -> Result<String> {
        let entries = self.toc(p, archive).await?;
        let mut owners: Vec<String> = p
            .meta
            .as_ref()
            .map(|m| m.roles.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default();
        owners.push(p.facts.user.clone());
        let ids = toc::schema_entries(&entries, schema, &owners);
        let mut sql = String::new();
        if schema == "public" {
            sql.push_str("CREATE SCHEMA IF NOT EXISTS public;\n");
        }
        if ids.is_empty() {
            if schema != "public" {
                let owner = self.owner(p);
                sql.push_str(&format!(
                    "CREATE SCHEMA {} AUTHORIZATION {};\n",
                    quote_ident(schema),
                    quote_ident(&owner)
                ));
            }
            return Ok(sql);
        }
        let list = self.spool.path().join("schema.list");
        std::fs::write(&list, toc::use_list(&ids))
            .map_err(|e| anyhow::anyhow!("write {}: {e}", list.display()))?;
        let mut args: Vec<OsString> = vec![format!("--use-list={}", list.display()).into()];
        args.extend(self.roles_off_args());
        sql.push_str(
            &self
                .pg_restore_to_file(p, archive, &args, "schema.sql")
                .await?,
        );
        Ok(sql)
    }

    /// The role a roles-off restore creates objects as, when it is not the
    /// instance user.
    pub(super) fn set_role(&self) -> Option<&str> {
        let owner = self.plan.roles_off_owner();
        (!self.plan.roles && owner != self.plan.instance_user()).then_some(owner)
    }

    /// pg_restore options of role handling off: no owners, no privileges,
    /// objects created as the owner.
    pub(super) fn roles_off_args(&self) -> Vec<OsString> {
        if self.plan.roles {
            return Vec::new();
        }
        let mut args: Vec<OsString> = vec!["--no-owner".into(), "--no-privileges".into()];
        if let Some(owner) = self.set_role() {
            args.push(format!("--role={owner}").into());
        }
        args
    }

    /// `SET ROLE` for a plain script with role handling off.
    pub(super) fn plain_prelude(&self) -> String {
        self.set_role()
            .map_or(String::new(), |o| format!("SET ROLE {};\n", quote_ident(o)))
    }

    /// pg_restore's selection options for this plan.
    pub(super) fn selection_args(&self, script: bool, data_triggers: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        match self.plan.restore_type {
            RestoreType::Schema => args.push("--schema-only".into()),
            RestoreType::Data => {
                args.push("--data-only".into());
                if data_triggers {
                    args.push("--disable-triggers".into());
                }
            }
            _ => {}
        }
        if let Some(s) = &self.plan.schema {
            args.push(format!("--schema={s}").into());
        }
        args.extend(self.roles_off_args());
        let rewrite = !self.plan.tablespaces.map.is_empty();
        if !(self.plan.tablespaces.keep || (script && rewrite)) {
            args.push("--no-tablespaces".into());
        }
        args.extend(self.plan.extra_options.iter().map(OsString::from));
        args
    }

    /// The filter rules for a script restore.
    pub(super) fn rules(&self, plain: bool) -> Rules {
        let ts = &self.plan.tablespaces;
        Rules {
            tablespaces: (plain || ts.keep || !ts.map.is_empty()).then(|| ts.clone()),
            drop_owners_and_privileges: plain && !self.plan.roles,
            public_if_not_exists: plain,
            ..Rules::default()
        }
    }
}
