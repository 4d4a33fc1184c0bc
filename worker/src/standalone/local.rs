//! The local commands of a standalone worker: `dump now JOB` asks the
//! running service through its control socket, or runs in the foreground
//! when none runs; `restore DUMP --to INSTANCE[/DB]` runs in the foreground
//! with the worker's own restore code and needs the worker stopped (the
//! data directory is locked while it runs); `messages` reads the outbox
//! read-only, beside a running worker.
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use pgsnapman_proto::model::excerpt;
use pgsnapman_proto::v1::{
    Event, ExistingDatabase, MessageLevel, RestoreSpec, RestoreStatus, RestoreTarget,
    WorkerMessage, event,
};
use prost::Message;
use rocksdb::IteratorMode;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Config;
use crate::state::{self, CF_OUTBOX, State};

/// Opens the worker's data directory for a foreground command.
async fn open(config: Config) -> Result<Arc<crate::Shared>> {
    let dir = config.worker.data_dir.clone();
    crate::open(config).await.with_context(|| {
        format!(
            "cannot open the worker's data directory {} (is the worker running? stop it first: \
             local commands run in the foreground)",
            dir.display()
        )
    })
}

/// Cancels `token` on SIGINT or SIGTERM.
fn cancel_on_signal(token: &CancellationToken) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let token = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        token.cancel();
    });
    Ok(())
}

/// `dump now JOB`: one dump of the job, recorded like a scheduled one,
/// then the job's retention. Prints the dump's uuid; fails when the dump did.
pub async fn dump_now(config: Config, name: &str) -> Result<()> {
    let mut jobs = config.standalone.load_jobs()?;
    let job = jobs.job(name)?.clone();
    // A running service dumps it in its slot; we wait for the answer.
    let request = format!("dump {name}");
    if let Some(answer) = super::control::ask(&config.worker.data_dir, &request).await? {
        return match answer.split_once(' ') {
            Some(("ok", uuid)) => {
                println!("{uuid}");
                Ok(())
            }
            Some(("error", why)) => bail!("{why}"),
            _ => bail!(
                "unexpected answer from the worker service: {}",
                excerpt(&answer)
            ),
        };
    }
    let shared = open(config).await?;
    super::install(&shared.mirror, &mut jobs)?;
    let snap = shared.mirror.snapshot();
    let instance = snap
        .instances
        .get(&job.instance_id)
        .cloned()
        .ok_or_else(|| anyhow!("job {name}: its instance is not in the schedule"))?;
    let spec = crate::scheduler::spec_of(&job, instance, None);
    let cancel = shared.tasks_token.child_token();
    cancel_on_signal(&shared.tasks_token)?;
    let body = crate::scheduler::dump_and_record(&shared, &job, &spec, &cancel).await;
    crate::retention::after_dump(&shared, job.id).await;
    match body {
        Some(event::Body::DumpFinished(f)) if f.succeeded => {
            println!("{}", f.dump_uuid);
            Ok(())
        }
        Some(event::Body::DumpFinished(f)) => bail!("job {name}: the dump failed: {}", f.error),
        Some(event::Body::Message(m)) => bail!("{}", m.text),
        Some(_) => Ok(()),
        None => bail!("job {name}: the dump was cancelled or could not be recorded"),
    }
}

/// How `restore` treats an existing target database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Existing {
    /// Restore beside it, swap, keep the old one renamed
    Rename,
    /// Restore beside it, swap, drop the old one (destructive)
    Drop,
    /// Drop it first, then restore (destructive)
    DropBefore,
    /// Do nothing if it exists
    Leave,
    /// Data restores: empty the dumped tables first (destructive)
    Truncate,
}

impl Existing {
    fn policy(self) -> ExistingDatabase {
        match self {
            Self::Rename => ExistingDatabase::Rename,
            Self::Drop => ExistingDatabase::Drop,
            Self::DropBefore => ExistingDatabase::DropBefore,
            Self::Leave => ExistingDatabase::Leave,
            Self::Truncate => ExistingDatabase::Truncate,
        }
    }

