//! SCRIPT restores (docs/scripts.md, "Restore scripts"): a registered
//! script restores a dump instead of pg_restore/psql. The archive streams
//! from the store into its stdin (a directory dump is extracted first and
//! its path passed); it gets the TARGET's libpq environment; its stderr
//! lines become the run's log. The target database is the script's business.
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use pgsnapman_proto::script::validate_arguments;
use pgsnapman_proto::v1::{
    DumpFormat, DumpType, ExistingDatabase, RestoreSpec, RestoreTarget, RestoreType, ScriptSource,
};
use tokio_util::sync::CancellationToken;

use super::{
    BaseEnv, Deadline, Scratch, StderrLines, base_environment, check_source, format_name, observer,
    script_command,
};
use crate::progress::TaskProgress;
use crate::restore::Abort;
use crate::restore::log::RunLog;
use crate::restore::pipeline::{self, Cancelled, SpoolDir, Stored};
use crate::restore::plan::{parse_version, policy_label, restore_type_label};
use crate::runner::Runner;
use crate::runner::client::ClientTools;
use crate::runner::process::{self, Outcome, StdoutTo};

/// What the script reads: the stored file on stdin, or an extracted
/// directory dump (stdin is then /dev/null).
enum Archive {
    Stream(&'static str),
    Directory(PathBuf),
}

/// The store file a single-stream dump is kept in (docs/store.md).
fn stream_file(dump_type: DumpType, format: DumpFormat) -> &'static str {
    match (dump_type.is_cluster_wide(), format) {
        (true, _) => "dumpall.sql",
        (false, DumpFormat::Plain) => "dump.sql",
        _ => "archive.dump",
    }
}

/// One script restore: what the spec says, checked.
struct Job<'a> {
    spec: &'a RestoreSpec,
    target: &'a RestoreTarget,
    script: &'a ScriptSource,
    dump_uuid: uuid::Uuid,
    dump_type: DumpType,
    format: DumpFormat,
    /// The database the script gets as PGDATABASE: the target database, or
    /// the maintenance database for a cluster-wide dump.
    database: String,
    maintenance: String,
}

impl<'a> Job<'a> {
    fn check(runner: &Runner, spec: &'a RestoreSpec) -> Result<Self> {
        let target = spec
            .target
            .as_ref()
            .context("the task has no restore target")?;
        let script = check_source(
            runner.scripts_config(),
            runner.worker_name(),
            spec.script.as_ref(),
            &format!(
                "restore run {} is a restore by script {:?}",
                spec.run_id, target.script_name
            ),
        )?;
        if script.name != target.script_name {
            bail!(
                "restore run {} names script {:?} but the task carries script {:?}: not run",
                spec.run_id,
                target.script_name,
                script.name
            );
        }
        validate_arguments(&target.extra_options)?;
        let instance = spec
            .target_instance
            .as_ref()
            .context("the task names no target instance")?;
        let dump_uuid = uuid::Uuid::parse_str(&spec.dump_uuid)
            .map_err(|_| anyhow!("dump uuid {:?} is not a UUID", spec.dump_uuid))?;
        let dump_type = DumpType::try_from(spec.dump_type).unwrap_or(DumpType::Full);
        let format = match DumpFormat::try_from(spec.format) {
            Ok(DumpFormat::Unspecified) | Err(_) => dump_type.default_format(),
            Ok(f) => f,
        };
        let maintenance = if instance.maintenance_db.is_empty() {
            "postgres".to_string()
        } else {
            instance.maintenance_db.clone()
        };
        let database = if dump_type.is_cluster_wide() || target.database.is_empty() {
            maintenance.clone()
        } else {
            target.database.clone()
        };
        Ok(Self {
            spec,
            target,
            script,
            dump_uuid,
            dump_type,
            format,
            database,
            maintenance,
        })
    }

