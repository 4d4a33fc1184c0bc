//! The pgsnapman worker: pulls dump tasks from the coordinator over a link it
//! dials itself, runs pg_dump with the client of the server's major version,
//! and reports results through a durable outbox. `run` is the whole service;
//! `main.rs` only loads the config and wires up signals.
pub mod agent;
pub mod backoff;
pub mod config;
pub mod discovery;
pub mod error;
pub mod identity;
pub mod inuse;
pub mod maintenance;
pub mod metrics;
pub mod mirror;
pub mod offline;
pub mod outbox;
pub mod progress;
pub mod restore;
pub mod retention;
pub mod rowcount;
pub mod runner;
pub mod scheduler;
pub mod script;
pub mod seal;
pub mod source_store;
pub mod standalone;
pub mod state;
pub mod store_backend;
pub mod store_key;
pub mod task;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use outbox::Outbox;
use runner::Runner;
use runner::client::Clients;
use task::Registry;

/// How long shutdown waits for the outbox to drain.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// How often the watchdog looks for leases that could not be renewed.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(500);

/// State shared by the link, the tasks and the watchdog.
pub struct Shared {
    pub config: Config,
    pub runner: Runner,
    pub outbox: Arc<Outbox>,
    /// The mirrored schedule (state database).
    pub mirror: mirror::Mirror,
    pub registry: Registry,
    /// One permit per dump slot (`dump.max_concurrent`).
    pub semaphore: Arc<Semaphore>,
    /// One permit per restore slot (`restore.max_concurrent`), taken by a
    /// leased restore before it starts.
    pub restore_slots: Arc<Semaphore>,
    /// Highest event id (as u128) the coordinator acknowledged.
    pub acked: watch::Sender<u128>,
    /// Every running task.
    pub tasks: TaskTracker,
    /// Parent of every task's cancellation token.
    pub tasks_token: CancellationToken,
    /// Fired at shutdown: no new task starts.
    pub drain: CancellationToken,
    pub backlog_warned: AtomicBool,
    /// Signalled when the store changed (dump stored, dumps deleted): the
    /// figures are reported again.
    pub store_changed: Notify,
    /// One retention run at a time (after a dump, or the periodic pass).
    pub retention_lock: tokio::sync::Mutex<()>,
    /// A standalone worker's copies and cron restores (empty for a managed
    /// worker).
    pub standalone: standalone::Restores,
    /// The scheduler's slots and running jobs.
    pub runs: scheduler::Runs,
}

/// Creates the data directory (mode 0700) and returns its absolute path.
fn prepare_data_dir(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("set mode 0700 on data directory {}", dir.display()))?;
    std::fs::canonicalize(dir).with_context(|| format!("resolve data directory {}", dir.display()))
}

