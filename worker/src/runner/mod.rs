//! Runs one dump described by a `DumpSpec`: probes the server, picks the
//! client of exactly its major, streams pg_dump's or pg_dumpall's output
//! into the pack store and describes the result as a `DumpFinished`. It
//! knows nothing of leases or the link.
pub mod client;
pub mod connection;
pub mod ingest;
pub mod metadata;
pub mod process;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::model::{validate_dump_options, validate_identifier};
use pgsnapman_proto::v1::{
    DumpFinished, DumpFormat, DumpSpec, DumpType, InstanceConnection, TaskRef,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::client::{ClientTools, Clients};
use self::connection::{PassFile, client_command, conninfo, schema_pattern};
use self::process::Outcome;

/// The probe query: `SHOW server_version` text, its number, and the size of
/// the connected database.
const PROBE_SQL: &str = "SELECT current_setting('server_version'), \
     current_setting('server_version_num'), pg_database_size(current_database()), \
     pg_is_in_recovery()";

/// Pause state of WAL replay on a standby (PostgreSQL 14 and later report
/// whether the pause has taken effect; older ones only that it was requested).
const PAUSE_STATE_SQL: &str = "SELECT CASE WHEN current_setting('server_version_num')::int >= 140000 \
     THEN pg_get_wal_replay_pause_state() \
     ELSE CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END END";

/// How a dump attempt ended.
#[derive(Debug)]
pub enum DumpResult {
    /// Attempted: succeeded or failed, to be recorded in the catalog.
    Finished(Box<DumpFinished>),
    /// The spec could not even be attempted.
    Rejected(String),
    /// Cancelled (lease lost, shutdown): report nothing.
    Cancelled,
    /// Dump on demand: the source did not ask for a dump (the reason).
    Skipped(String),
}

/// Runs dumps; shared by all tasks.
pub struct Runner {
    clients: Clients,
    store: pgsnapman_store::Store,
    /// This worker's name, and other workers' stores it may read.
    worker_name: String,
    shared_stores: std::collections::BTreeMap<String, PathBuf>,
    /// Directory-format dumps pass through here; emptied at start.
    spool_dir: PathBuf,
    tmp_dir: PathBuf,
    connect_timeout: Duration,
    kill_grace: Duration,
}

/// Everything checked about a spec before anything runs.
struct Checked<'a> {
    spec: &'a DumpSpec,
    instance: &'a pgsnapman_proto::v1::InstanceConnection,
    dump_type: DumpType,
    format: DumpFormat,
    /// The database the probe (and pg_dumpall's first connection) uses.
    connect_db: String,
}

fn check_spec(spec: &DumpSpec) -> Result<Checked<'_>> {
    let instance = spec
        .instance
        .as_ref()
        .context("the task names no instance")?;
    if instance.host.is_empty() {
        bail!("instance {} has no host", instance.instance_id);
    }
    let dump_type = DumpType::try_from(spec.dump_type)
        .map_err(|_| anyhow::anyhow!("unknown dump type {}", spec.dump_type))?;
    match dump_type {
        DumpType::Unspecified | DumpType::Script => {
            bail!(
                "dump type {} is not supported by this worker",
                dump_type.label()
            )
        }
        _ => {}
    }
    let format = DumpFormat::try_from(spec.format)
        .map_err(|_| anyhow::anyhow!("unknown dump format {}", spec.format))?;
    let format = if format == DumpFormat::Unspecified {
        dump_type.default_format()
    } else {
        format
    };
    if dump_type.is_cluster_wide() && format != DumpFormat::Plain {
        bail!(
            "dump type {} writes PLAIN only, not {}",
            dump_type.label(),
            format.label()
        );
    }
    validate_dump_options(&spec.extra_options)?;
    let maintenance_db = if instance.maintenance_db.is_empty() {
        "postgres".to_string()
    } else {
        instance.maintenance_db.clone()
    };
    let connect_db = if dump_type.is_cluster_wide() {
        maintenance_db
    } else {
        validate_identifier("database", &spec.database)?;
        spec.database.clone()
    };
    if !spec.schema.is_empty() {
        validate_identifier("schema", &spec.schema)?;
    }
    Ok(Checked {
        spec,
        instance,
        dump_type,
        format,
        connect_db,
    })
}