    /// The `PGSNAPMAN_*` variables of a restore script (docs/scripts.md).
    fn environment(
        &self,
        task_id: i64,
        server_version: &str,
        archive: &Archive,
    ) -> Vec<(&'static str, OsString)> {
        let (s, t) = (self.spec, self.target);
        let lower = |text: &str| OsString::from(text.to_ascii_lowercase());
        let restore_type = RestoreType::try_from(t.restore_type)
            .ok()
            .filter(|r| *r != RestoreType::Unspecified)
            .unwrap_or(RestoreType::Full);
        let existing = ExistingDatabase::try_from(t.existing_database)
            .ok()
            .filter(|e| *e != ExistingDatabase::Unspecified)
            .unwrap_or(ExistingDatabase::Rename);
        let mut env: Vec<(&'static str, OsString)> = vec![
            ("PGSNAPMAN_RESTORE_RUN_ID", s.run_id.to_string().into()),
            (
                "PGSNAPMAN_RESTORE_JOB_ID",
                s.restore_job_id.to_string().into(),
            ),
            ("PGSNAPMAN_TASK_ID", task_id.to_string().into()),
            ("PGSNAPMAN_DUMP_UUID", s.dump_uuid.clone().into()),
            ("PGSNAPMAN_DUMP_TYPE", lower(self.dump_type.label())),
            ("PGSNAPMAN_FORMAT", format_name(self.format).into()),
            (
                "PGSNAPMAN_SOURCE_DATABASE",
                s.source_database.clone().into(),
            ),
            ("PGSNAPMAN_SOURCE_SCHEMA", s.source_schema.clone().into()),
            (
                "PGSNAPMAN_DUMP_SERVER_VERSION",
                s.dump_server_version.clone().into(),
            ),
            ("PGSNAPMAN_DATABASE", self.database.clone().into()),
            ("PGSNAPMAN_SCHEMA", t.schema.clone().into()),
            ("PGSNAPMAN_MAINTENANCE_DB", self.maintenance.clone().into()),
            (
                "PGSNAPMAN_RESTORE_TYPE",
                lower(restore_type_label(restore_type)),
            ),
            ("PGSNAPMAN_EXISTING_DATABASE", lower(policy_label(existing))),
            (
                "PGSNAPMAN_ROLES",
                (if t.roles { "on" } else { "off" }).into(),
            ),
            ("PGSNAPMAN_OWNER", t.owner.clone().into()),
            ("PGSNAPMAN_SERVER_VERSION", server_version.into()),
        ];
        if let Archive::Directory(dir) = archive {
            env.push(("PGSNAPMAN_ARCHIVE_DIR", dir.into()));
        }
        env
    }
}