/// Opens the worker's data directory (store, state, outbox, mirror) and
/// returns the shared state; nothing runs yet. A running worker holds the
/// directory: a second open fails on RocksDB's lock.
pub async fn open(config: Config) -> Result<Arc<Shared>> {
    let data_dir = prepare_data_dir(&config.worker.data_dir)?;
    tracing::info!(
        name = %config.worker.name,
        data_dir = %data_dir.display(),
        coordinator = ?config.coordinator.url_list().unwrap_or_default(),
        config = ?config,
        version = env!("CARGO_PKG_VERSION"),
        "starting pgsnapman worker"
    );
    let clients = Clients::discover(&config.postgres.bin_dirs).await;
    if clients.majors().is_empty() {
        tracing::warn!(
            bin_dirs = ?config.postgres.bin_dirs,
            "no pg_dump found; every dump will fail until postgres client tools are installed"
        );
    }
    let store_opts = config.store.options();
    let store_root = data_dir.clone();
    let backend = store_backend::backend(
        &config.store.backend,
        &config.store.s3,
        &config.worker.name,
        &data_dir,
    )?;
    let store_key = config.store.encryption.load_key(&data_dir)?;
    let store = tokio::task::spawn_blocking(move || {
        pgsnapman_store::Store::open_encrypted(&store_root, store_opts, backend, store_key.as_ref())
    })
    .await
    .context("open the pack store")?
    .map_err(|e| anyhow::anyhow!("cannot open the pack store: {e}"))?;
    tracing::info!(options = ?store.options(), "pack store open");
    let seal_key = Arc::new(seal::SealKey::load_or_create(&data_dir)?);
    tracing::info!(fingerprint = %seal_key.fingerprint(), "seal key loaded");
    let runner = Runner::new(clients, &data_dir, store, &config)?
        .with_shared_stores(&config.worker.name, config.restore.shared_stores.clone())
        .with_source_stores(source_store::SourceStores::from_config(
            &data_dir,
            &config.store.s3,
            &config.worker.name,
        )?)
        .with_seal_key(seal_key.clone());
    runner.clean_leftovers();
    let state_dir = state::dir(&data_dir);
    let (state, outbox) = tokio::task::spawn_blocking(move || -> Result<_> {
        let state = state::State::open(&state_dir)?;
        let outbox = Outbox::open(&state)?;
        Ok((state, outbox))
    })
    .await
    .context("open the outbox")??;
    tracing::info!(backlog = outbox.len(), "outbox open");
    report_unrecorded(&runner, &outbox).await;
    let mirror = mirror::Mirror::open(&state)
        .and_then(|m| m.seal_with(seal_key))
        .context("open the schedule mirror")?;
    tracing::info!(
        schedule_version = mirror.version(),
        jobs = mirror.snapshot().jobs.len(),
        "schedule mirror loaded"
    );
    let slots = usize::try_from(config.dump.max_concurrent).unwrap_or(1);
    let config_max_scheduled = config.scheduler.max_concurrent;
    let restore_slots = usize::try_from(config.restore.max_concurrent).unwrap_or(1);
    let (acked, _) = watch::channel(0u128);
    let shared = Arc::new(Shared {
        config,
        runner,
        outbox: Arc::new(outbox),
        mirror,
        registry: Registry::default(),
        semaphore: Arc::new(Semaphore::new(slots)),
        restore_slots: Arc::new(Semaphore::new(restore_slots)),
        acked,
        tasks: TaskTracker::new(),
        tasks_token: CancellationToken::new(),
        drain: CancellationToken::new(),
        backlog_warned: AtomicBool::new(false),
        store_changed: Notify::new(),
        retention_lock: tokio::sync::Mutex::new(()),
        standalone: standalone::Restores::default(),
        runs: scheduler::Runs::new(config_max_scheduled),
    });
    Ok(shared)
}