/// What the probe learned about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub version: String,
    pub version_num: u32,
    pub database_bytes: i64,
    /// The server is a standby (in recovery).
    pub in_recovery: bool,
}

impl ServerInfo {
    pub fn major(&self) -> u32 {
        self.version_num / 10000
    }
}

/// Parses psql's unaligned output `version|version_num|size`.
pub fn parse_probe(out: &str) -> Result<ServerInfo> {
    let line = out.trim();
    let mut parts = line.rsplitn(4, '|');
    let (Some(recovery), Some(size), Some(num), Some(version)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("unexpected probe output {line:?}");
    };
    let version_num: u32 = num
        .trim()
        .parse()
        .with_context(|| format!("server_version_num {num:?} is not a number"))?;
    let database_bytes: i64 = size.trim().parse().unwrap_or(-1);
    Ok(ServerInfo {
        version: version.to_string(),
        version_num,
        database_bytes,
        in_recovery: recovery.trim() == "t",
    })
}

/// The name a single-stream dump's output gets in the store.
fn stream_file_name(c: &Checked<'_>) -> &'static str {
    if c.dump_type.is_cluster_wide() {
        "dumpall.sql"
    } else if c.format == DumpFormat::Plain {
        "dump.sql"
    } else {
        "archive.dump"
    }
}

/// Arguments of the dump program (after the program name). Output goes to
/// stdout, or into `directory` for the directory format.
fn dump_args(c: &Checked<'_>, directory: Option<&Path>, conninfo: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if c.dump_type.is_cluster_wide() {
        args.push("--no-password".into());
        match c.dump_type {
            DumpType::ClusterSchema => args.push("--schema-only".into()),
            DumpType::Globals => args.push("--globals-only".into()),
            _ => {}
        }
        // pg_dumpall ignores the conninfo's dbname; -l names the first database.
        args.push(format!("--database={}", c.connect_db).into());
    } else {
        match c.format {
            DumpFormat::Directory => {
                args.push("--format=directory".into());
                args.push("--compress=0".into());
                if c.spec.parallel_jobs > 1 {
                    args.push(format!("--jobs={}", c.spec.parallel_jobs).into());
                }
            }
            DumpFormat::Plain => args.push("--format=plain".into()),
            _ => {
                args.push("--format=custom".into());
                args.push("--compress=0".into());
            }
        }
        if let Some(dir) = directory {
            let mut file = OsString::from("--file=");
            file.push(dir);
            args.push(file);
        }
        args.push("--no-password".into());
        if c.dump_type == DumpType::Schema {
            args.push("--schema-only".into());
        }
        if !c.spec.schema.is_empty() {
            args.push(format!("--schema={}", schema_pattern(&c.spec.schema)).into());
        }
    }
    args.extend(c.spec.extra_options.iter().map(OsString::from));
    args.push(format!("--dbname={conninfo}").into());
    args
}

/// Whether a TAKE_BACKUP value asks for a dump (`None`) or not (why).
fn demand_decision(val: &str) -> Option<String> {
    let v = val.trim();
    if v.is_empty() {
        Some("no dump requested: pgsnapman.metainfo has no TAKE_BACKUP row".into())
    } else if v.eq_ignore_ascii_case("no") {
        Some("no dump requested: pgsnapman.metainfo TAKE_BACKUP is NO".into())
    } else {
        None
    }
}