/// Runs the restore script of `spec` to its end. `Ok(warnings)`: it exited
/// 0; [`Abort`]: refused before the script ran (the dump is not here); any
/// other error: the run FAILED, saying why; [`Cancelled`]: cancelled from
/// outside (the scratch directory is gone either way).
pub async fn run(
    runner: &Runner,
    log: &RunLog,
    spec: &RestoreSpec,
    task_id: i64,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Result<u32> {
    let job = Job::check(runner, spec)?;
    let instance = spec
        .target_instance
        .as_ref()
        .context("the task names no target instance")?;
    let store = runner
        .store_of(&spec.dump_worker_name, spec.dump_store.as_ref())
        .map_err(|e| anyhow!(e))?;
    let manifest = store.manifest(job.dump_uuid).map_err(|e| {
        Abort(format!(
            "dump {} is not in this worker's store: {e}",
            job.dump_uuid
        ))
    })?;
    progress
        .total
        .store(manifest.logical_bytes, Ordering::Relaxed);
    let (version, tools) = target_tools(runner, &job, cancel).await?;
    let spool = SpoolDir::create(runner.spool_dir(), spec.run_id)?;
    let archive = if job.format == DumpFormat::Directory {
        extract(
            runner, &job, &store, &manifest, &spool, log, progress, cancel,
        )
        .await?
    } else {
        Archive::Stream(stream_file(job.dump_type, job.format))
    };
    let password = runner.instance_password(instance)?;
    let scratch = Scratch::create(
        runner.tmp_dir(),
        job.script,
        instance,
        password.as_deref().map(String::as_str),
    )?;
    let base = BaseEnv {
        instance,
        database: &job.database,
        worker: runner.worker_name(),
        bin_dir: &tools.dir,
        connect_timeout: runner.connect_timeout(),
    };
    let mut env = base_environment(&scratch, job.script, &base);
    env.extend(job.environment(task_id, &version, &archive));
    let cmd = script_command(&scratch, job.script, &job.target.extra_options, env)?;
    log.info(format!(
        "restoring dump {} ({} {}) with script {} ({}) onto instance \"{}\" ({}:{}), database \"{}\"; target PostgreSQL {version}, client tools from {}",
        job.dump_uuid,
        job.dump_type.label(),
        job.format.label(),
        job.script.name,
        job.script.hash,
        instance.name,
        instance.host,
        instance.port,
        job.database,
        tools.dir.display(),
    ))
    .await;
    let timeout = runner.scripts_config().timeout;
    let deadline = Deadline::start(cancel, timeout);
    let lines = Arc::new(Mutex::new(StderrLines::default()));
    let (stdin, feeder) = match &archive {
        Archive::Stream(file) => {
            let (r, w) = pipeline::pipe()?;
            let src = Stored {
                store: store.clone(),
                dump: job.dump_uuid,
                file: (*file).to_string(),
            };
            let feeder =
                pipeline::feed(src, w, Arc::clone(&progress.done), deadline.token().clone());
            (Some(r), Some(feeder))
        }
        Archive::Directory(_) => (None, None),
    };
    let program = format!("script {}", job.script.name);
    let outcome = process::run_observed(
        cmd,
        &program,
        stdin,
        StdoutTo::Null,
        Some(observer(Arc::clone(&lines))),
        deadline.token(),
        runner.kill_grace(),
    )
    .await;
    let fed = match feeder {
        Some(f) => Some(f.await.context("the feeding thread failed")?),
        None => None,
    };
    drop(scratch);
    let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|e| e.into_inner()));
    let outcome = outcome?;
    let ok = matches!(&outcome, Outcome::Exited { status, .. } if status.success());
    for line in lines.into_lines() {
        let text = format!("{program}: {line}");
        if ok {
            log.info(text).await;
        } else {
            log.warn(text).await;
        }
    }
    let (status, stderr) = match outcome {
        Outcome::Cancelled if deadline.fired() && !cancel.is_cancelled() => bail!(
            "{program} ran longer than scripts.timeout = {} and was killed (its whole process group)",
            humantime::format_duration(timeout)
        ),
        Outcome::Cancelled => return Err(Cancelled.into()),
        Outcome::Exited { status, stderr, .. } => (status, stderr),
    };
    if !status.success() {
        bail!(
            "{program} failed ({status}); its stderr ends with:\n{}",
            stderr.error_text()
        );
    }
    match fed {
        // A store failure: the script saw a short archive.
        Some(Err(e)) => Err(e),
        Some(Ok(false)) => {
            log.warn(format!(
                "{program} exited 0 before it read the whole archive ({} of {} bytes)",
                progress.done.load(Ordering::Relaxed),
                manifest.logical_bytes
            ))
            .await;
            Ok(1)
        }
        Some(Ok(true)) | None => Ok(0),
    }
}

/// The target's server version and the client tools of its major.
async fn target_tools(
    runner: &Runner,
    job: &Job<'_>,
    cancel: &CancellationToken,
) -> Result<(String, ClientTools)> {
    let instance = job
        .spec
        .target_instance
        .as_ref()
        .context("the task names no target instance")?;
    let session = runner.session(instance, &format!("pgsnapman-restore-{}", job.spec.run_id))?;
    let version = session
        .run(&job.maintenance, &["SHOW server_version"], cancel)
        .await
        .with_context(|| format!("connect to target instance \"{}\"", instance.name))?
        .ok_or(Cancelled)?;
    let major = parse_version(&version)
        .map(|(major, _)| major)
        .ok_or_else(|| anyhow!("unexpected server version {version:?} from the target"))?;
    let tools = runner.clients().for_major(major).with_context(|| {
        format!("cannot restore onto PostgreSQL {version} (its major needs its own client tools)")
    })?;
    Ok((version, tools.clone()))
}