    /// The policies that can destroy data (the coordinator asks admin for them).
    pub fn is_destructive(self) -> bool {
        matches!(self, Self::Drop | Self::DropBefore | Self::Truncate)
    }
}

/// `restore DUMP --to INSTANCE[/DB]`: the dump from this worker's store
/// into an instance of the jobs file, through the restore pipeline.
pub async fn restore(
    config: Config,
    dump: Uuid,
    to: &str,
    existing: Existing,
    yes: bool,
) -> Result<()> {
    let (instance_name, database) = match to.split_once('/') {
        Some((i, d)) => (i, d),
        None => (to, ""),
    };
    if existing.is_destructive() && !yes {
        bail!(
            "--existing {} can destroy the existing database on {}: add --yes to confirm",
            existing.policy().as_str_name(),
            excerpt(to)
        );
    }
    let mut jobs = config.standalone.load_jobs()?;
    let instance_id = jobs.instance(instance_name)?.instance_id;
    let shared = open(config).await?;
    super::install(&shared.mirror, &mut jobs)?;
    cancel_on_signal(&shared.tasks_token)?;
    let cancel = shared.tasks_token.child_token();
    let (finished, log) = restore_into(
        &shared,
        dump,
        instance_id,
        database,
        existing.policy(),
        &cancel,
    )
    .await?;
    let finished =
        finished.ok_or_else(|| anyhow!("the restore was cancelled; the target is as it was"))?;
    let mut out = std::io::stdout().lock();
    for line in log {
        writeln!(out, "{line}")?;
    }
    let (ok, outcome) = outcome(&finished);
    let text = format!(
        "local restore of dump {dump} into {}: {outcome}",
        excerpt(to)
    );
    shared.outbox.append(event::Body::Message(WorkerMessage {
        level: if ok {
            MessageLevel::Info
        } else {
            MessageLevel::Error
        } as i32,
        class: "RESTORE".into(),
        job_id: 0,
        text: text.clone(),
    }))?;
    if !ok {
        bail!("{text}");
    }
    writeln!(out, "{text}")?;
    Ok(())
}

/// Whether a restore succeeded, and its status with the error if any
/// (`FAILED: pg_restore: …`), for the RESTORE message.
pub(crate) fn outcome(f: &pgsnapman_proto::v1::RestoreFinished) -> (bool, String) {
    let status = RestoreStatus::try_from(f.status).unwrap_or(RestoreStatus::Failed);
    let mut text = status.as_str_name().to_string();
    if !f.error.is_empty() {
        text.push_str(": ");
        text.push_str(&f.error);
    }
    (status == RestoreStatus::Succeeded, text)
}

/// Restores `dump` from this worker's store into `instance_id` (an
/// instance of the installed jobs file) / `database` (empty: the dumped
/// one) through the restore pipeline; the outcome (`None`: cancelled) and
/// the run's log lines. `restore` and the jobs file's copies use it.
pub(crate) async fn restore_into(
    shared: &Arc<crate::Shared>,
    dump: Uuid,
    instance_id: i64,
    database: &str,
    existing: ExistingDatabase,
    cancel: &CancellationToken,
) -> Result<(Option<pgsnapman_proto::v1::RestoreFinished>, Vec<String>)> {
    let target_instance = shared
        .mirror
        .snapshot()
        .instances
        .get(&instance_id)
        .cloned()
        .ok_or_else(|| anyhow!("instance {instance_id} is not in the schedule"))?;
    let store = shared.runner.store().clone();
    let manifest = tokio::task::spawn_blocking(move || store.manifest(dump))
        .await
        .context("read the manifest")?
        .map_err(|e| anyhow!("no dump {dump} in this worker's store: {e}"))?;
    let row = crate::maintenance::dump_finished_of(&manifest, shared.runner.store().root());
    let spec = RestoreSpec {
        dump_uuid: row.dump_uuid.clone(),
        source_database: row.database.clone(),
        source_schema: row.schema.clone(),
        dump_type: row.dump_type,
        format: row.format,
        dump_server_version: row.server_version.clone(),
        dump_client_version: row.client_version.clone(),
        restore_metadata_json: row.restore_metadata_json.clone(),
        target: Some(RestoreTarget {
            instance_id,
            database: if database.is_empty() {
                row.database.clone()
            } else {
                database.to_string()
            },
            existing_database: existing as i32,
            roles: true,
            ..Default::default()
        }),
        target_instance: Some(target_instance),
        dump_worker_name: shared.config.worker.name.clone(),
        ..Default::default()
    };
    // The run's log lines go to a scratch outbox (they belong to no catalog
    // restore run); the caller records the outcome in the real one.
    let scratch = tempfile::tempdir().context("create a scratch directory")?;
    let log_box = Arc::new(crate::outbox::Outbox::open(&State::open(scratch.path())?)?);
    let progress = crate::progress::TaskProgress::default();
    let finished = crate::restore::restore(
        &shared.runner,
        log_box.clone(),
        None,
        &spec,
        cancel,
        &progress,
    )
    .await;
    let mut log = Vec::new();
    for e in log_box.oldest(usize::MAX)? {
        if let Some(event::Body::RestoreLog(l)) = e.body {
            log.push(l.text);
        }
    }
    Ok((finished, log))
}

