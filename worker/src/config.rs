//! The worker's configuration: defaults, then an optional TOML file, then
//! `PGSNAPMAN_<SECTION>__<KEY>` environment variables. Owns validation of the
//! values; it must not touch the network or start anything.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything the worker can be told.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    pub worker: WorkerConfig,
    pub coordinator: CoordinatorConfig,
    pub dump: DumpConfig,
    pub postgres: PostgresConfig,
    pub outbox: OutboxConfig,
    pub scheduler: SchedulerConfig,
    pub store: StoreConfig,
    pub restore: RestoreConfig,
    pub discovery: DiscoveryConfig,
    pub retention: RetentionConfig,
    pub scripts: crate::script::ScriptsConfig,
    pub verify: crate::verify::VerifyConfig,
    pub metrics: crate::metrics::MetricsConfig,
    pub standalone: crate::standalone::StandaloneConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Registered worker name (required).
    pub name: String,
    /// Where the outbox, temporary files and dumps live.
    pub data_dir: PathBuf,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            data_dir: PathBuf::from("./pgsnapman-worker"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CoordinatorConfig {
    /// `https://host:port` of the coordinator (`http://` on loopback only,
    /// for a coordinator started with `server.plaintext`).
    pub url: String,
    /// Several coordinators on one catalog (docs/coordinators.md): a list,
    /// or one string of comma-separated URLs (the env variable). Set, it
    /// replaces `url`. The worker starts at one chosen by its name and
    /// moves to the next whenever a session fails.
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    /// PEM CA the coordinator's certificate must chain to (its
    /// `<data_dir>/pki/ca.crt`); unset: the CA received at enrollment
    /// (`<data_dir>/identity/ca.crt`), else the system roots.
    pub ca_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// One-time enrollment token (`pgsnap worker enroll-token NAME`): used at
    /// start when `<data_dir>/identity/` holds no certificate yet. Prefer
    /// the env variable PGSNAPMAN_COORDINATOR__ENROLL_TOKEN; never printed.
    pub enroll_token: crate::identity::EnrollToken,
}

/// Where the worker looks for its coordinator when told nothing.
const DEFAULT_URL: &str = "https://127.0.0.1:7431";

impl CoordinatorConfig {
    /// The coordinator URLs in the order to try them: `urls`, else `url`.
    /// Checked by `Config::validate`.
    pub fn url_list(&self) -> Result<Vec<String>> {
        if self.urls.is_empty() {
            return pgsnapman_proto::channel::url_list(&[&self.url]).context("coordinator.url");
        }
        let urls = pgsnapman_proto::channel::url_list(&self.urls).context("coordinator.urls")?;
        if self.url != DEFAULT_URL && !urls.contains(&self.url) {
            bail!(
                "coordinator.url {} is not among coordinator.urls: set one of the two",
                pgsnapman_proto::model::excerpt(&self.url)
            );
        }
        Ok(urls)
    }
}

/// A list of strings, or one string (an env variable) split later.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_string(),
            urls: Vec::new(),
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            enroll_token: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DumpConfig {
    /// Dumps this worker runs at the same time.
    pub max_concurrent: u32,
    /// Time between SIGTERM and SIGKILL when a dump is cancelled.
    #[serde(with = "humantime_serde")]
    pub kill_grace_period: Duration,
    /// pg_dump's and pg_dumpall's `--lock-wait-timeout`: the longest wait
    /// for a table lock before the dump fails (0s: wait forever).
    #[serde(with = "humantime_serde")]
    pub lock_wait_timeout: Duration,
    /// A dump still running after this long is cancelled and fails.
    #[serde(with = "humantime_serde")]
    pub max_run_time: Duration,
}

impl Default for DumpConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 2,
            kill_grace_period: Duration::from_secs(10),
            lock_wait_timeout: Duration::from_secs(600),
            max_run_time: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreConfig {
    /// Restores this worker runs at the same time; a leased restore waits
    /// for a slot (its lease kept renewed). Restores also use a task slot
    /// (`dump.max_concurrent`) like every leased task.
    pub max_concurrent: u32,
    /// Other workers' data directories this worker reads dumps from (read
    /// only), by worker name: for a worker that is the restore worker of
    /// others (`pgsnap worker set-restore-worker`). A shared file system
    /// or a mount of the other machine's data directory.
    pub shared_stores: std::collections::BTreeMap<String, PathBuf>,
    /// pg_restore jobs of a restore into a new database that does not say
    /// (its `parallel_jobs` is 0), where the archive is served from the
    /// store; 1: one job, streamed. At most `MAX_DEFAULT_JOBS`.
    pub default_jobs: u32,
}

/// Largest `restore.default_jobs`; why: each job is a server connection
/// and a server process busy with the restore.
pub const MAX_DEFAULT_JOBS: u32 = 16;

impl Default for RestoreConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 1,
            shared_stores: std::collections::BTreeMap::new(),
            default_jobs: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PostgresConfig {
    /// Directories searched for pg_dump, pg_dumpall and psql.
    pub bin_dirs: Vec<PathBuf>,
    /// libpq `connect_timeout` for every connection to a source server.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Most bytes of output kept from one query the worker runs itself
    /// (probe, restore metadata, discovery, a restore target's catalog) or
    /// from `pg_restore --list`; more fails with an error naming this key.
    pub max_query_output_bytes: u64,
    /// `statement_timeout` of every query the worker runs itself through
    /// psql (0s: none).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// `lock_timeout` of those queries (0s: none).
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            bin_dirs: default_bin_dirs(),
            connect_timeout: Duration::from_secs(10),
            max_query_output_bytes: crate::runner::process::DEFAULT_MAX_OUTPUT_BYTES,
            statement_timeout: Duration::from_secs(300),
            lock_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboxConfig {
    /// Most events sent in one `EventBatch`.
    pub max_batch: usize,
    /// Most encoded bytes of events in one `EventBatch` (a batch always
    /// holds at least one event; one event is at most 8 MiB).
    pub max_batch_bytes: usize,
    /// Backlog above which the worker warns.
    pub warn_events: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            max_batch_bytes: 4 * 1024 * 1024,
            warn_events: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// IANA time zone in which cron expressions are evaluated.
    pub timezone: String,
    /// A fire missed while the worker was down runs at start if it is at most
    /// this old; older ones are skipped and reported.
    #[serde(with = "humantime_serde")]
    pub missed_grace: Duration,
    /// Fallback pull of the schedule while connected (changes are normally
    /// announced on the lease stream at once).
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// Scheduled dumps at once (ad-hoc tasks have `dump.max_concurrent`).
    pub max_concurrent: u32,
    /// TEST ONLY: the scheduler's clock runs this many times faster than
    /// real time (30: an every-minute job fires every 2 s).
    pub clock_speed: u32,
    /// TEST ONLY (with clock_speed above 1): the time the sped-up clock
    /// starts at (RFC 3339), instead of now; it never goes back behind a
    /// fire already recorded. Set, dumps are stamped with this clock's time
    /// (a simulated calendar: retention cuts days by it).
    pub clock_start: Option<chrono::DateTime<chrono::Utc>>,
}

/// Highest `scheduler.clock_speed`: one simulated day per real second.
pub const MAX_CLOCK_SPEED: u32 = 86_400;

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            timezone: "UTC".into(),
            missed_grace: Duration::from_secs(3600),
            sync_interval: Duration::from_secs(300),
            max_concurrent: 2,
            clock_speed: 1,
            clock_start: None,
        }
    }
}