/// Extracts a directory dump into the spool (its free space checked first)
/// for the script to read at `PGSNAPMAN_ARCHIVE_DIR`.
#[allow(clippy::too_many_arguments)]
async fn extract(
    runner: &Runner,
    job: &Job<'_>,
    store: &pgsnapman_store::Store,
    manifest: &pgsnapman_store::Manifest,
    spool: &SpoolDir,
    log: &RunLog,
    progress: &TaskProgress,
    cancel: &CancellationToken,
) -> Result<Archive> {
    let free = pipeline::free_bytes(runner.spool_dir())?;
    let need = manifest
        .logical_bytes
        .saturating_add(pipeline::SPOOL_RESERVE);
    if free < need {
        bail!(
            "the spool has {free} bytes free; extracting this directory dump for the script needs {} plus {} in reserve",
            manifest.logical_bytes,
            pipeline::SPOOL_RESERVE
        );
    }
    let dir = spool.path().join("dump");
    std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    log.info(format!(
        "extracting the directory dump ({} bytes) for the script",
        manifest.logical_bytes
    ))
    .await;
    let files = manifest.files.iter().map(|f| f.name.clone()).collect();
    pipeline::spool(
        store,
        job.dump_uuid,
        files,
        &dir,
        Arc::clone(&progress.done),
        cancel,
    )
    .await?;
    Ok(Archive::Directory(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_reads_the_file_a_restore_would() {
        assert_eq!(
            stream_file(DumpType::Script, DumpFormat::Custom),
            "archive.dump"
        );
        assert_eq!(stream_file(DumpType::Full, DumpFormat::Plain), "dump.sql");
        assert_eq!(
            stream_file(DumpType::Cluster, DumpFormat::Plain),
            "dumpall.sql"
        );
    }

    #[test]
    fn the_environment_names_run_dump_and_target() {
        let target = RestoreTarget {
            instance_id: 3,
            database: "copy".into(),
            existing_database: ExistingDatabase::DropBefore as i32,
            script_name: "r.sh".into(),
            ..Default::default()
        };
        let spec = RestoreSpec {
            run_id: 44,
            restore_job_id: 7,
            dump_uuid: "01a2".into(),
            source_database: "shop".into(),
            dump_server_version: "15.8".into(),
            target: Some(target.clone()),
            ..Default::default()
        };
        let script = ScriptSource::default();
        let job = Job {
            spec: &spec,
            target: &target,
            script: &script,
            dump_uuid: uuid::Uuid::nil(),
            dump_type: DumpType::ClusterSchema,
            format: DumpFormat::Directory,
            database: "copy".into(),
            maintenance: "postgres".into(),
        };
        let env = job.environment(9, "16.2", &Archive::Directory("/s/dump".into()));
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        assert_eq!(get("PGSNAPMAN_RESTORE_RUN_ID"), "44");
        assert_eq!(get("PGSNAPMAN_RESTORE_JOB_ID"), "7");
        assert_eq!(get("PGSNAPMAN_TASK_ID"), "9");
        assert_eq!(get("PGSNAPMAN_DUMP_TYPE"), "cluster_schema");
        assert_eq!(get("PGSNAPMAN_FORMAT"), "directory");
        assert_eq!(get("PGSNAPMAN_SOURCE_DATABASE"), "shop");
        assert_eq!(get("PGSNAPMAN_RESTORE_TYPE"), "full");
        assert_eq!(get("PGSNAPMAN_EXISTING_DATABASE"), "drop_before");
        assert_eq!(get("PGSNAPMAN_ROLES"), "off");
        assert_eq!(get("PGSNAPMAN_SERVER_VERSION"), "16.2");
        assert_eq!(get("PGSNAPMAN_ARCHIVE_DIR"), "/s/dump");
        let streamed = job.environment(0, "16.2", &Archive::Stream("archive.dump"));
        assert!(streamed.iter().all(|(n, _)| *n != "PGSNAPMAN_ARCHIVE_DIR"));
    }
}