/// What the manifest says about the dump (everything the catalog row and a
/// restore elsewhere need).
fn manifest_meta(f: &DumpFinished, c: &Checked<'_>) -> Result<pgsnapman_store::ManifestMeta> {
    let restore_metadata = if f.restore_metadata_json.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&f.restore_metadata_json).context("restore metadata is not JSON")?
    };
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(pgsnapman_proto::from_timestamp)
            .unwrap_or_else(chrono::Utc::now)
    };
    Ok(pgsnapman_store::ManifestMeta {
        job_id: f.job_id,
        task_id: f.task.as_ref().map_or(0, |t| t.task_id),
        instance_id: f.instance_id,
        host: f.host.clone(),
        port: f.port,
        database: f.database.clone(),
        schema: f.schema.clone(),
        dump_type: c.dump_type.label().to_string(),
        format: c.format.label().to_string(),
        server_version: f.server_version.clone(),
        client_version: f.client_version.clone(),
        started_at: time(&f.started_at),
        finished_at: chrono::Utc::now(),
        database_bytes: f.database_bytes,
        notes: f.error.clone(),
        restore_metadata,
    })
}

impl Runner {
    /// `data_dir` must be absolute and exist.
    pub fn new(
        clients: Clients,
        data_dir: &Path,
        store: pgsnapman_store::Store,
        connect_timeout: Duration,
        kill_grace: Duration,
    ) -> Result<Self> {
        let spool_dir = data_dir.join("spool");
        let tmp_dir = data_dir.join("tmp");
        for d in [&spool_dir, &tmp_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        Ok(Self {
            clients,
            store,
            worker_name: String::new(),
            shared_stores: std::collections::BTreeMap::new(),
            spool_dir,
            tmp_dir,
            connect_timeout,
            kill_grace,
        })
    }

    /// The pack store dumps go into.
    pub fn store(&self) -> &pgsnapman_store::Store {
        &self.store
    }

    /// Lets this worker read other workers' stores (restore worker).
    pub fn with_shared_stores(
        mut self,
        worker_name: &str,
        shared: std::collections::BTreeMap<String, PathBuf>,
    ) -> Self {
        self.worker_name = worker_name.to_string();
        self.shared_stores = shared;
        self
    }

    /// The store that holds the dumps of `worker`: this worker's own, or
    /// (read-only, opened now so it sees the latest dumps) another worker's
    /// from `restore.shared_stores`.
    pub fn store_of(&self, worker: &str) -> std::result::Result<pgsnapman_store::Store, String> {
        if worker.is_empty() || worker == self.worker_name {
            return Ok(self.store.clone());
        }
        let Some(dir) = self.shared_stores.get(worker) else {
            return Err(format!(
                "the dump is in the store of worker {worker:?}, which this worker cannot read: \
                 add its data directory to restore.shared_stores"
            ));
        };
        pgsnapman_store::Store::open_read_only(dir).map_err(|e| {
            format!(
                "cannot read the store of worker {worker:?} at {}: {e}",
                dir.display()
            )
        })
    }

    /// The client tools found on this machine.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Scratch space for files that must be seekable (emptied at start).
    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// Where temporary password files go (emptied at start).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp_dir
    }

    /// libpq `connect_timeout` for every connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Time between SIGTERM and SIGKILL for a cancelled child.
    pub fn kill_grace(&self) -> Duration {
        self.kill_grace
    }

    pub fn client_majors(&self) -> Vec<u32> {
        self.clients.majors()
    }