/// Retention on the worker (docs/retention.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// Off: this worker never deletes a dump by retention (pins, restore
    /// jobs and `pgsnap catalog delete` work as ever). For holding every
    /// dump while something is investigated.
    pub enabled: bool,
    /// How often every mirrored job's retention is applied (also at start);
    /// it runs after every dump of a job too.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(24 * 3600),
        }
    }
}

/// Auto-discovery of databases (docs/discovery.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoveryConfig {
    /// How often the databases of each instance this worker discovers are
    /// listed (also at start and when such an instance appears or changes).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
        }
    }
}

/// The deduplicating pack store under `<data_dir>` (docs/store.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// A pack file is sealed once it holds this many bytes.
    pub pack_target_bytes: u64,
    /// zstd level for new chunks (1 is fastest; see docs/store.md).
    pub zstd_level: i32,
    /// Longest chain of delta chunks a read must resolve; 0 stores whole
    /// chunks only (docs/store.md, "Delta chunks").
    pub max_delta_depth: u8,
    /// After deletions, packs whose live share fell below this fraction are
    /// rewritten (0 never repacks, 1 always).
    pub repack_below_live_fraction: f64,
    /// Nice value of the threads that chunk and compress a dump (0..=19; 0
    /// keeps the worker's own priority).
    pub ingest_nice: i32,
    /// Most raw bytes one dump may store uncompressed, compressed after the
    /// dump in the background (0: every chunk is compressed while the dump
    /// runs). Also at most a quarter of the free space; never on object
    /// storage (docs/store.md, "Compression after the dump").
    pub compress_later_max_bytes: u64,
    /// `local` (packs under `<data_dir>`) or `s3` (`[store.s3]`;
    /// docs/object-storage.md).
    pub backend: String,
    pub s3: crate::store_backend::S3Section,
    /// `[store.encryption]` (docs/encryption.md).
    pub encryption: crate::store_key::EncryptionSection,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let d = pgsnapman_store::StoreOptions::default();
        Self {
            pack_target_bytes: d.pack_target_bytes,
            zstd_level: d.zstd_level,
            max_delta_depth: d.max_delta_depth,
            repack_below_live_fraction: 0.5,
            ingest_nice: d.ingest_nice,
            compress_later_max_bytes: 4 << 30,
            backend: "local".into(),
            s3: crate::store_backend::S3Section::default(),
            encryption: crate::store_key::EncryptionSection::default(),
        }
    }
}

