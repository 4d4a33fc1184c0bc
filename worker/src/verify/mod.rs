//! Dump verification (issue 14 item 4, docs/verification.md): a VERIFY_DUMP
//! task or a job's verification schedule reads a stored dump through
//! pg_restore, or restores it into a scratch database, compares every table's
//! rows with the dump-time counts, runs the user's checks, and always drops
//! the scratch database again.
mod compare;
mod config;
pub mod record;
mod schedule;
mod scratch;

pub use config::VerifyConfig;
pub use schedule::run as run_schedule;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use pgsnapman_proto::model::excerpt;
use pgsnapman_proto::v1::{
    DumpFormat, DumpType, DumpVerified, InstanceConnection, RowMismatch, TaskRef, VerifyDumpSpec,
    event,
};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::progress::TaskProgress;
use crate::restore::classify::Source;
use crate::restore::names::quote_ident;
use crate::restore::pipeline::{self, Cancelled, SpoolDir, Stored};
use crate::restore::target::Target;
use crate::runner::Runner;
use crate::runner::client::ClientTools;
use crate::runner::connection;

/// A DumpVerified event holds at most this many mismatches (the error says
/// how many more there were).
pub const MAX_MISMATCHES: usize = 100;

/// What a verification found (an `Err` is an error before any comparison).
#[derive(Default)]
struct Found {
    mismatches: Vec<RowMismatch>,
    failed_checks: Vec<String>,
    tables_checked: u32,
}

/// Who asked for a verification.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A leased VERIFY_DUMP task.
    Task(TaskRef),
    /// The verification schedule of this job (no task).
    Job(i64),
}

impl Origin {
    /// A number naming the run in spool directories and application names:
    /// a task's id, or far below any task id for a job's schedule.
    fn run_id(&self) -> i64 {
        match self {
            Origin::Task(t) => t.task_id,
            Origin::Job(job) => i64::MIN / 2 - job,
        }
    }
}