    /// Removes leftovers of dumps that were running when the worker died:
    /// the spool (directory-format files not yet stored) and stale password
    /// files. The store cleans its own leftovers when it opens.
    pub fn clean_leftovers(&self) {
        for dir in [&self.tmp_dir, &self.spool_dir] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                tracing::info!(path = %p.display(), "removing a leftover of an earlier run");
                let res = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                if let Err(err) = res {
                    tracing::warn!(path = %p.display(), "cannot remove a leftover: {err}");
                }
            }
        }
    }

    /// Runs the dump of `spec`. `progress` receives the bytes written so far.
    pub async fn dump(
        &self,
        task: Option<TaskRef>,
        spec: &DumpSpec,
        cancel: &CancellationToken,
        progress: Arc<AtomicU64>,
    ) -> DumpResult {
        let checked = match check_spec(spec) {
            Ok(c) => c,
            Err(err) => return DumpResult::Rejected(format!("{err:#}")),
        };
        let started_at = chrono::Utc::now();
        let dump_uuid = Uuid::now_v7();
        let instance = checked.instance;
        let mut finished = DumpFinished {
            dump_uuid: dump_uuid.to_string(),
            task: task.clone(),
            job_id: spec.job_id,
            instance_id: instance.instance_id,
            host: instance.host.clone(),
            port: if instance.port == 0 {
                5432
            } else {
                instance.port
            },
            database: spec.database.clone(),
            schema: spec.schema.clone(),
            dump_type: checked.dump_type as i32,
            format: checked.format as i32,
            succeeded: false,
            error: String::new(),
            started_at: Some(pgsnapman_proto::timestamp(started_at)),
            finished_at: None,
            dump_bytes: 0,
            stored_bytes: 0,
            database_bytes: -1,
            server_version: String::new(),
            client_version: String::new(),
            location: String::new(),
            restore_metadata_json: String::new(),
        };
        let app_name = match &task {
            Some(t) => format!("pgsnapman-dump-{}", t.task_id),
            None => format!("pgsnapman-dump-job-{}", spec.job_id),
        };
        // Dump on demand applies to scheduled runs of database dumps only.
        let on_demand = spec.on_demand && task.is_none() && !checked.dump_type.is_cluster_wide();
        if on_demand {
            match self.demand(&checked, &app_name).await {
                Ok(None) => tracing::info!("dump requested by the source's TAKE_BACKUP marker"),
                Ok(Some(reason)) => return DumpResult::Skipped(reason),
                Err(err) => {
                    finished.error = format!("cannot read the dump-on-demand marker: {err:#}");
                    finished.finished_at = Some(pgsnapman_proto::timestamp(chrono::Utc::now()));
                    return DumpResult::Finished(Box::new(finished));
                }
            }
        }
        let mut paused = false;
        let result = self
            .attempt(
                &checked,
                &app_name,
                cancel,
                progress,
                &mut finished,
                &mut paused,
            )
            .await;
        if paused {
            // Always resume, whatever happened to the dump.
            match self
                .sql(&checked, &app_name, "SELECT pg_wal_replay_resume()")
                .await
            {
                Ok(_) => tracing::info!("WAL replay resumed"),
                Err(err) => {
                    tracing::error!("could not resume WAL replay on the standby: {err:#}");
                    if result.is_ok() {
                        finished.error =
                            format!("WAL replay could not be resumed after the dump: {err:#}");
                    }
                }
            }
        }
        if cancel.is_cancelled() {
            // Cancelled after the dump was stored: nobody will record it.
            if result.as_ref().is_ok_and(|stored| *stored) {
                self.discard(&finished.dump_uuid).await;
            }
            self.reclaim().await;
            return DumpResult::Cancelled;
        }
        match result {
            Ok(true) if on_demand => {
                finished.succeeded = true;
                let reset = "UPDATE pgsnapman.metainfo SET val = 'NO' WHERE key = 'TAKE_BACKUP'";
                if let Err(err) = self.sql(&checked, &app_name, reset).await {
                    tracing::warn!("cannot reset the dump-on-demand marker: {err:#}");
                    finished.error = format!(
                        "the dump-on-demand marker could not be reset to NO (the next scheduled run dumps again): {err:#}"
                    );
                }
            }
            Ok(true) => finished.succeeded = true,
            Ok(false) => {
                self.reclaim().await;
                return DumpResult::Cancelled;
            }
            Err(err) => {
                finished.succeeded = false;
                finished.error = format!("{err:#}");
                finished.restore_metadata_json.clear();
                self.reclaim().await;
            }
        }
        finished.finished_at = Some(pgsnapman_proto::timestamp(chrono::Utc::now()));
        DumpResult::Finished(Box::new(finished))
    }

    /// Probe, dump, commit. Ok(false) means cancelled; Err is a failed dump
    /// whose message is the error text.
    async fn attempt(
        &self,
        c: &Checked<'_>,
        app_name: &str,
        cancel: &CancellationToken,
        progress: Arc<AtomicU64>,
        finished: &mut DumpFinished,
        paused: &mut bool,
    ) -> Result<bool> {
        let dump_uuid = Uuid::parse_str(&finished.dump_uuid).context("dump uuid")?;
        let passfile = if c.instance.password.is_empty() {
            None
        } else {
            Some(PassFile::create(&self.tmp_dir, c.instance)?)
        };
        let passfile_path = passfile.as_ref().map(|p| p.path().to_path_buf());
        let command = |program: PathBuf| client_command(program, passfile_path.as_deref());

        // 1. Probe the server with the newest psql.
        let pass_path = passfile_path.as_deref();
        let Some(out) = self
            .psql(
                c,
                app_name,
                pass_path,
                PROBE_SQL,
                "probing the server",
                cancel,
            )
            .await?
        else {
            return Ok(false);
        };
        let info = parse_probe(&out)?;
        finished.server_version = info.version.clone();
        if info.in_recovery {
            if c.spec.pause_replay {
                self.pause_replay(c, app_name, paused).await?;
                finished.error =
                    "dumped from a standby; WAL replay was paused during the dump".into();
            } else {
                finished.error = "dumped from a standby with replay running (a conflict with recovery can cancel the dump; see the job's pause_replay)".into();
            }
        }
        if !c.dump_type.is_cluster_wide() {
            finished.database_bytes = info.database_bytes;
        }

        // 2. What pg_dump leaves out of a database dump (owner, encoding,
        //    locale, tablespace, ACL, settings, referenced roles).
        if !c.dump_type.is_cluster_wide() {
            let out = self
                .psql(
                    c,
                    app_name,
                    pass_path,
                    metadata::METADATA_SQL,
                    "reading the restore metadata",
                    cancel,
                )
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot read the database's restore metadata: {e:#}")
                })?;
            let Some(out) = out else {
                return Ok(false);
            };
            finished.restore_metadata_json = metadata::parse(&out)?.to_string();
        }

        // 3. The client of exactly the server's major.
        let tools: &ClientTools = self.clients.for_major(info.major())?;
        finished.client_version = tools.version.clone();

        // 4. Run it, streaming into the store (no copy on disk; a directory
        //    dump passes through the spool one file at a time).
        let (program, name) = if c.dump_type.is_cluster_wide() {
            (tools.pg_dumpall(), "pg_dumpall")
        } else {
            (tools.pg_dump(), "pg_dump")
        };
        let directory = !c.dump_type.is_cluster_wide() && c.format == DumpFormat::Directory;
        let spool = self.spool_dir.join(dump_uuid.to_string());
        let dump_conninfo = conninfo(c.instance, &c.connect_db, self.connect_timeout, app_name);
        let mut cmd = command(program);
        cmd.args(dump_args(
            c,
            directory.then_some(spool.as_path()),
            &dump_conninfo,
        ));
        tracing::info!(
            program = name,
            major = tools.major,
            server_version = %info.version,
            dump_id = %dump_uuid,
            "starting dump into the store"
        );
        let store = self.store.clone();
        let ingest = tokio::task::spawn_blocking(move || store.begin(dump_uuid))
            .await
            .context("start storing the dump")?
            .map_err(|e| anyhow::anyhow!("cannot start storing the dump: {e}"))?;
        let file_name = stream_file_name(c);
        let ended = if directory {
            ingest::directory(
                ingest,
                spool.clone(),
                cmd,
                name,
                cancel,
                self.kill_grace,
                progress,
            )
            .await?
        } else {
            ingest::stream(
                ingest,
                file_name,
                cmd,
                name,
                cancel,
                self.kill_grace,
                progress,
            )
            .await?
        };
        let (ingest, tail) = match ended {
            ingest::Ended::Cancelled => return Ok(false),
            ingest::Ended::Stored { ingest, tail } => (*ingest, tail),
        };

        // 5. What was stored reads back: the archive's table of contents
        //    through pg_restore --list, a plain dump's completion marker.
        let ingest = if directory {
            let check_dir = self.spool_dir.join(format!("{dump_uuid}.check"));
            let (ingest, listed) = ingest::check_directory_toc(
                ingest,
                check_dir,
                tools.pg_restore(),
                cancel,
                self.kill_grace,
            )
            .await?;
            if !listed {
                return Ok(false);
            }
            ingest
        } else if c.format == DumpFormat::Plain || c.dump_type.is_cluster_wide() {
            if !ingest::plain_dump_complete(&tail) {
                bail!(
                    "{name} exited 0 but its output lacks the \"dump complete\" marker at the end"
                );
            }
            ingest
        } else {
            let (ingest, listed) = ingest::check_stream_toc(
                ingest,
                file_name,
                tools.pg_restore(),
                cancel,
                self.kill_grace,
            )
            .await?;
            if !listed {
                return Ok(false);
            }
            ingest
        };

        // 6. The manifest makes the dump exist (durable before it is reported).
        let meta = manifest_meta(finished, c)?;
        let manifest = tokio::task::spawn_blocking(move || ingest.finish(meta))
            .await
            .context("finish storing the dump")?
            .map_err(|e| anyhow::anyhow!("cannot store the dump's manifest: {e}"))?;
        finished.dump_bytes = manifest.logical_bytes;
        finished.stored_bytes = manifest.new_stored_bytes;
        finished.location = self
            .store
            .root()
            .join("manifests")
            .join(format!("{dump_uuid}.json"))
            .to_string_lossy()
            .into_owned();
        Ok(true)
    }

    /// Runs one SQL statement on the spec's connection database with the
    /// newest psql; returns its unaligned output.
    async fn sql(&self, c: &Checked<'_>, app_name: &str, sql: &str) -> Result<String> {
        // Not cancellable: resuming replay must finish even during shutdown.
        let never = CancellationToken::new();
        let what = "running a statement";
        match self
            .query(c.instance, &c.connect_db, app_name, sql, what, &never)
            .await?
        {
            Some(out) => Ok(out),
            None => bail!("psql was cancelled"),
        }
    }

    /// Runs one SQL statement with the newest psql on `database` of
    /// `instance`, the password (if any) from a private password file;
    /// returns the trimmed unaligned output, `None` if cancelled. A failure
    /// carries psql's error lines (or its exit status while `what`).
    pub async fn query(
        &self,
        instance: &InstanceConnection,
        database: &str,
        app_name: &str,
        sql: &str,
        what: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<String>> {
        let passfile = if instance.password.is_empty() {
            None
        } else {
            Some(PassFile::create(&self.tmp_dir, instance)?)
        };
        let path = passfile.as_ref().map(PassFile::path);
        self.psql_at(instance, database, app_name, path, &[sql], what, cancel)
            .await
    }

    /// `psql_at` on the spec's connection database.
    async fn psql(
        &self,
        c: &Checked<'_>,
        app_name: &str,
        passfile: Option<&Path>,
        sql: &str,
        what: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<String>> {
        self.psql_at(
            c.instance,
            &c.connect_db,
            app_name,
            passfile,
            &[sql],
            what,
            cancel,
        )
        .await
    }

    /// Runs SQL statements (each its own `-c`, in order, stopping at the
    /// first error) with the newest psql on `database` of `instance`, the
    /// password (if any) from `passfile`; returns the trimmed unaligned
    /// output, `None` if cancelled. A failure carries psql's error lines (or
    /// its exit status while `what`). The client encoding is the database's:
    /// names in shared catalogs (databases, roles) come back as their
    /// creator wrote them.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn psql_at(
        &self,
        instance: &InstanceConnection,
        database: &str,
        app_name: &str,
        passfile: Option<&Path>,
        statements: &[&str],
        what: &str,
        cancel: &CancellationToken,
    ) -> Result<Option<String>> {
        let psql = self.clients.newest_psql()?;
        let mut cmd = client_command(psql.psql(), passfile);
        let info = conninfo(instance, database, self.connect_timeout, app_name);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "--no-password",
            "-v",
            "ON_ERROR_STOP=1",
        ]);
        for sql in statements {
            cmd.arg("-c").arg(sql);
        }
        cmd.arg(format!("--dbname={info}"));
        match process::run(cmd, "psql", true, cancel, self.kill_grace).await? {
            Outcome::Cancelled => Ok(None),
            Outcome::Exited {
                status,
                stdout,
                stderr,
            } => {
                if !status.success() {
                    let text = stderr.error_text();
                    if text.is_empty() {
                        bail!("psql exited with {status} while {what}");
                    }
                    bail!("{text}");
                }
                Ok(Some(String::from_utf8_lossy(&stdout).trim().to_string()))
            }
        }
    }

    /// Reads the dump-on-demand marker: `None` when the source asks for a
    /// dump, otherwise why not. The marker is never created by pgsnapman.
    async fn demand(&self, c: &Checked<'_>, app_name: &str) -> Result<Option<String>> {
        let exists = self
            .sql(
                c,
                app_name,
                "SELECT to_regclass('pgsnapman.metainfo') IS NOT NULL",
            )
            .await?;
        if exists != "t" {
            return Ok(Some(
                "no dump requested: the source has no table pgsnapman.metainfo (see docs/worker.md, dump on demand)"
                    .into(),
            ));
        }
        let val = self
            .sql(
                c,
                app_name,
                "SELECT val FROM pgsnapman.metainfo WHERE key = 'TAKE_BACKUP'",
            )
            .await?;
        Ok(demand_decision(&val))
    }

    /// Pauses WAL replay and waits (up to 30 s) until the pause took effect.
    async fn pause_replay(&self, c: &Checked<'_>, app_name: &str, paused: &mut bool) -> Result<()> {
        self.sql(c, app_name, "SELECT pg_wal_replay_pause()")
            .await
            .context("cannot pause WAL replay on the standby")?;
        *paused = true;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let state = self.sql(c, app_name, PAUSE_STATE_SQL).await?;
            if state == "paused" {
                tracing::info!("WAL replay paused on the standby");
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("WAL replay did not pause within 30s (state: {state})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Collects garbage if an abandoned ingest (a failed or cancelled dump,
    /// or a crash before this start) left sealed packs nothing uses: after a
    /// full disk that space is needed at once. Only deletes dead packs (no
    /// repacking), so it costs a scan of the manifests and the index.
    pub async fn reclaim(&self) {
        if !self.store.has_garbage() {
            return;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.gc(0.0)).await {
            Ok(Ok(r)) => tracing::info!(
                reclaimed_bytes = r.reclaimed_bytes,
                packs_deleted = r.packs_deleted,
                "removed what abandoned writes left in the store"
            ),
            Ok(Err(e)) => tracing::warn!("cannot collect the store's garbage: {e}"),
            Err(e) => tracing::warn!("cannot collect the store's garbage: {e}"),
        }
    }

    /// Deletes a stored dump that will never be recorded (cancelled, or its
    /// result could not be queued). Its chunks go at the next gc.
    pub async fn discard(&self, dump_uuid: &str) {
        let Ok(uuid) = Uuid::parse_str(dump_uuid) else {
            return;
        };
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.delete_dump(uuid)).await {
            Ok(Ok(())) => tracing::info!(dump_id = %uuid, "unrecorded dump removed from the store"),
            Ok(Err(pgsnapman_store::StoreError::ManifestNotFound(_))) => {}
            Ok(Err(e)) => tracing::warn!(dump_id = %uuid, "cannot remove an unrecorded dump: {e}"),
            Err(e) => tracing::warn!(dump_id = %uuid, "cannot remove an unrecorded dump: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsnapman_proto::v1::InstanceConnection;

    fn spec(dump_type: DumpType, format: DumpFormat) -> DumpSpec {
        DumpSpec {
            job_id: 3,
            instance: Some(InstanceConnection {
                instance_id: 2,
                name: "i".into(),
                host: "127.0.0.1".into(),
                port: 5432,
                user: "postgres".into(),
                password: String::new(),
                maintenance_db: "postgres".into(),
                status: 1,
                discover: false,
                ..Default::default()
            }),
            database: "db".into(),
            schema: String::new(),
            dump_type: dump_type as i32,
            format: format as i32,
            pause_replay: false,
            on_demand: false,
            extra_options: vec![],
            parallel_jobs: 0,
        }
    }

    fn args_of(s: &DumpSpec) -> Vec<String> {
        let c = check_spec(s).unwrap();
        let dir = (c.format == DumpFormat::Directory).then_some(Path::new("/spool/x"));
        dump_args(&c, dir, "CONN")
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn demand_marker_values() {
        assert!(demand_decision("").is_some());
        assert!(demand_decision(" no\n").is_some());
        assert!(demand_decision("NO").is_some());
        assert_eq!(demand_decision("YES"), None);
        assert_eq!(demand_decision("please"), None);
    }

    #[test]
    fn probe_output_is_parsed() {
        let i = parse_probe("15.14 (Debian 15.14-0+deb12u1)|150014|7890123|f\n").unwrap();
        assert!(!i.in_recovery);
        assert!(parse_probe("15.1|150001|1|t").unwrap().in_recovery);
        assert_eq!(i.version, "15.14 (Debian 15.14-0+deb12u1)");
        assert_eq!(i.major(), 15);
        assert_eq!(i.database_bytes, 7_890_123);
        assert_eq!(parse_probe("9.6.24|90624|1|f").unwrap().major(), 9);
        assert!(parse_probe("garbage").is_err());
    }

    #[test]
    fn full_and_schema_dumps_use_pg_dump_arguments() {
        let mut s = spec(DumpType::Full, DumpFormat::Unspecified);
        s.schema = "Sch \"x\"".into();
        s.extra_options = vec!["--no-comments".into()];
        assert_eq!(
            args_of(&s),
            [
                "--format=custom",
                "--compress=0",
                "--no-password",
                "--schema=\"Sch \"\"x\"\"\"",
                "--no-comments",
                "--dbname=CONN"
            ]
        );
        let s = spec(DumpType::Schema, DumpFormat::Custom);
        assert!(args_of(&s).contains(&"--schema-only".to_string()));
        let mut s = spec(DumpType::Full, DumpFormat::Directory);
        s.parallel_jobs = 4;
        let a = args_of(&s);
        assert!(
            a.contains(&"--format=directory".to_string())
                && a.contains(&"--jobs=4".to_string())
                && a.contains(&"--file=/spool/x".to_string())
        );
    }

    #[test]
    fn cluster_dumps_use_pg_dumpall_arguments() {
        let mut s = spec(DumpType::Globals, DumpFormat::Unspecified);
        s.database = String::new();
        assert_eq!(
            args_of(&s),
            [
                "--no-password",
                "--globals-only",
                "--database=postgres",
                "--dbname=CONN"
            ]
        );
        assert!(check_spec(&spec(DumpType::Cluster, DumpFormat::Custom)).is_err());
    }

    #[test]
    fn bad_specs_are_rejected_with_a_reason() {
        let mut s = spec(DumpType::Full, DumpFormat::Custom);
        s.extra_options = vec!["-Z9".into()];
        let err = check_spec(&s).err().unwrap().to_string();
        assert!(err.contains("-Z9"), "{err}");
        let mut s = spec(DumpType::Full, DumpFormat::Custom);
        s.database = String::new();
        assert!(check_spec(&s).is_err());
        assert!(check_spec(&spec(DumpType::Script, DumpFormat::Plain)).is_err());
        let mut s = spec(DumpType::Full, DumpFormat::Custom);
        s.instance = None;
        assert!(check_spec(&s).is_err());
    }
}