/// Runs the worker until `shutdown` fires, then cancels running dumps,
/// flushes the outbox (at most 5 s) and returns. Standalone
/// (`standalone.enabled`): the jobs file is the schedule and no coordinator
/// link is opened.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let standalone = config.standalone.enabled;
    // A bad jobs file stops the start before anything is opened.
    let mut jobs = standalone
        .then(|| config.standalone.load_jobs())
        .transpose()?;
    let shared = open(config).await?;
    if let Some(jobs) = &mut jobs {
        standalone::install(&shared.mirror, jobs)?;
        shared.standalone.set(jobs);
        tracing::info!(
            jobs = jobs.job_ids.len(),
            copies = jobs.copies.len(),
            restores = jobs.restores.len(),
            instances = jobs.instance_ids.len(),
            file = %shared.config.standalone.jobs_file.display(),
            "standalone: the schedule is the jobs file; no coordinator"
        );
    }

    // Bound before anything runs: a listen address that cannot be used
    // stops the start with its reason.
    let metrics_stop = CancellationToken::new();
    let metrics = pgsnapman_proto::scrape::listen(&shared.config.metrics.listen)
        .await
        .map_err(anyhow::Error::msg)?
        .map(|listener| {
            let outbox = shared.outbox.clone();
            tokio::spawn(metrics::serve(listener, outbox, metrics_stop.clone()))
        });

    let link_stop = CancellationToken::new();
    let link =
        (!standalone).then(|| tokio::spawn(agent::run_link(shared.clone(), link_stop.clone())));
    let watchdog = tokio::spawn(watchdog(shared.clone()));
    let stats = {
        let shared = shared.clone();
        tokio::spawn(async move {
            // Space left by a crash first, then the figures.
            shared.runner.reclaim().await;
            // What a dump left uncompressed before a stop or a crash.
            shared.runner.compress_later();
            maintenance::stats_loop(shared).await;
        })
    };
    // Standbys a crash left with replay paused (while the scheduler starts:
    // a dump of one of them waits for this, and the other way round).
    let resumer = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let schedule = shared.mirror.snapshot();
            shared.runner.resume_left_paused(&schedule.instances).await;
        })
    };
    let scheduler_stop = CancellationToken::new();
    let scheduler = tokio::spawn(scheduler::run(shared.clone(), scheduler_stop.clone()));
    // A standalone service takes `dump now` through its control socket; a
    // socket that cannot be made is an ERROR, and the schedule runs on.
    let control = if standalone {
        let shared = shared.clone();
        let stop = scheduler_stop.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = standalone::control::serve(shared, stop).await {
                tracing::error!(
                    "control socket: {e:#}; `dump now` runs only with the service stopped"
                );
            }
        }))
    } else {
        None
    };
    let discovery = tokio::spawn(discovery::run(shared.clone(), scheduler_stop.clone()));
    let retention = tokio::spawn(retention::periodic(shared.clone(), scheduler_stop.clone()));
    let verifier = tokio::spawn(verify::run_schedule(shared.clone(), scheduler_stop.clone()));

    shutdown.cancelled().await;
    tracing::info!(running = shared.registry.len(), "shutting down");
    // 1. No new work.
    scheduler_stop.cancel();
    if let Err(err) = scheduler.await {
        tracing::warn!("scheduler ended abnormally: {err}");
    }
    if let Err(err) = discovery.await {
        tracing::warn!("discovery ended abnormally: {err}");
    }
    if let Err(err) = retention.await {
        tracing::warn!("periodic retention ended abnormally: {err}");
    }
    if let Err(err) = verifier.await {
        tracing::warn!("the verification scheduler ended abnormally: {err}");
    }
    if let Some(control) = control
        && let Err(err) = control.await
    {
        tracing::warn!("the control socket ended abnormally: {err}");
    }
    shared.drain.cancel();
    shared.semaphore.close();
    shared.restore_slots.close();
    // 2. Cancel running dumps; each kills its process group and reaps it.
    shared.tasks_token.cancel();
    shared.tasks.close();
    let grace = shared.config.dump.kill_grace_period + Duration::from_secs(15);
    if tokio::time::timeout(grace, shared.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("running tasks did not stop within {grace:?}");
    }
    // 3. Flush what can be flushed while the link is still up.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_FLUSH;
    while link.is_some() && !shared.outbox.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !shared.outbox.is_empty() {
        tracing::info!(
            backlog = shared.outbox.len(),
            "events stay in the outbox until the next start"
        );
    }
    // 4. Close the link and the state database.
    link_stop.cancel();
    if let Some(link) = link
        && let Err(err) = link.await
    {
        tracing::warn!("link task ended abnormally: {err}");
    }
    watchdog.abort();
    let _ = watchdog.await;
    stats.abort();
    let _ = stats.await;
    resumer.abort();
    let _ = resumer.await;
    metrics_stop.cancel();
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    drop(shared);
    tracing::info!("shutdown complete");
    Ok(())
}

/// Cancels tasks whose lease passed without a renewal (link down): the
/// coordinator will give the task to someone else, so it must stop here.
async fn watchdog(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(WATCHDOG_INTERVAL);
    loop {
        tick.tick().await;
        for task_id in shared.registry.cancel_expired(tokio::time::Instant::now()) {
            tracing::warn!(
                task_id,
                "lease expired before it could be renewed; cancelling the task"
            );
        }
    }
}

/// Queues the rows of dumps a crash left stored but unrecorded (killed
/// between the manifest's rename and the outbox append), under the task
/// that took them, so the catalog gets them and the task is not run again.
async fn report_unrecorded(runner: &Runner, outbox: &Outbox) {
    for (dump_uuid, row) in runner.unrecorded_dumps().await {
        let Some(row) = row else {
            // Never completely stored: the store's own cleanup removes it.
            runner.recorded(&dump_uuid.to_string());
            continue;
        };
        let queued = match row.task.clone() {
            Some(task) => outbox.append_result(
                task.task_id,
                &task::dump_identity(row.job_id),
                vec![pgsnapman_proto::v1::event::Body::DumpFinished(row)],
            ),
            None => outbox
                .append(pgsnapman_proto::v1::event::Body::DumpFinished(row))
                .map(|id| vec![id]),
        };
        match queued {
            Ok(_) => {
                tracing::warn!(dump_id = %dump_uuid, "a dump stored before a crash but never reported is reported now");
                runner.recorded(&dump_uuid.to_string());
            }
            Err(e) => {
                tracing::error!(dump_id = %dump_uuid, "cannot queue an unrecorded dump: {e:#}")
            }
        }
    }
}
