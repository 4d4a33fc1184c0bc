//! The restore runner: carries out one `RestoreSpec` on the worker — the
//! dump read from the store, the client tools of the target's major, the
//! target database created, swapped or changed as the spec's policy says,
//! the restore log streamed to the outbox, and one `RestoreFinished` at the
//! end. A failed restore leaves the target as it was and removes what the
//! run created. Knows nothing of leases beyond the task's cancel token.
//! Decisions and their reasons: docs/worker.md, "Restores".
pub mod classify;
mod cluster;
mod custom;
mod database;
pub mod log;
pub mod metadata;
pub mod names;
mod order;
mod pipe_out;
pub mod pipeline;
pub mod plan;
pub mod script;
mod served;
pub mod target;
pub mod toc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::v1::{RestoreFinished, RestoreSpec, RestoreStatus, TaskRef, event};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use self::log::RunLog;
use self::pipeline::{Cancelled, SpoolDir};
use self::plan::{Kind, Plan, knows_restrict, parse_version};
use self::target::{Facts, Target};
use crate::outbox::Outbox;
use crate::progress::TaskProgress;
use crate::runner::Runner;
use crate::runner::client::ClientTools;

/// A refusal before anything changed: the run ends ABORTED.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Abort(pub String);

/// How a run ended.
#[derive(Debug)]
enum Ending {
    Succeeded,
    Failed(String),
    Aborted(String),
    /// Cancelled with the target as it was: nothing is reported.
    Cancelled,
}