/// `messages`: the messages and dump results waiting in the outbox (one
/// line each, tab-separated: time, level, class, job, text), at `min` level
/// or above. Read-only: safe beside a running worker.
pub fn messages(data_dir: &Path, min: MessageLevel, jobs: Option<&super::Jobs>) -> Result<()> {
    let path = state::dir(data_dir);
    if !path.exists() {
        bail!(
            "{} does not exist: the worker has not run here yet",
            path.display()
        );
    }
    let state = State::open_read_only(&path)?;
    let cf = state.cf(CF_OUTBOX)?;
    let mut out = std::io::stdout().lock();
    for item in state.db().iterator_cf(cf, IteratorMode::Start) {
        let (_, v) = item.context("read the outbox")?;
        let e = Event::decode(&*v).context("decode an outbox event")?;
        let Some((level, class, job_id, text)) = line_of(&e) else {
            continue;
        };
        if (level as i32) < (min as i32) {
            continue;
        }
        let at = e
            .occurred_at
            .as_ref()
            .and_then(pgsnapman_proto::from_timestamp)
            .map_or_else(String::new, |t| t.to_rfc3339());
        let job = match (job_id, jobs.and_then(|j| j.job_name(job_id))) {
            (0, _) => "-".to_string(),
            (_, Some(name)) => name.to_string(),
            (id, None) => id.to_string(),
        };
        let level = level.as_str_name().trim_start_matches("MESSAGE_LEVEL_");
        writeln!(out, "{at}\t{level}\t{class}\t{job}\t{text}")?;
    }
    Ok(())
}

/// A message-like line for the events `messages` shows.
fn line_of(e: &Event) -> Option<(MessageLevel, String, i64, String)> {
    match e.body.as_ref()? {
        event::Body::Message(m) => Some((
            MessageLevel::try_from(m.level).unwrap_or(MessageLevel::Info),
            m.class.clone(),
            m.job_id,
            m.text.clone(),
        )),
        event::Body::DumpFinished(d) if d.succeeded => Some((
            MessageLevel::Info,
            "DUMP".into(),
            d.job_id,
            format!("dump {} stored ({} bytes)", d.dump_uuid, d.dump_bytes),
        )),
        event::Body::DumpFinished(d) => Some((
            MessageLevel::Error,
            "DUMP".into(),
            d.job_id,
            format!("dump failed: {}", d.error),
        )),
        event::Body::DumpsDeleted(d) => Some((
            MessageLevel::Info,
            "RETENTION".into(),
            0,
            format!("deleted dump(s) {}", d.dump_uuids.join(", ")),
        )),
        _ => None,
    }
}

/// The minimum level `messages` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Level {
    pub fn level(self) -> MessageLevel {
        match self {
            Self::Debug => MessageLevel::Debug,
            Self::Info => MessageLevel::Info,
            Self::Warning => MessageLevel::Warning,
            Self::Error => MessageLevel::Error,
            Self::Critical => MessageLevel::Critical,
        }
    }
}