impl StoreConfig {
    pub fn options(&self) -> pgsnapman_store::StoreOptions {
        pgsnapman_store::StoreOptions {
            pack_target_bytes: self.pack_target_bytes,
            zstd_level: self.zstd_level,
            max_delta_depth: self.max_delta_depth,
            ingest_nice: self.ingest_nice,
            compress_later_max_bytes: self.compress_later_max_bytes,
            ..pgsnapman_store::StoreOptions::default()
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if given; it must exist), then the
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            // Only SECTION__KEY variables: PGSNAPMAN_CONFIG and the client's
            // PGSNAPMAN_COORDINATOR (a URL) are not settings.
            Env::prefixed("PGSNAPMAN_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let config: Config = figment.extract().context("read worker configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that would otherwise fail later and less clearly.
    pub fn validate(&self) -> Result<()> {
        if self.worker.name.is_empty() {
            bail!("worker.name is required (set PGSNAPMAN_WORKER__NAME or [worker] name)");
        }
        pgsnapman_proto::model::validate_worker_name(&self.worker.name)?;
        self.coordinator.url_list()?;
        self.standalone.validate()?;
        pgsnapman_proto::scrape::parse_listen(&self.metrics.listen).map_err(anyhow::Error::msg)?;
        if self.dump.max_concurrent == 0 || self.dump.max_concurrent > 1024 {
            bail!(
                "dump.max_concurrent {} must be between 1 and 1024",
                self.dump.max_concurrent
            );
        }
        if self.restore.max_concurrent == 0 || self.restore.max_concurrent > 64 {
            bail!(
                "restore.max_concurrent {} must be between 1 and 64",
                self.restore.max_concurrent
            );
        }
        if self.restore.default_jobs == 0 || self.restore.default_jobs > MAX_DEFAULT_JOBS {
            bail!(
                "restore.default_jobs {} must be between 1 and {MAX_DEFAULT_JOBS}",
                self.restore.default_jobs
            );
        }
        if self.outbox.max_batch == 0 || self.outbox.max_batch > 1000 {
            bail!(
                "outbox.max_batch {} must be between 1 and 1000",
                self.outbox.max_batch
            );
        }
        if self.outbox.max_batch_bytes < 64 * 1024
            || self.outbox.max_batch_bytes > pgsnapman_proto::MAX_MESSAGE_BYTES / 2
        {
            bail!(
                "outbox.max_batch_bytes {} must be between 65536 and {} (half the gRPC message limit)",
                self.outbox.max_batch_bytes,
                pgsnapman_proto::MAX_MESSAGE_BYTES / 2
            );
        }
        if self.scheduler.timezone.parse::<chrono_tz::Tz>().is_err() {
            bail!(
                "scheduler.timezone {:?} is not an IANA time zone (e.g. UTC, Europe/Amsterdam)",
                self.scheduler.timezone
            );
        }
        if self.scheduler.max_concurrent == 0 || self.scheduler.max_concurrent > 1024 {
            bail!(
                "scheduler.max_concurrent {} must be between 1 and 1024",
                self.scheduler.max_concurrent
            );
        }
        if self.scheduler.clock_speed == 0 || self.scheduler.clock_speed > MAX_CLOCK_SPEED {
            bail!("scheduler.clock_speed must be between 1 and {MAX_CLOCK_SPEED}");
        }
        if self.scheduler.clock_start.is_some() && self.scheduler.clock_speed == 1 {
            bail!(
                "scheduler.clock_start is a test setting: it needs scheduler.clock_speed above 1"
            );
        }
        if self.retention.interval < Duration::from_secs(1) {
            bail!("retention.interval must be at least 1s");
        }
        if self.scheduler.sync_interval < Duration::from_secs(1) {
            bail!("scheduler.sync_interval must be at least 1s");
        }
        if self.postgres.max_query_output_bytes < 1024 * 1024 {
            bail!(
                "postgres.max_query_output_bytes {} must be at least 1048576 (1 MiB)",
                self.postgres.max_query_output_bytes
            );
        }
        if self.dump.max_run_time < Duration::from_secs(1) {
            bail!("dump.max_run_time must be at least 1s");
        }
        if self.scripts.timeout < Duration::from_secs(1) {
            bail!("scripts.timeout must be at least 1s");
        }
        self.verify.validate()?;
        if self.discovery.interval < Duration::from_secs(1) {
            bail!("discovery.interval must be at least 1s");
        }
        if self.store.max_delta_depth > pgsnapman_store::MAX_DELTA_DEPTH {
            bail!(
                "store.max_delta_depth {} must be between 0 (no delta chunks) and {}",
                self.store.max_delta_depth,
                pgsnapman_store::MAX_DELTA_DEPTH
            );
        }
        if !(0..=19).contains(&self.store.ingest_nice) {
            bail!(
                "store.ingest_nice {} must be between 0 (the worker's own priority) and 19",
                self.store.ingest_nice
            );
        }
        if !(0.0..=1.0).contains(&self.store.repack_below_live_fraction) {
            bail!(
                "store.repack_below_live_fraction {} must be between 0 and 1",
                self.store.repack_below_live_fraction
            );
        }
        if self.coordinator.backoff_initial.is_zero()
            || self.coordinator.backoff_initial > self.coordinator.backoff_max
        {
            bail!(
                "coordinator.backoff_initial {:?} must be positive and at most backoff_max {:?}",
                self.coordinator.backoff_initial,
                self.coordinator.backoff_max
            );
        }
        Ok(())
    }
}

/// Every `/usr/lib/postgresql/*/bin` and `/usr/pgsql-*/bin`, then the PATH
/// directories holding a `pg_dump`.
pub fn default_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut push = |d: PathBuf| {
        if d.join("pg_dump").is_file() && !dirs.contains(&d) {
            dirs.push(d);
        }
    };
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut found: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        found.sort();
        found.into_iter().for_each(&mut push);
    }
    if let Ok(entries) = std::fs::read_dir("/usr") {
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pgsql-"))
            .map(|e| e.path().join("bin"))
            .collect();
        found.sort();
        found.into_iter().for_each(&mut push);
    }
    if let Some(path) = std::env::var_os("PATH") {
        std::env::split_paths(&path).for_each(&mut push);
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_a_name() {
        let mut c = Config::default();
        assert!(c.validate().is_err());
        c.worker.name = "w-1".into();
        c.validate().unwrap();
        assert_eq!(c.dump.max_concurrent, 2);
        assert_eq!(c.restore.max_concurrent, 1);
        assert_eq!(c.coordinator.backoff_max, Duration::from_secs(30));
        assert_eq!(c.discovery.interval, Duration::from_secs(3600));
        assert_eq!(c.dump.lock_wait_timeout, Duration::from_secs(600));
        assert_eq!(c.postgres.statement_timeout, Duration::from_secs(300));
        c.dump.max_run_time = Duration::ZERO;
        assert!(c.validate().is_err());
        c.dump.max_run_time = Duration::from_secs(3600);
        c.worker.name = "bad name".into();
        assert!(c.validate().unwrap_err().to_string().contains("bad name"));
    }

    #[test]
    fn restore_default_jobs_is_one_and_bounded() {
        let mut c = Config::default();
        c.worker.name = "w-1".into();
        assert_eq!(c.restore.default_jobs, 1);
        c.restore.default_jobs = MAX_DEFAULT_JOBS;
        c.validate().unwrap();
        for bad in [0, MAX_DEFAULT_JOBS + 1] {
            c.restore.default_jobs = bad;
            let err = c.validate().unwrap_err().to_string();
            assert_eq!(
                err,
                format!("restore.default_jobs {bad} must be between 1 and {MAX_DEFAULT_JOBS}")
            );
        }
    }

    #[test]
    fn delta_depth_reaches_the_store_and_is_bounded() {
        let mut c = Config::default();
        c.worker.name = "w-1".into();
        assert_eq!(c.store.options().max_delta_depth, 6);
        c.store.max_delta_depth = 0;
        c.validate().unwrap();
        assert_eq!(c.store.options().max_delta_depth, 0);
        c.store.max_delta_depth = pgsnapman_store::MAX_DELTA_DEPTH + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("store.max_delta_depth"), "{err}");
    }

