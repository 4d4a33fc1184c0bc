//! Runs one dump described by a `DumpSpec`: probes the server, picks the
//! client of exactly its major, streams pg_dump's or pg_dumpall's output
//! into the pack store and describes the result as a `DumpFinished`. It
//! knows nothing of leases or the link.
pub mod client;
pub mod connection;
pub mod ingest;
pub mod metadata;
pub mod previous;
pub mod process;
pub mod replay;
pub mod source;
pub mod spec;
pub mod steps;
pub mod unrecorded;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::v1::{
    DumpFinished, DumpFormat, DumpSpec, DumpType, InstanceConnection, TaskRef,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::client::{ClientTools, Clients};
use self::connection::{Session, SessionSettings};
use self::replay::{ReplayPauses, server_of};
use self::source::{PROBE_SQL, demand, parse_probe, pause_replay, resume_replay, wait_for_pause};
use self::spec::{Checked, check_spec, dump_args, stream_file_name};
use crate::error::{self, ClientError};

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
    /// Other workers' bucket stores this worker reads when granted.
    sources: crate::source_store::SourceStores,
    /// Directory-format dumps pass through here; emptied at start.
    spool_dir: PathBuf,
    tmp_dir: PathBuf,
    connect_timeout: Duration,
    kill_grace: Duration,
    /// `postgres.max_query_output_bytes`.
    max_output: u64,
    /// `restore.default_jobs`.
    default_jobs: u32,
    /// Standbys this worker's dumps hold paused.
    replay: ReplayPauses,
    /// `postgres.statement_timeout` and `postgres.lock_timeout`.
    statement_timeout: Duration,
    lock_timeout: Duration,
    /// `dump.lock_wait_timeout` and `dump.max_run_time`.
    lock_wait_timeout: Duration,
    max_run_time: Duration,
    /// Dumps between the start of their ingest and their outbox event.
    unrecorded: unrecorded::Unrecorded,
    /// Opens the instance passwords sealed to this worker.
    seal: Option<Arc<crate::seal::SealKey>>,
    /// Dumps a restore or verification is reading (retention skips them).
    in_use: crate::inuse::InUse,
    /// TEST ONLY: the sped-up scheduler clock dumps are stamped with.
    clock: std::sync::OnceLock<crate::scheduler::Clock>,
    /// `[scripts]`: whether and how long SCRIPT dumps run.
    scripts: crate::script::ScriptsConfig,
    /// `[verify]`: how long a verification may take.
    verify: crate::verify::VerifyConfig,
    /// Each job's newest stored dump, which its next dump follows.
    previous: previous::PreviousDumps,
    /// `Store::compress_later` after dumps (`compress_later`).
    later: Arc<Later>,
}

/// The figures of dumps compressed after they were stored, for one
/// `DumpsCompressed` event (`Runner::compressed_unqueued`).
#[derive(Debug, Default)]
pub struct CompressedBatch {
    pub dumps: Vec<pgsnapman_proto::v1::CompressedDump>,
    /// Per dump, the bytes saved that its figure counts.
    saved: Vec<(Uuid, u64)>,
}

/// How long the compression thread waits before it tries again to delete
/// packs a read-only open of the store may still read (`store extract`).
const LATER_READER_RETRY: Duration = Duration::from_secs(30);

/// The state of the background compression of what dumps stored
/// uncompressed: one thread at a time, run again when asked meanwhile.
#[derive(Default)]
struct Later {
    running: std::sync::atomic::AtomicBool,
    asked: std::sync::atomic::AtomicU64,
    /// Told when a pass changed the store (its figures are worth a report).
    changed: tokio::sync::Notify,
    /// Per dump, the stored bytes passes saved so far; and the dumps whose
    /// figure is not queued for the catalog yet (`compressed_unqueued`).
    saved: std::sync::Mutex<std::collections::HashMap<Uuid, u64>>,
    unsent: std::sync::Mutex<std::collections::BTreeSet<Uuid>>,
}