/// Runs a leased RESTORE task: holds its dump (`InUse`), waits for one of
/// the restore `slots` (`restore.max_concurrent`; the lease is renewed
/// meanwhile), then restores. `None`: cancelled, nothing to report.
pub async fn task(
    slots: &Semaphore,
    runner: &Runner,
    outbox: Arc<Outbox>,
    task: &TaskRef,
    spec: &RestoreSpec,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Option<event::Body> {
    // Held from the lease on, not only from the slot on: retention on this
    // worker never removes a dump whose restore waits for a slot.
    let _waiting = runner.in_use().hold(&spec.dump_uuid);
    progress.set_phase("restore-wait");
    let permit = tokio::select! {
        p = slots.acquire() => p.ok(),
        () = cancel.cancelled() => None,
    };
    let Some(_permit) = permit else {
        tracing::info!("restore cancelled while waiting for a restore slot");
        return None;
    };
    restore(runner, outbox, Some(task.clone()), spec, cancel, progress)
        .await
        .map(event::Body::RestoreFinished)
}

/// Runs one restore. Progress: `progress.total` is the dump's size,
/// `progress.done` the bytes fed to pg_restore/psql or spooled. `None`:
/// cancelled with the target as it was (the log says so; nothing else is
/// reported).
pub async fn restore(
    runner: &Runner,
    outbox: Arc<Outbox>,
    task: Option<TaskRef>,
    spec: &RestoreSpec,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> Option<RestoreFinished> {
    let started_at = chrono::Utc::now();
    let clock = Instant::now();
    progress.set_phase("restore");
    // Retention leaves the dump alone until the run ends.
    let _reading = runner.in_use().hold(&spec.dump_uuid);
    let log = RunLog::new(outbox, spec.run_id);
    let by_script = spec
        .target
        .as_ref()
        .is_some_and(|t| !t.script_name.is_empty());
    let (ending, warnings) = match plan::check(spec) {
        // A registered script restores instead of pg_restore/psql.
        _ if by_script => script_attempt(runner, &log, &task, spec, cancel, progress).await,
        Err(reason) => (Ending::Aborted(reason), 0),
        Ok(plan) => attempt(runner, &log, plan, spec, cancel, progress).await,
    };
    let secs = clock.elapsed().as_secs_f64();
    let mut finished = RestoreFinished {
        task,
        run_id: spec.run_id,
        status: RestoreStatus::Failed as i32,
        error: String::new(),
        started_at: Some(pgsnapman_proto::timestamp(started_at)),
        finished_at: Some(pgsnapman_proto::timestamp(chrono::Utc::now())),
        bytes_total: progress.total.load(Ordering::Relaxed),
        bytes_done: progress.done.load(Ordering::Relaxed),
        warnings,
    };
    match ending {
        Ending::Cancelled => {
            log.info("the restore was cancelled; the target is as it was")
                .await;
            log.close().await;
            return None;
        }
        Ending::Succeeded => {
            finished.status = RestoreStatus::Succeeded as i32;
        }
        Ending::Failed(error) => {
            log.error(format!("restore failed: {error}")).await;
            finished.error = error;
        }
        Ending::Aborted(reason) => {
            log.warn(format!("restore aborted: {reason}")).await;
            finished.status = RestoreStatus::Aborted as i32;
            finished.error = reason;
        }
    }
    if finished.status == RestoreStatus::Succeeded as i32 {
        log.info(format!(
            "restore succeeded in {secs:.1} s with {} warning(s)",
            finished.warnings
        ))
        .await;
    }
    log.close().await;
    let restore_type = spec.target.as_ref().map_or(0, |t| t.restore_type);
    crate::metrics::get().restore_finished(restore_type, finished.status, clock.elapsed());
    Some(finished)
}

/// A restore by a registered script (docs/scripts.md): the script decides
/// what happens to the target, so nothing is cleaned up after it.
async fn script_attempt(
    runner: &Runner,
    log: &RunLog,
    task: &Option<TaskRef>,
    spec: &RestoreSpec,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> (Ending, u32) {
    let task_id = task.as_ref().map_or(0, |t| t.task_id);
    match crate::script::restore::run(runner, log, spec, task_id, cancel, progress).await {
        Ok(warnings) => (Ending::Succeeded, warnings),
        Err(e) if e.is::<Cancelled>() => (Ending::Cancelled, 0),
        Err(e) => match e.downcast::<Abort>() {
            Ok(a) => (Ending::Aborted(a.0), 0),
            Err(e) => (Ending::Failed(format!("{e:#}")), 0),
        },
    }
}

/// One restore in progress: what it needs and what it created (for the
/// cleanup after a failure).
pub(crate) struct Run<'a> {
    runner: &'a Runner,
    /// The store that holds the dump (this worker's, or one it shares).
    store: pgsnapman_store::Store,
    plan: Plan,
    log: &'a RunLog,
    target: Target,
    cancel: &'a CancellationToken,
    /// Bytes fed or spooled (the task's progress).
    done: Arc<AtomicU64>,
    /// A directory dump served through FIFOs in `spool`; declared before
    /// `spool` so that its threads stop before the directory is removed.
    served: Option<served::Served>,
    spool: SpoolDir,
    /// The database admin statements run in (never one being renamed).
    admin: String,
    /// Harmless errors and skipped items.
    warnings: u32,
    /// A database this run created and has not yet given the target's name.
    created_db: Option<String>,
    /// Roles this run created.
    created_roles: Vec<String>,
    /// DROP_BEFORE dropped the target.
    target_dropped: bool,
    /// `plan.parallel` is `restore.default_jobs`, not the restore's own.
    jobs_by_default: bool,
}

async fn attempt(
    runner: &Runner,
    log: &RunLog,
    plan: Plan,
    spec: &RestoreSpec,
    cancel: &CancellationToken,
    progress: &TaskProgress,
) -> (Ending, u32) {
    let what = match plan.kind {
        Kind::Database => format!(
            "database \"{}\"{}",
            plan.database,
            plan.schema
                .as_ref()
                .map_or(String::new(), |s| format!(" (schema \"{s}\" only)"))
        ),
        Kind::Cluster => "the cluster (maintenance database)".to_string(),
    };
    log.info(format!(
        "restoring dump {} ({} {} of \"{}\", {}) onto instance \"{}\" ({}:{}) into {what}, restore type {}, policy {}, roles {}",
        plan.dump_uuid,
        plan.dump_type.label(),
        plan.format.label(),
        spec.source_database,
        plan.dump_client_text,
        plan.instance.name,
        plan.instance.host,
        plan.instance.port,
        plan::restore_type_label(plan.restore_type),
        plan::policy_label(plan.existing),
        if plan.roles { "on" } else { "off" },
    ))
    .await;
    let mut run = match Run::new(runner, log, plan, cancel, progress) {
        Ok(r) => r,
        Err(e) => {
            let ending = match e.downcast::<Abort>() {
                Ok(a) => Ending::Aborted(a.0),
                Err(e) => Ending::Failed(format!("{e:#}")),
            };
            return (ending, 0);
        }
    };
    let result = match run.plan.kind {
        Kind::Database => run.database(spec, progress).await,
        Kind::Cluster => run.cluster(progress).await,
    };
    let mut ending = match result {
        Ok(()) => Ending::Succeeded,
        Err(e) if e.is::<Cancelled>() => Ending::Cancelled,
        Err(e) => match e.downcast::<Abort>() {
            Ok(a) => Ending::Aborted(a.0),
            Err(e) => Ending::Failed(format!("{e:#}")),
        },
    };
    if !matches!(ending, Ending::Succeeded) {
        run.cleanup().await;
        if matches!(ending, Ending::Cancelled) && run.target_dropped {
            ending = Ending::Failed(format!(
                "cancelled after DROP_BEFORE dropped database \"{}\": it no longer exists",
                run.plan.database
            ));
        }
    }
    (ending, run.warnings)
}

impl<'a> Run<'a> {
    fn new(
        runner: &'a Runner,
        log: &'a RunLog,
        plan: Plan,
        cancel: &'a CancellationToken,
        progress: &TaskProgress,
    ) -> Result<Self> {
        let store = runner
            .store_of(&plan.dump_worker, plan.dump_store.as_ref())
            .map_err(Abort)?;
        let mut plan = plan;
        let jobs_by_default = plan.parallel == 0 && runner.default_jobs() > 1;
        if jobs_by_default {
            plan.parallel = runner.default_jobs();
        }
        let app = format!("pgsnapman-restore-{}", plan.run_id);
        let target = Target::new(runner.session(&plan.instance, &app)?);
        let spool = SpoolDir::create(runner.spool_dir(), plan.run_id)?;
        Ok(Self {
            runner,
            store,
            admin: plan.maintenance_db().to_string(),
            plan,
            log,
            target,
            cancel,
            done: Arc::clone(&progress.done),
            served: None,
            spool,
            warnings: 0,
            created_db: None,
            created_roles: Vec::new(),
            target_dropped: false,
            jobs_by_default,
        })
    }

    /// The dump's manifest; ABORTED when this worker does not hold it.
    fn manifest(&self, progress: &TaskProgress) -> Result<pgsnapman_store::Manifest> {
        let m = self.store.manifest(self.plan.dump_uuid).map_err(|e| {
            Abort(format!(
                "dump {} is not in this worker's store: {e}",
                self.plan.dump_uuid
            ))
        })?;
        progress.total.store(m.logical_bytes, Ordering::Relaxed);
        Ok(m)
    }

    /// The client tools of the target's major; ABORTED when they are
    /// missing or older than the pg_dump that wrote the dump.
    fn tools(&self, facts: &Facts) -> Result<ClientTools> {
        let major = facts.major();
        let tools = self.runner.clients().for_major(major).map_err(|e| {
            Abort(format!(
                "cannot restore onto PostgreSQL {} (the target's major needs its own client tools): {e:#}",
                facts.version
            ))
        })?;
        if let Some((dump_major, _)) = self.plan.dump_client
            && dump_major > major
        {
            return Err(Abort(format!(
                "the dump was written by {} and the target runs PostgreSQL {}: the client tools of PostgreSQL {major} cannot read a newer pg_dump's output, and a restore into an older major is not supported",
                self.plan.dump_client_text, facts.version
            ))
            .into());
        }
        Ok(tools.clone())
    }

    /// The psql for a plain script: the target's, unless the script carries
    /// `\restrict` keys that it does not know; then the newest one that
    /// does. ABORTED when there is none.
    fn script_psql(&self, tools: &ClientTools) -> Result<ClientTools> {
        let needs_restrict = self.plan.dump_client.is_some_and(knows_restrict);
        let capable = |t: &ClientTools| parse_version(&t.version).is_some_and(knows_restrict);
        if !needs_restrict || capable(tools) {
            return Ok(tools.clone());
        }
        let clients = self.runner.clients();
        for major in clients.majors().into_iter().rev() {
            if let Ok(t) = clients.for_major(major)
                && capable(t)
                && t.psql().is_file()
            {
                return Ok(t.clone());
            }
        }
        Err(Abort(format!(
            "the dump was written by {}, whose plain scripts carry \\restrict keys, and no psql on this worker knows them ({} is older): install a client release of August 2025 or later (13.22, 14.19, 15.14, 16.10, 17.6 or 18)",
            self.plan.dump_client_text, tools.version
        ))
        .into())
    }

    /// Logs the target's version and role, and the client tools used
    /// (`psql`: the one for plain scripts, when it is another major).
    async fn log_target(&self, facts: &Facts, psql: &ClientTools) {
        let version = |t: &ClientTools| {
            parse_version(&t.version).map_or(t.version.clone(), |(a, b)| format!("{a}.{b}"))
        };
        let tools = self.runner.clients().for_major(facts.major()).ok();
        let mut text = format!(
            "the target runs PostgreSQL {} (connected as \"{}\"{}); client tools {} from {}",
            facts.version,
            facts.user,
            if facts.superuser { ", a superuser" } else { "" },
            tools.map_or(String::new(), version),
            tools.map_or(String::new(), |t| t.dir.display().to_string()),
        );
        if tools.is_none_or(|t| t.major != psql.major) {
            text.push_str(&format!(
                "; psql {} from {} for the plain script",
                version(psql),
                psql.dir.display()
            ));
        }
        self.log.info(text).await;
    }

    fn conninfo(&self, db: &str) -> String {
        self.target.session().conninfo(db)
    }

    /// pg_restore of `tools` with the password file and `--no-password`.
    fn pg_restore(&self, tools: &ClientTools) -> Command {
        let mut cmd = self.target.session().command(tools.pg_restore());
        cmd.arg("--no-password");
        cmd
    }

    /// psql running a script from stdin into `db`, stopping at the first
    /// error.
    fn psql_script(&self, psql: &ClientTools, db: &str) -> Command {
        let mut cmd = self.target.session().command(psql.psql());
        cmd.args(["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1"])
            .arg(format!("--dbname={}", self.conninfo(db)));
        cmd
    }

    /// Logs what a classifier kept: notices as INFO, harmless errors as
    /// WARNING (counted).
    async fn log_classified(&mut self, c: &classify::Classifier, program: &str) {
        for n in &c.notices {
            self.log.info(format!("{program}: {n}")).await;
        }
        if c.notices_dropped > 0 {
            self.log
                .info(format!(
                    "{program}: {} more notices not shown",
                    c.notices_dropped
                ))
                .await;
        }
        for e in c.errors.iter().filter(|e| e.harmless.is_some()) {
            self.log
                .warn(format!(
                    "harmless error ({}): {}",
                    e.harmless.unwrap_or_default(),
                    e.text()
                ))
                .await;
        }
        self.warnings += u32::try_from(c.harmless_count).unwrap_or(u32::MAX);
    }

    /// Judges a script run into psql.
    async fn judge_script(&mut self, ran: &pipeline::ScriptRan) -> Result<()> {
        let r = &ran.report;
        if r.tablespaces_rewritten > 0 {
            self.log
                .info(format!(
                    "{} tablespace assignment(s) rewritten",
                    r.tablespaces_rewritten
                ))
                .await;
        }
        if r.transaction_control_dropped > 0 {
            self.log
                .info(format!(
                    "{} BEGIN/COMMIT statement(s) of the script left out (it runs in one transaction)",
                    r.transaction_control_dropped
                ))
                .await;
        }
        if r.owner_or_privilege_dropped > 0 {
            self.log
                .info(format!(
                    "{} owner or privilege statement(s) left out (role handling off)",
                    r.owner_or_privilege_dropped
                ))
                .await;
        }
        if let Some(p) = &ran.producer {
            self.log_classified(&p.classifier, "pg_restore").await;
        }
        self.log_classified(&ran.psql.classifier, "psql").await;
        if !ran.psql.status.success() {
            let text = ran.psql.classifier.fatal_text(5);
            if text.is_empty() {
                bail!("psql exited with {}", ran.psql.status);
            }
            bail!("psql stopped at an error:\n{text}");
        }
        if let Some(e) = &ran.producer_error {
            bail!("the script was incomplete: {e}");
        }
        Ok(())
    }

    /// Removes what a failed run created: its database (ending sessions on
    /// it) and its roles. Never cancelled.
    async fn cleanup(&mut self) {
        match self.target.terminate_own(&self.admin).await {
            Ok(0) => {}
            Ok(n) => {
                self.log
                    .info(format!("ended {n} server session(s) this run still had"))
                    .await
            }
            Err(e) => {
                self.log
                    .warn(format!("could not end this run's server sessions: {e:#}"))
                    .await
            }
        }
        if let Some(db) = self.created_db.take() {
            match self.target.drop_database(&self.admin, &db).await {
                Ok(_) => {
                    self.log
                        .info(format!("dropped database \"{db}\" this run had created"))
                        .await
                }
                Err(e) => {
                    self.log
                        .error(format!(
                            "could not drop database \"{db}\" this run had created: {e:#}"
                        ))
                        .await;
                }
            }
        }
        if !self.created_roles.is_empty() {
            let roles = std::mem::take(&mut self.created_roles);
            let errors = self.target.drop_roles(&self.admin, &roles).await;
            if errors.is_empty() {
                self.log
                    .info(format!(
                        "dropped the roles this run had created: {}",
                        roles.join(", ")
                    ))
                    .await;
            } else {
                self.log
                    .warn(format!(
                        "some roles this run created stay: {}",
                        errors.join("; ")
                    ))
                    .await;
            }
        }
    }
}

/// Reads a file the run wrote into its spool directory. pg_restore writes
/// names in the dump's encoding; bytes that are not UTF-8 become U+FFFD (so
/// such names match nothing and the run says which entry it could not
/// place).
fn read_spooled(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