/// Runs a VERIFY_DUMP task. `None`: cancelled, nothing to report.
pub async fn task(
    shared: &crate::Shared,
    task: &TaskRef,
    spec: &VerifyDumpSpec,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Option<event::Body> {
    let v = run(
        &shared.runner,
        &Origin::Task(task.clone()),
        spec,
        cancel,
        progress,
    )
    .await?;
    if v.ok {
        note_ok(shared, &v);
    }
    Some(event::Body::DumpVerified(v))
}

/// Remembers a dump verified OK under its job (from its manifest), so the
/// job's schedule does not verify it again.
fn note_ok(shared: &crate::Shared, v: &DumpVerified) {
    let job_id = Uuid::parse_str(&v.dump_uuid)
        .ok()
        .and_then(|u| shared.runner.store().manifest(u).ok())
        .map(|m| m.meta.job_id);
    if let Some(job_id) = job_id
        && let Err(e) = record::note_ok(&shared.mirror, job_id, &v.dump_uuid, &v.method)
    {
        tracing::warn!(dump = %v.dump_uuid, "cannot remember the verification: {e:#}");
    }
}

/// Verifies one dump, within `verify.timeout`. `None`: cancelled, nothing
/// to report.
pub async fn run(
    runner: &Runner,
    origin: &Origin,
    spec: &VerifyDumpSpec,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Option<DumpVerified> {
    progress.set_phase("verify-dump");
    // Retention leaves a dump alone while it is read.
    let _reading = runner.in_use().hold(&spec.dump_uuid);
    let limit = runner.verify_config().timeout;
    let inner = cancel.child_token();
    let work = verify(runner, origin.run_id(), spec, &inner, progress);
    tokio::pin!(work);
    // On timeout the work is cancelled and driven to its end: it kills its
    // processes and drops its scratch database itself.
    let (result, timed_out) = tokio::select! {
        r = &mut work => (r, false),
        () = tokio::time::sleep(limit) => {
            inner.cancel();
            (work.await, true)
        }
    };
    let result = match result {
        Err(e) if e.is::<Cancelled>() && timed_out && !cancel.is_cancelled() => Err(anyhow!(
            "the verification did not finish within verify.timeout ({}): stopped",
            humantime::format_duration(limit)
        )),
        other => other,
    };
    let mut v = DumpVerified {
        task: match origin {
            Origin::Task(t) => Some(t.clone()),
            Origin::Job(_) => None,
        },
        job_id: match origin {
            Origin::Task(_) => 0,
            Origin::Job(j) => *j,
        },
        dump_uuid: spec.dump_uuid.clone(),
        method: spec.method.clone(),
        ..Default::default()
    };
    match result {
        Err(e) if e.is::<Cancelled>() => return None,
        Err(e) => v.error = format!("{e:#}"),
        Ok(mut found) => {
            let more = found.mismatches.len().saturating_sub(MAX_MISMATCHES);
            if more > 0 {
                found.mismatches.truncate(MAX_MISMATCHES);
                v.error = format!("… and {more} more table(s) whose counts differ");
            }
            v.ok = found.mismatches.is_empty() && found.failed_checks.is_empty();
            v.mismatches = found.mismatches;
            v.failed_checks = found.failed_checks;
            v.tables_checked = found.tables_checked;
        }
    }
    if v.ok {
        tracing::info!(dump = %v.dump_uuid, method = %v.method, tables = v.tables_checked, "dump verified");
    } else {
        tracing::warn!(dump = %v.dump_uuid, method = %v.method, error = %v.error,
            mismatches = v.mismatches.len(), failed_checks = v.failed_checks.len(), "dump verification failed");
    }
    Some(v)
}

async fn verify(
    runner: &Runner,
    run_id: i64,
    spec: &VerifyDumpSpec,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Result<Found> {
    match spec.method.as_str() {
        "read" => read(runner, spec, run_id, cancel, progress)
            .await
            .map(|()| Found::default()),
        "restore" => restore(runner, spec, run_id, cancel, progress).await,
        other => Err(anyhow!(
            "verification method {other:?} is not one this worker knows (read, restore)"
        )),
    }
}

/// The dump's uuid and its manifest's file names (the dump's size goes to
/// the progress).
fn stored_files(
    runner: &Runner,
    spec: &VerifyDumpSpec,
    progress: &TaskProgress,
) -> Result<(Uuid, Vec<String>)> {
    let uuid = Uuid::parse_str(&spec.dump_uuid)
        .with_context(|| format!("dump uuid {:?}", spec.dump_uuid))?;
    let m = runner
        .store()
        .manifest(uuid)
        .map_err(|e| anyhow!("dump {uuid} is not in this worker's store: {e}"))?;
    progress.total.store(m.logical_bytes, Ordering::Relaxed);
    Ok((uuid, m.files.iter().map(|f| f.name.clone()).collect()))
}

/// Fails unless a pg_restore/psql run went through: fatal errors, or a
/// failed exit with no harmless error to explain it.
fn check_ran(what: &str, ran: &pipeline::Ran) -> Result<()> {
    let c = &ran.classifier;
    if c.fatal_count > 0 {
        bail!("{what} failed ({}): {}", ran.status, c.fatal_text(3));
    }
    if !ran.status.success() && c.harmless_count == 0 {
        bail!("{what} failed ({})", ran.status);
    }
    Ok(())
}

/// `read`: every byte of the dump from the store (each chunk's hash is
/// checked on the way), and for archives pg_restore's table of contents and
/// a full pass of `pg_restore -f /dev/null`.
async fn read(
    runner: &Runner,
    spec: &VerifyDumpSpec,
    task_id: i64,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Result<()> {
    let (uuid, files) = stored_files(runner, spec, progress)?;
    let format = DumpFormat::try_from(spec.format).unwrap_or(DumpFormat::Unspecified);
    let cluster = DumpType::try_from(spec.dump_type).is_ok_and(DumpType::is_cluster_wide);
    if cluster || format == DumpFormat::Plain {
        return read_through(runner, uuid, files, cancel, &progress.done).await;
    }
    let tools = runner.clients().newest_psql()?.clone();
    let spool = spool_of(runner, task_id)?;
    let archive = archive(runner, uuid, format, files, &spool, cancel, progress).await?;
    for args in [vec!["--list"], vec!["--file=/dev/null"]] {
        let mut cmd = Command::new(tools.pg_restore());
        cmd.args(&args);
        let stdin = archive.input(&mut cmd);
        let ran = pipeline::run(
            cmd,
            "pg_restore",
            Source::PgRestore,
            stdin,
            true,
            Arc::new(AtomicU64::new(0)),
            cancel,
            runner.kill_grace(),
        )
        .await?;
        check_ran(&format!("pg_restore {}", args.join(" ")), &ran)?;
    }
    Ok(())
}

/// Reads every stored file of the dump to its end.
async fn read_through(
    runner: &Runner,
    uuid: Uuid,
    files: Vec<String>,
    cancel: &CancellationToken,
    done: &Arc<AtomicU64>,
) -> Result<()> {
    let store = runner.store().clone();
    let cancel = cancel.clone();
    let done = Arc::clone(done);
    let finished = tokio::task::spawn_blocking(move || -> Result<bool> {
        let mut buf = vec![0u8; 1 << 20];
        for name in files {
            let mut r = store
                .file_reader(uuid, &name)
                .map_err(|e| anyhow!("cannot read {name} of dump {uuid}: {e}"))?;
            loop {
                if cancel.is_cancelled() {
                    return Ok(false);
                }
                let n = std::io::Read::read(&mut r, &mut buf)
                    .map_err(|e| anyhow!("cannot read {name} of dump {uuid}: {e}"))?;
                if n == 0 {
                    break;
                }
                done.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        Ok(true)
    })
    .await
    .context("the reading thread failed")??;
    if !finished {
        return Err(Cancelled.into());
    }
    Ok(())
}

/// Where pg_restore reads an archive: the custom file streamed, a
/// directory spooled.
enum Archive {
    Stream(Stored),
    Path(std::path::PathBuf),
}

impl Archive {
    fn input(&self, cmd: &mut Command) -> pipeline::Stdin {
        match self {
            Archive::Stream(s) => pipeline::Stdin::Stored(s.clone()),
            Archive::Path(p) => {
                cmd.arg(p);
                pipeline::Stdin::Null
            }
        }
    }
}

async fn archive(
    runner: &Runner,
    uuid: Uuid,
    format: DumpFormat,
    files: Vec<String>,
    spool: &SpoolDir,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Result<Archive> {
    match format {
        DumpFormat::Custom => {
            let file = "archive.dump";
            if !files.iter().any(|f| f == file) {
                bail!("dump {uuid} has no {file} in the store");
            }
            Ok(Archive::Stream(Stored {
                store: runner.store().clone(),
                dump: uuid,
                file: file.to_string(),
            }))
        }
        DumpFormat::Directory => {
            let dir = spool.path().join("dump");
            std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
            pipeline::spool(
                runner.store(),
                uuid,
                files,
                &dir,
                Arc::clone(&progress.done),
                cancel,
            )
            .await?;
            Ok(Archive::Path(dir))
        }
        other => bail!("dump format {other:?} cannot be read by pg_restore"),
    }
}

/// `restore`: into a new scratch database on the spec's instance, then the
/// counts and the checks; the scratch database is dropped whatever happened.
async fn restore(
    runner: &Runner,
    spec: &VerifyDumpSpec,
    task_id: i64,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Result<Found> {
    let instance = spec
        .instance
        .as_ref()
        .ok_or_else(|| anyhow!("the task names no instance to restore into"))?;
    let (uuid, files) = stored_files(runner, spec, progress)?;
    let target = Target::new(runner.session(instance, &format!("pgsnapman-verify-{task_id}"))?);
    let admin = maintenance_db(instance);
    let version = target
        .sql(
            &admin,
            &["SELECT current_setting('server_version_num')"],
            cancel,
        )
        .await
        .with_context(|| format!("cannot connect to instance {:?}", instance.name))?;
    let major = version
        .trim()
        .parse::<u32>()
        .map(|n| n / 10_000)
        .map_err(|_| {
            anyhow!(
                "instance {:?} reports server_version_num {version:?}",
                instance.name
            )
        })?;
    let tools = runner.clients().for_major(major)?.clone();
    // What a killed verification of this worker left here goes first.
    if let Err(e) = scratch::sweep(
        &target,
        &admin,
        runner.worker_name(),
        &instance.name,
        cancel,
    )
    .await
    {
        tracing::warn!(instance = %instance.name, "cannot look for leftover scratch databases: {e:#}");
    }
    let scratch = scratch::name(runner.worker_name());
    target
        .sql(
            &admin,
            &[&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(&scratch)
            )],
            cancel,
        )
        .await
        .with_context(|| format!("cannot create the scratch database {scratch}"))?;
    // For people who find it: who made it. Ownership is in the name.
    let note = format!(
        "COMMENT ON DATABASE {} IS 'pgsnapman worker {} verifying dump {}: scratch, safe to drop'",
        quote_ident(&scratch),
        runner.worker_name().replace('\'', "''"),
        uuid
    );
    if let Err(e) = target.sql(&admin, &[&note], cancel).await {
        tracing::debug!(database = %scratch, "cannot comment on the scratch database: {e:#}");
    }
    tracing::info!(dump = %uuid, database = %scratch, instance = %instance.name, "restoring into a scratch database");
    let found = restore_and_compare(
        runner, &target, &tools, spec, uuid, files, &scratch, task_id, cancel, progress,
    )
    .await;
    // Always: on success, failure and cancellation alike.
    if let Err(e) = target.drop_database(&admin, &scratch).await {
        tracing::error!(database = %scratch, instance = %instance.name,
            "cannot drop the verification's scratch database; drop it by hand: {e:#}");
    }
    found
}

/// The run's spool directory: `restore--<task id>`, or for a job's
/// schedule `restore-<2^62 + job id>`: never a restore run's
/// `restore-<run id>`.
fn spool_of(runner: &Runner, task_id: i64) -> Result<SpoolDir> {
    SpoolDir::create(runner.spool_dir(), -task_id)
}

fn maintenance_db(instance: &InstanceConnection) -> String {
    if instance.maintenance_db.is_empty() {
        "postgres".to_string()
    } else {
        instance.maintenance_db.clone()
    }
}

#[allow(clippy::too_many_arguments)]
async fn restore_and_compare(
    runner: &Runner,
    target: &Target,
    tools: &ClientTools,
    spec: &VerifyDumpSpec,
    uuid: Uuid,
    files: Vec<String>,
    scratch: &str,
    task_id: i64,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Result<Found> {
    let format = DumpFormat::try_from(spec.format).unwrap_or(DumpFormat::Unspecified);
    let session = target.session();
    let conninfo = format!("--dbname={}", session.conninfo(scratch));
    let ran = if format == DumpFormat::Plain {
        let mut cmd = session.command(tools.psql());
        cmd.args(["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1"])
            .arg(&conninfo);
        // The scratch database is dropped: nothing needs its commits flushed.
        connection::commit_async(&mut cmd);
        let src = Stored {
            store: runner.store().clone(),
            dump: uuid,
            file: "dump.sql".to_string(),
        };
        pipeline::run(
            cmd,
            "psql",
            Source::Psql,
            Some(src),
            false,
            Arc::clone(&progress.done),
            cancel,
            runner.kill_grace(),
        )
        .await?
    } else {
        let spool = spool_of(runner, task_id)?;
        let archive = archive(runner, uuid, format, files, &spool, cancel, progress).await?;
        let mut cmd = session.command(tools.pg_restore());
        cmd.args(["--no-password", "--no-owner", "--no-privileges"])
            .arg(&conninfo);
        connection::commit_async(&mut cmd);
        let stdin = archive.input(&mut cmd);
        pipeline::run(
            cmd,
            "pg_restore",
            Source::PgRestore,
            stdin,
            false,
            Arc::clone(&progress.done),
            cancel,
            runner.kill_grace(),
        )
        .await?
    };
    check_ran("the restore", &ran)?;
    progress.set_phase("verify-compare");
    let mut found = Found::default();
    let expected: Vec<_> = spec
        .expected_rows
        .iter()
        .filter(|t| t.database.is_empty())
        .collect();
    if !expected.is_empty() {
        let sql = compare::count_sql(&expected);
        let out = target
            .sql(scratch, &[compare::COUNT_FN, &sql], cancel)
            .await
            .context("cannot count the restored rows")?;
        found.mismatches = compare::mismatches(&expected, &out)?;
        found.tables_checked = u32::try_from(expected.len()).unwrap_or(u32::MAX);
    }
    for check in &spec.checks {
        match target.sql(scratch, &[check], cancel).await {
            Ok(out) if out.trim() == "t" => {}
            Ok(out) => found.failed_checks.push(format!(
                "{} → returned {:?}, not one row holding true",
                excerpt(check),
                excerpt(out.trim())
            )),
            Err(e) if e.is::<Cancelled>() => return Err(e),
            Err(e) => found.failed_checks.push(format!(
                "{} → error: {}",
                excerpt(check),
                excerpt(&format!("{e:#}"))
            )),
        }
    }
    Ok(found)
}