impl Later {
    fn saved(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Uuid, u64>> {
        self.saved.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unsent(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<Uuid>> {
        self.unsent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A dump program's failure, saying that `dump.lock_wait_timeout` fired
/// when it did (pg_dump applies it as the statement timeout of its LOCK
/// TABLE statements).
fn name_lock_wait(err: anyhow::Error, lock_wait_timeout: Duration) -> anyhow::Error {
    if lock_wait_timeout.is_zero() {
        return err;
    }
    match err.downcast::<ClientError>() {
        Ok(e) if e.server_timeout().is_some() => ClientError::Timeout {
            setting: error::LOCK_WAIT_TIMEOUT,
            value: lock_wait_timeout,
            text: e.to_string(),
        }
        .into(),
        Ok(e) => e.into(),
        Err(err) => err,
    }
}

/// What the manifest says about the dump (everything the catalog row and a
/// restore elsewhere need).
fn manifest_meta(
    f: &DumpFinished,
    c: &Checked<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<pgsnapman_store::ManifestMeta> {
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
        finished_at: now,
        database_bytes: f.database_bytes,
        notes: f.error.clone(),
        script_hash: f.script_hash.clone(),
        restore_metadata,
        table_rows: f.table_rows_counted.then(|| {
            f.table_rows
                .iter()
                .map(|t| pgsnapman_store::TableRows {
                    database: t.database.clone(),
                    schema: t.schema.clone(),
                    table: t.table.clone(),
                    rows: t.rows,
                })
                .collect()
        }),
        table_rows_error: f.table_rows_error.clone(),
        data_blocks: None,
    })
}

/// What counts the rows of a dump of this type and format.
fn rowcount_kind(c: &Checked<'_>) -> crate::rowcount::Kind {
    use crate::rowcount::Kind;
    if c.dump_type.is_cluster_wide() {
        return Kind::Cluster;
    }
    match c.format {
        DumpFormat::Custom => Kind::Custom,
        DumpFormat::Directory => Kind::Directory,
        DumpFormat::Plain => Kind::Plain,
        _ => Kind::Unsupported("rows are counted in custom, directory and plain dumps only"),
    }
}

/// Puts the row counts into the result; counts that could not be taken
/// leave the dump as it is, with a warning.
fn note_rows(finished: &mut DumpFinished, rows: crate::rowcount::Counted) {
    match rows {
        Ok(rows) => {
            finished.table_rows_counted = true;
            finished.table_rows = rows.into_iter().map(crate::rowcount::to_proto).collect();
        }
        Err(why) => {
            tracing::warn!(dump_id = %finished.dump_uuid, "row counts unavailable: {why}");
            finished.table_rows_error = why;
        }
    }
}

impl Runner {
    /// `data_dir` must be absolute and exist; the timeouts and limits come
    /// from `config`.
    pub fn new(
        clients: Clients,
        data_dir: &Path,
        store: pgsnapman_store::Store,
        config: &crate::Config,
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
            sources: crate::source_store::SourceStores::new(data_dir, None),
            spool_dir,
            tmp_dir,
            connect_timeout: config.postgres.connect_timeout,
            kill_grace: config.dump.kill_grace_period,
            max_output: config.postgres.max_query_output_bytes,
            default_jobs: config.restore.default_jobs,
            replay: ReplayPauses::new(&crate::state::dir(data_dir)),
            statement_timeout: config.postgres.statement_timeout,
            lock_timeout: config.postgres.lock_timeout,
            lock_wait_timeout: config.dump.lock_wait_timeout,
            max_run_time: config.dump.max_run_time,
            unrecorded: unrecorded::Unrecorded::new(&crate::state::dir(data_dir)),
            seal: None,
            in_use: crate::inuse::InUse::default(),
            clock: std::sync::OnceLock::new(),
            scripts: config.scripts.clone(),
            verify: config.verify.clone(),
            previous: previous::PreviousDumps::default(),
            later: Arc::default(),
        })
    }

    /// The stored bytes, now, of the dumps `compress_later` compressed
    /// since their figure was last queued, for a `DumpsCompressed` event:
    /// each dump's manifest figure (what its ingest wrote) less what the
    /// passes saved. A dump whose `DumpFinished` is not in the outbox yet
    /// waits for a later call, so the catalog row exists when the event is
    /// applied. Nothing is forgotten until the caller has queued the event
    /// and says so with `compressed_queued`, so a failed append loses
    /// nothing. Blocking (reads manifests and the index).
    pub fn compressed_unqueued(&self) -> CompressedBatch {
        let ready: Vec<Uuid> = {
            let unsent = self.later.unsent();
            unsent
                .iter()
                .copied()
                .filter(|d| !self.unrecorded.pending(*d))
                .collect()
        };
        let mut batch = CompressedBatch::default();
        for dump in ready {
            let saved = self.later.saved().get(&dump).copied();
            let (Some(saved), Ok(m)) = (saved, self.store.manifest(dump)) else {
                // Deleted meanwhile, or never finished: nothing to send.
                self.later.unsent().remove(&dump);
                self.later.saved().remove(&dump);
                continue;
            };
            batch.dumps.push(pgsnapman_proto::v1::CompressedDump {
                dump_uuid: dump.to_string(),
                stored_bytes: m.new_stored_bytes.saturating_sub(saved),
            });
            batch.saved.push((dump, saved));
        }
        batch
    }

    /// Forgets the figures of `batch`, now queued: a dump a pass saved
    /// more of meanwhile stays to be sent again, and a dump with chunks
    /// still to compress keeps its running total.
    pub fn compressed_queued(&self, batch: &CompressedBatch) {
        let still_marked = self.store.later_dumps().unwrap_or_default();
        let mut saved = self.later.saved();
        let mut unsent = self.later.unsent();
        for (dump, sent) in &batch.saved {
            if saved.get(dump) != Some(sent) {
                continue;
            }
            unsent.remove(dump);
            if !still_marked.contains(dump) {
                // Nothing of it is left to compress.
                saved.remove(dump);
            }
        }
    }

    /// Resolves when a `compress_later` pass has changed the store.
    pub async fn compressed(&self) {
        self.later.changed.notified().await;
    }

    /// Compresses, on a thread of its own at `store.ingest_nice`, the
    /// chunks dumps stored uncompressed (`store.compress_later_max_bytes`;
    /// docs/store.md). Returns at once; asked again while a pass runs, the
    /// thread makes another pass. A pass stops between packs when a dump
    /// starts, and that dump asks again when it ends. Call after each stored
    /// dump and at start.
    pub fn compress_later(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let later = Arc::clone(&self.later);
        later.asked.fetch_add(1, SeqCst);
        if later.running.swap(true, SeqCst) {
            return;
        }
        let store = self.store.clone();
        let nice = store.options().ingest_nice;
        let thread = {
            let later = Arc::clone(&later);
            std::thread::Builder::new()
                .name("store-later".into())
                .spawn(move || {
                    pgsnapman_store::lower_thread_priority(nice);
                    loop {
                        let asked = later.asked.load(SeqCst);
                        let mut kept = false;
                        match store.compress_later() {
                            Ok(r)
                                if r.records_compressed > 0
                                    || r.packs_left > 0
                                    || r.packs_removed > 0
                                    || r.packs_kept_for_readers > 0 =>
                            {
                                kept = r.packs_kept_for_readers > 0;
                                for (dump, bytes) in &r.saved_by_dump {
                                    *later.saved().entry(*dump).or_default() += bytes;
                                    later.unsent().insert(*dump);
                                }
                                later.changed.notify_one();
                                tracing::info!(
                                    records = r.records_compressed,
                                    deltas = r.deltas_encoded,
                                    bytes_before = r.bytes_before,
                                    bytes_after = r.bytes_after,
                                    packs_left = r.packs_left,
                                    packs_kept_for_readers = r.packs_kept_for_readers,
                                    "compressed the chunks dumps stored uncompressed"
                                );
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(
                                "cannot compress the chunks dumps stored uncompressed (tried again after the next dump): {e}"
                            ),
                        }
                        if kept {
                            // A read-only open still holds the old packs:
                            // their space comes back once it is closed.
                            std::thread::sleep(LATER_READER_RETRY);
                            continue;
                        }
                        later.running.store(false, SeqCst);
                        // Asked meanwhile and nobody took over: once more.
                        if later.asked.load(SeqCst) == asked || later.running.swap(true, SeqCst) {
                            return;
                        }
                    }
                })
        };
        if let Err(e) = thread {
            later.running.store(false, SeqCst);
            tracing::warn!("cannot start compressing what dumps stored uncompressed: {e}");
        }
    }

    /// Opens sealed instance passwords with `key` (without one, a sealed
    /// password is an error).
    pub fn with_seal_key(mut self, key: Arc<crate::seal::SealKey>) -> Self {
        self.seal = Some(key);
        self
    }

    /// The public key passwords are sealed to (empty without a seal key).
    pub fn seal_public_key(&self) -> Vec<u8> {
        self.seal
            .as_ref()
            .map(|k| k.public_key().to_vec())
            .unwrap_or_default()
    }

    /// Dumps a restore or verification on this worker is reading.
    pub fn in_use(&self) -> &crate::inuse::InUse {
        &self.in_use
    }

    /// TEST ONLY (`scheduler.clock_speed` above 1): stamp dumps with
    /// `clock` instead of the real time.
    pub fn use_clock(&self, clock: crate::scheduler::Clock) {
        let _ = self.clock.set(clock);
    }

    /// The time dumps are stamped with.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock
            .get()
            .map_or_else(chrono::Utc::now, crate::scheduler::Clock::now)
    }

    /// Dumps stored whose outbox event is not yet written.
    pub fn unrecorded_now(&self) -> Result<Vec<Uuid>> {
        Ok(self
            .unrecorded
            .leftovers()?
            .into_iter()
            .map(|l| l.dump_uuid)
            .collect())
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

    /// Reads other workers' bucket stores with `sources` (its `[store.s3]`).
    pub fn with_source_stores(mut self, sources: crate::source_store::SourceStores) -> Self {
        self.sources = sources;
        self
    }

    /// Where this worker's own store keeps its packs (for Hello).
    pub fn store_location(&self) -> Option<pgsnapman_proto::v1::StoreLocation> {
        crate::source_store::location_of(&self.store)
    }

    /// The store that holds the dumps of `worker`: this worker's own, or
    /// (read-only, opened now so it sees the latest dumps) another worker's:
    /// its directory from `restore.shared_stores`, else its bucket at `loc`
    /// (sent by the coordinator only to the restore worker it granted).
    /// Blocks on the network for a bucket: call it off the async threads.
    pub fn store_of(
        &self,
        worker: &str,
        loc: Option<&pgsnapman_proto::v1::StoreLocation>,
    ) -> std::result::Result<pgsnapman_store::Store, String> {
        if worker.is_empty() || worker == self.worker_name {
            return Ok(self.store.clone());
        }
        let Some(dir) = self.shared_stores.get(worker) else {
            return match loc {
                Some(loc) => self.sources.open(worker, loc),
                None => Err(format!(
                    "the dump is in the store of worker {worker:?}, which this worker cannot read: \
                     add its data directory to restore.shared_stores"
                )),
            };
        };
        pgsnapman_store::Store::open_read_only(dir).map_err(|e| {
            format!(
                "cannot read the store of worker {worker:?} at {}: {e}",
                dir.display()
            )
        })
    }

    /// This worker's name (empty in tests that do not set it).
    pub fn worker_name(&self) -> &str {
        &self.worker_name
    }

    /// `[scripts]` of this worker's configuration.
    pub fn scripts_config(&self) -> &crate::script::ScriptsConfig {
        &self.scripts
    }

    /// `[verify]` of this worker's configuration.
    pub fn verify_config(&self) -> &crate::verify::VerifyConfig {
        &self.verify
    }

    /// The password of `instance`, opened from its sealed copy only now.
    pub fn instance_password(
        &self,
        instance: &InstanceConnection,
    ) -> Result<Option<zeroize::Zeroizing<String>>> {
        crate::seal::password_for(self.seal.as_deref(), instance, &self.worker_name)
    }

    /// The client tools found on this machine.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// pg_restore jobs of a restore that does not say (`restore.default_jobs`).
    pub fn default_jobs(&self) -> u32 {
        self.default_jobs
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

    /// A psql session on `instance` as `app_name` with the newest psql
    /// (its password, opened from the sealed copy only now, in a password
    /// file under the tmp directory).
    pub fn session(&self, instance: &InstanceConnection, app_name: &str) -> Result<Session> {
        let psql = self.clients.newest_psql()?.psql();
        let password =
            crate::seal::password_for(self.seal.as_deref(), instance, &self.worker_name)?;
        Session::open(
            psql,
            instance,
            password.as_deref().map(String::as_str),
            app_name,
            &self.tmp_dir,
            SessionSettings {
                connect_timeout: self.connect_timeout,
                kill_grace: self.kill_grace,
                max_output: self.max_output,
                statement_timeout: self.statement_timeout,
                lock_timeout: self.lock_timeout,
            },
        )
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
    /// A stored dump stays marked unrecorded until the caller has queued its
    /// result and calls `recorded`.
    pub async fn dump(
        &self,
        task: Option<TaskRef>,
        spec: &DumpSpec,
        cancel: &CancellationToken,
        progress: Arc<AtomicU64>,
    ) -> DumpResult {
        let dump_uuid = Uuid::now_v7();
        let result = self.dump_as(dump_uuid, task, spec, cancel, progress).await;
        if !matches!(&result, DumpResult::Finished(f) if f.succeeded) {
            self.unrecorded.end(dump_uuid);
        }
        result
    }

    async fn dump_as(
        &self,
        dump_uuid: Uuid,
        task: Option<TaskRef>,
        spec: &DumpSpec,
        cancel: &CancellationToken,
        progress: Arc<AtomicU64>,
    ) -> DumpResult {
        let checked = match check_spec(spec) {
            Ok(c) => c,
            Err(err) => return DumpResult::Rejected(format!("{err:#}")),
        };
        let script_hash = if checked.dump_type == DumpType::Script {
            match crate::script::check(&self.scripts, &self.worker_name, spec) {
                Ok(s) => s.hash.clone(),
                Err(err) => return DumpResult::Rejected(format!("{err:#}")),
            }
        } else {
            String::new()
        };
        let started_at = self.now();
        let mut steps = steps::Steps::new();
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
            script_stderr: Vec::new(),
            script_hash,
            table_rows: Vec::new(),
            table_rows_counted: false,
            table_rows_error: String::new(),
        };
        let app_name = match &task {
            Some(t) => format!("pgsnapman-dump-{}", t.task_id),
            None => format!("pgsnapman-dump-job-{}", spec.job_id),
        };
        let session = match self.session(instance, &app_name) {
            Ok(s) => {
                steps.mark("session");
                s
            }
            Err(err) => {
                finished.error = format!("{err:#}");
                finished.finished_at = Some(pgsnapman_proto::timestamp(self.now()));
                return DumpResult::Finished(Box::new(finished));
            }
        };
        // Dump on demand applies to scheduled runs of database dumps only.
        let on_demand = spec.on_demand && task.is_none() && !checked.dump_type.is_cluster_wide();
        if on_demand {
            match demand(&session, &checked.connect_db).await {
                Ok(None) => tracing::info!("dump requested by the source's TAKE_BACKUP marker"),
                Ok(Some(reason)) => return DumpResult::Skipped(reason),
                Err(err) => {
                    finished.error = format!("cannot read the dump-on-demand marker: {err:#}");
                    finished.finished_at = Some(pgsnapman_proto::timestamp(self.now()));
                    return DumpResult::Finished(Box::new(finished));
                }
            }
        }
        // Durable before any byte is stored: a crash after the manifest's
        // rename leaves the marker, and the next start reports the dump.
        if let Err(err) = self.unrecorded.begin(dump_uuid, task.as_ref()) {
            finished.error = format!("{err:#}");
            finished.finished_at = Some(pgsnapman_proto::timestamp(self.now()));
            return DumpResult::Finished(Box::new(finished));
        }
        steps.mark("marker");
        let mut paused = false;
        // dump.max_run_time cancels the attempt as a lost lease would, but
        // the dump is then reported as failed, saying why.
        let attempt_cancel = cancel.child_token();
        let timer = {
            let (token, max) = (attempt_cancel.clone(), self.max_run_time);
            tokio::spawn(async move {
                tokio::time::sleep(max).await;
                token.cancel();
            })
        };
        let mut result = self
            .attempt(
                &checked,
                &session,
                &attempt_cancel,
                progress,
                &mut finished,
                &mut paused,
                &mut steps,
            )
            .await;
        timer.abort();
        tracing::info!(
            dump_id = %dump_uuid,
            stored = result.as_ref().is_ok_and(|stored| *stored),
            total_ms = steps.total().as_millis() as u64,
            steps = %steps.summary(),
            "dump steps"
        );
        if attempt_cancel.is_cancelled()
            && !cancel.is_cancelled()
            && !result.as_ref().is_ok_and(|stored| *stored)
        {
            result = Err(ClientError::Timeout {
                setting: error::MAX_RUN_TIME,
                value: self.max_run_time,
                text: String::new(),
            }
            .into());
        }
        if paused {
            // Always resume, whatever happened to the dump, unless another
            // dump of this server still needs the pause.
            let db = &checked.connect_db;
            match self
                .replay
                .release(instance, || resume_replay(&session, db))
                .await
            {
                Ok(true) => tracing::info!("WAL replay resumed"),
                Ok(false) => tracing::info!(
                    "WAL replay stays paused: another dump of this standby is running"
                ),
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
                if let Err(err) = session.run_uncancelled(&checked.connect_db, &[reset]).await {
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
        finished.finished_at = Some(pgsnapman_proto::timestamp(self.now()));
        DumpResult::Finished(Box::new(finished))
    }

    /// Probe, dump, commit. Ok(false) means cancelled; Err is a failed dump
    /// whose message is the error text. `steps` times each step.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        c: &Checked<'_>,
        session: &Session,
        cancel: &CancellationToken,
        progress: Arc<AtomicU64>,
        finished: &mut DumpFinished,
        paused: &mut bool,
        steps: &mut steps::Steps,
    ) -> Result<bool> {
        let dump_uuid = Uuid::parse_str(&finished.dump_uuid).context("dump uuid")?;

        // 1. Probe the server with the newest psql.
        let Some(out) = session.run(&c.connect_db, &[PROBE_SQL], cancel).await? else {
            return Ok(false);
        };
        let info = parse_probe(&out)?;
        finished.server_version = info.version.clone();
        if info.in_recovery {
            if c.spec.pause_replay {
                let db = &c.connect_db;
                self.replay
                    .hold(c.instance, || pause_replay(session, db))
                    .await
                    .context("cannot pause WAL replay on the standby")?;
                *paused = true;
                wait_for_pause(session, db).await?;
                finished.error =
                    "dumped from a standby; WAL replay was paused during the dump".into();
            } else {
                finished.error = "dumped from a standby with replay running (a conflict with recovery can cancel the dump; see the job's pause_replay)".into();
            }
        }
        if !c.dump_type.is_cluster_wide() {
            finished.database_bytes = info.database_bytes;
        }
        steps.mark("probe");

        // 2. What pg_dump leaves out of a database dump (owner, encoding,
        //    locale, tablespace, ACL, settings, referenced roles): read beside
        //    the dump (catalog queries that take no lock pg_dump waits for),
        //    so its psql round trip is off the dump's critical path.
        //    `Ok(None)`: cancelled.
        let read_metadata = async {
            if c.dump_type.is_cluster_wide() {
                return Ok(Some(String::new()));
            }
            let out = session
                .run(&c.connect_db, &[metadata::METADATA_SQL], cancel)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot read the database's restore metadata: {e:#}")
                })?;
            out.map(|out| metadata::parse(&out).map(|m| m.to_string()))
                .transpose()
        };

        // 3. The client of exactly the server's major.
        let tools: &ClientTools = self.clients.for_major(info.major())?;
        finished.client_version = tools.version.clone();

        // 4. Run it, streaming into the store (no copy on disk; a directory
        //    dump passes through the spool one file at a time). A script
        //    runs instead of pg_dump, the same way (docs/scripts.md).
        let directory = !c.dump_type.is_cluster_wide() && c.format == DumpFormat::Directory;
        let spool = self.spool_dir.join(dump_uuid.to_string());
        let mut script_run = None;
        let (cmd, name) = if c.dump_type == DumpType::Script {
            let (cmd, run) = crate::script::prepare(
                self,
                c,
                tools,
                &info.version,
                finished,
                directory.then_some(spool.as_path()),
                cancel,
            )?;
            let name = run.name.clone();
            script_run = Some(run);
            (cmd, name)
        } else {
            let (program, name) = if c.dump_type.is_cluster_wide() {
                (tools.pg_dumpall(), "pg_dumpall")
            } else {
                (tools.pg_dump(), "pg_dump")
            };
            let dump_conninfo = session.conninfo(&c.connect_db);
            let mut cmd = session.command(program);
            cmd.args(dump_args(
                c,
                directory.then_some(spool.as_path()),
                &dump_conninfo,
                self.lock_wait_timeout,
            ));
            (cmd, name.to_string())
        };
        let name = name.as_str();
        let observer = script_run.as_ref().map(crate::script::ScriptRun::observer);
        let run_cancel = script_run
            .as_ref()
            .map_or(cancel, crate::script::ScriptRun::cancel);
        tracing::info!(
            program = name,
            major = tools.major,
            server_version = %info.version,
            dump_id = %dump_uuid,
            "starting dump into the store"
        );
        let store = self.store.clone();
        let (previous, job_id) = (self.previous.clone(), c.spec.job_id);
        let ingest = tokio::task::spawn_blocking(move || {
            store.begin_after(dump_uuid, previous.of(&store, job_id))
        })
        .await
        .context("start storing the dump")?
        .map_err(|e| anyhow::anyhow!("cannot start storing the dump: {e}"))?;
        steps.mark("store_begin");
        let file_name = stream_file_name(c);
        let dump = async {
            if directory {
                ingest::directory(
                    ingest,
                    spool.clone(),
                    ingest::Program { cmd, observer },
                    name,
                    run_cancel,
                    self.kill_grace,
                    progress,
                )
                .await
            } else {
                ingest::stream(
                    ingest,
                    file_name,
                    rowcount_kind(c),
                    ingest::Program { cmd, observer },
                    name,
                    run_cancel,
                    self.kill_grace,
                    progress,
                )
                .await
            }
        };
        let (ended, restore_metadata) = tokio::join!(dump, read_metadata);
        let ended = match script_run {
            Some(run) => run.end(ended, finished, cancel),
            None => ended,
        };
        let ended = ended.map_err(|e| name_lock_wait(e, self.lock_wait_timeout))?;
        let (ingest, tail, archive) = match ended {
            ingest::Ended::Cancelled => return Ok(false),
            ingest::Ended::Stored {
                ingest,
                tail,
                rows,
                exited,
                archive,
            } => {
                steps.mark_at("dump", exited);
                steps.mark("store_drain");
                note_rows(finished, rows);
                (*ingest, tail, archive)
            }
        };
        // Dropping the ingest (on an error or cancel) abandons what it stored.
        let Some(restore_metadata) = restore_metadata? else {
            return Ok(false);
        };
        finished.restore_metadata_json = restore_metadata;

        // 5. What was stored reads back: the archive's table of contents
        //    through pg_restore --list, a plain dump's completion marker. A
        //    custom archive the row counter read whole (header, table of
        //    contents, every data block) needs no second parser: its header
        //    and table of contents are read back from the store only.
        let ingest = if directory {
            let check_dir = self.spool_dir.join(format!("{dump_uuid}.check"));
            let (ingest, listed) = ingest::check_directory_toc(
                ingest,
                check_dir,
                tools.pg_restore(),
                self.max_output,
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
        } else if let Some(archive) = &archive {
            ingest::check_stream_head(ingest, file_name, archive.toc_bytes).await?
        } else {
            let (ingest, listed) = ingest::check_stream_toc(
                ingest,
                file_name,
                tools.pg_restore(),
                self.max_output,
                cancel,
                self.kill_grace,
            )
            .await?;
            if !listed {
                return Ok(false);
            }
            ingest
        };

        steps.mark("toc_check");

        // 6. The manifest makes the dump exist (durable before it is reported).
        let mut meta = manifest_meta(finished, c, self.now())?;
        meta.data_blocks = archive.and_then(|a| a.block_offsets);
        let (manifest, flush) =
            tokio::task::spawn_blocking(move || ingest.finish_deferring_flush(meta))
                .await
                .context("finish storing the dump")?
                .map_err(|e| anyhow::anyhow!("cannot store the dump's manifest: {e}"))?;
        // The dump is durable: the index flush (space, not durability) runs
        // beside what follows (its outbox event, the next dump).
        drop(tokio::task::spawn_blocking(move || flush.run()));
        self.compress_later();
        self.previous
            .stored(job_id, manifest.meta.started_at, manifest.dump_uuid);
        steps.mark("finish");
        finished.dump_bytes = manifest.logical_bytes;
        finished.stored_bytes = manifest.new_stored_bytes;
        finished.location = self
            .store
            .root()
            .join("manifests")
            .join(pgsnapman_store::manifest::file_name(&manifest))
            .to_string_lossy()
            .into_owned();
        Ok(true)
    }

    /// Resumes WAL replay on every standby this worker left paused (it
    /// stopped during a dump: a crash, a kill -9), connecting through the
    /// instance of the mirrored schedule. One that cannot be resumed now
    /// is tried again at the next start.
    pub async fn resume_left_paused(
        &self,
        instances: &std::collections::HashMap<i64, InstanceConnection>,
    ) {
        let resume = |p: replay::Paused| async move {
            let found = instances
                .get(&p.instance_id)
                .or_else(|| instances.values().find(|i| server_of(i) == p.server));
            let Some(instance) = found else {
                tracing::error!(
                    server = %p.server,
                    instance_id = p.instance_id,
                    "this worker left WAL replay paused on a standby that is no longer in its \
                     schedule: resume it by hand (SELECT pg_wal_replay_resume())"
                );
                return false;
            };
            let db = if instance.maintenance_db.is_empty() {
                "postgres"
            } else {
                &instance.maintenance_db
            };
            let resumed = match self.session(instance, "pgsnapman-resume-replay") {
                Ok(session) => resume_replay(&session, db).await,
                Err(e) => Err(e),
            };
            match resumed {
                Ok(()) => {
                    tracing::info!(
                        server = %p.server,
                        instance_id = p.instance_id,
                        "resumed WAL replay that this worker left paused (it stopped during a dump)"
                    );
                    true
                }
                Err(e) if ClientError::said(&e, "recovery is not in progress") => {
                    tracing::info!(
                        server = %p.server,
                        "a server this worker left paused is no longer a standby"
                    );
                    true
                }
                Err(e) => {
                    tracing::warn!(
                        server = %p.server,
                        instance_id = p.instance_id,
                        "cannot resume WAL replay this worker left paused (trying again at the next start): {e:#}"
                    );
                    false
                }
            }
        };
        if let Err(e) = self.replay.resume_leftovers(resume).await {
            tracing::error!("cannot resume WAL replay left paused by an earlier run: {e:#}");
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
    /// The result of the stored dump `dump_uuid` is in the outbox.
    pub fn recorded(&self, dump_uuid: &str) {
        if let Ok(uuid) = Uuid::parse_str(dump_uuid) {
            self.unrecorded.end(uuid);
        }
    }

    /// Dumps a crash left stored but unrecorded, each with its row from the
    /// manifest (under the task that took it) or `None` if it was never
    /// completely stored. Call `recorded` once each is dealt with.
    pub async fn unrecorded_dumps(&self) -> Vec<(Uuid, Option<DumpFinished>)> {
        let (marks, store) = (self.unrecorded.clone(), self.store.clone());
        let found = tokio::task::spawn_blocking(move || -> Result<Vec<_>> {
            let mut out = Vec::new();
            for left in marks.leftovers()? {
                match store.manifest(left.dump_uuid) {
                    Ok(m) => {
                        let mut row = crate::maintenance::dump_finished_of(&m, store.root());
                        row.task = left.task;
                        out.push((left.dump_uuid, Some(row)));
                    }
                    Err(pgsnapman_store::StoreError::ManifestNotFound(_)) => {
                        out.push((left.dump_uuid, None));
                    }
                    Err(e) => {
                        tracing::warn!(dump_id = %left.dump_uuid, "cannot read the manifest of an unrecorded dump: {e}");
                    }
                }
            }
            Ok(out)
        })
        .await;
        match found {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::error!("cannot list unrecorded dumps: {e:#}");
                Vec::new()
            }
            Err(e) => {
                tracing::error!("cannot list unrecorded dumps: {e}");
                Vec::new()
            }
        }
    }

    pub async fn discard(&self, dump_uuid: &str) {
        let Ok(uuid) = Uuid::parse_str(dump_uuid) else {
            return;
        };
        self.unrecorded.end(uuid);
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
    use pgsnapman_store::{Store, StoreOptions};

    /// The compressed figures of a dump are forgotten only once queued: a
    /// failed append sends them again, a pass that saved more meanwhile
    /// sends the newer figure, and a dump gone from the store is dropped.
    #[test]
    fn compressed_figures_stay_until_queued() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            compress_later_max_bytes: 1 << 30,
            ..StoreOptions::default()
        };
        let store = Store::open(&dir.path().join("store"), opts).unwrap();
        let dump = Uuid::now_v7();
        let mut ingest = store.begin(dump).unwrap();
        let data: Vec<u8> = (0..400_000u32)
            .flat_map(|i| format!("row {i} {}\n", i % 97).into_bytes())
            .collect();
        ingest.add_file("dump", &data[..]).unwrap();
        let at = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 1, 1, 0, 0, 0).unwrap();
        ingest.finish(previous::test_meta(1, at)).unwrap();
        let written = store.manifest(dump).unwrap().new_stored_bytes;
        assert!(store.later_dumps().unwrap().contains(&dump));
        let runner = Runner::new(
            Clients::default(),
            dir.path(),
            store,
            &crate::Config::default(),
        )
        .unwrap();
        let figure = |b: &CompressedBatch| -> Vec<(String, u64)> {
            b.dumps
                .iter()
                .map(|d| (d.dump_uuid.clone(), d.stored_bytes))
                .collect()
        };

        runner.later.saved().insert(dump, 100);
        runner.later.unsent().insert(dump);
        let gone = Uuid::now_v7();
        runner.later.unsent().insert(gone);
        let first = runner.compressed_unqueued();
        assert_eq!(figure(&first), vec![(dump.to_string(), written - 100)]);
        assert!(!runner.later.unsent().contains(&gone), "not in the store");
        // The append failed (never queued): the same figure again.
        assert_eq!(figure(&runner.compressed_unqueued()), figure(&first));

        // A pass saves more before the first batch is queued: it stays.
        *runner.later.saved().entry(dump).or_default() += 50;
        runner.compressed_queued(&first);
        let second = runner.compressed_unqueued();
        assert_eq!(figure(&second), vec![(dump.to_string(), written - 150)]);
        runner.compressed_queued(&second);
        assert!(runner.compressed_unqueued().dumps.is_empty());
        // Still marked: its running total stays for the next pass.
        assert_eq!(runner.later.saved().get(&dump), Some(&150));

        // Once nothing of it is left to compress, the total goes too.
        runner.store.compress_later().unwrap();
        assert!(runner.store.later_dumps().unwrap().is_empty());
        runner.later.unsent().insert(dump);
        let last = runner.compressed_unqueued();
        assert_eq!(last.dumps.len(), 1);
        runner.compressed_queued(&last);
        assert!(runner.later.saved().is_empty() && runner.later.unsent().is_empty());
    }
}