    #[test]
    fn ingest_nice_reaches_the_store_and_is_bounded() {
        let mut c = Config::default();
        c.worker.name = "w-1".into();
        assert_eq!(c.store.options().ingest_nice, 10);
        c.store.ingest_nice = 0;
        c.validate().unwrap();
        assert_eq!(c.store.options().ingest_nice, 0);
        for bad in [-1, 20] {
            c.store.ingest_nice = bad;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("store.ingest_nice"), "{err}");
        }
    }

    #[test]
    fn outbox_batch_bytes_stay_under_the_message_limit() {
        let mut c = Config::default();
        c.worker.name = "w-1".into();
        assert_eq!(c.outbox.max_batch_bytes, 4 * 1024 * 1024);
        for bad in [0, 1024, pgsnapman_proto::MAX_MESSAGE_BYTES] {
            c.outbox.max_batch_bytes = bad;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("outbox.max_batch_bytes"), "{err}");
        }
        c.outbox.max_batch_bytes = pgsnapman_proto::MAX_MESSAGE_BYTES / 2;
        c.validate().unwrap();
    }

    #[test]
    fn toml_file_and_durations_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            "[worker]\nname = \"w-toml\"\n[dump]\nkill_grace_period = \"3s\"\nmax_concurrent = 4\n",
        )
        .unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.worker.name, "w-toml");
        assert_eq!(c.dump.kill_grace_period, Duration::from_secs(3));
        assert_eq!(c.dump.max_concurrent, 4);
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).is_err());
    }

    #[test]
    fn coordinator_urls_take_a_list_or_one_comma_separated_string() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        let load = |coordinator: &str| {
            std::fs::write(
                &path,
                format!("[worker]\nname = \"w\"\n[coordinator]\n{coordinator}\n"),
            )
            .unwrap();
            Config::load(Some(&path))
        };
        let c = load("").unwrap();
        assert_eq!(c.coordinator.url_list().unwrap(), [DEFAULT_URL]);
        let c = load("urls = [\"https://a:1\", \"https://b:1\"]").unwrap();
        assert_eq!(
            c.coordinator.url_list().unwrap(),
            ["https://a:1", "https://b:1"]
        );
        let c = load("url = \"https://b:1\"\nurls = \"https://a:1,https://b:1\"").unwrap();
        assert_eq!(
            c.coordinator.url_list().unwrap(),
            ["https://a:1", "https://b:1"]
        );
        let c = load("url = \"https://a:1\"\nurls = [\"https://a:1\", \"https://b:1\"]").unwrap();
        assert_eq!(c.coordinator.url_list().unwrap().len(), 2);
        let err = load("url = \"https://c:1\"\nurls = [\"https://a:1\"]").unwrap_err();
        assert!(
            format!("{err:#}").contains("not among coordinator.urls"),
            "{err:#}"
        );
        let err = load("urls = [\"https://a:1\", \"http://db.example:1\"]").unwrap_err();
        assert!(format!("{err:#}").contains("coordinator.urls"), "{err:#}");
    }
}
