//! Coordinator configuration: built-in defaults, then an optional TOML file,
//! then `PGSNAPMAN_*` environment variables (`__` separates section and key,
//! e.g. `PGSNAPMAN_LEASE__TTL=30s`). See docs/configuration.md.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use pgsnapman_proto::model::quoted;
use pgsnapman_proto::redact_url;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub coordinator: CoordinatorConfig,
    pub catalog: CatalogConfig,
    pub lease: LeaseConfig,
    pub retention: RetentionConfig,
    pub enrollment: EnrollmentConfig,
    pub pki: PkiConfig,
    pub admin: AdminConfig,
    pub metrics: crate::metrics::MetricsConfig,
    pub notify: crate::notify::NotifyConfig,
    pub dashboard: crate::dashboard::DashboardConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the gRPC endpoint (Admin and Worker services).
    pub listen: String,
    /// Written with the bound address and a newline once the endpoint accepts
    /// connections (for supervisors and tests).
    pub ready_file: Option<PathBuf>,
    /// PEM certificate chain and key of the server (brought by the
    /// operator). Unset: the coordinator issues `<data_dir>/pki/server.crt`
    /// from its CA for `names`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle that client certificates are verified against. Unset:
    /// the coordinator's CA (`pki.ca_cert_file` or `<data_dir>/pki/ca.crt`).
    pub client_ca_file: Option<PathBuf>,
    /// Names (DNS or IP) the issued server certificate is valid for. Empty:
    /// localhost, 127.0.0.1, ::1, the host name and the listen IP.
    pub names: Vec<String>,
    /// Serve without TLS. Accepted only on a loopback `listen` address.
    pub plaintext: bool,
    /// How often the gRPC health service probes the catalog (`SELECT 1`);
    /// NOT_SERVING while it does not answer.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7431".into(),
            ready_file: None,
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            names: Vec::new(),
            plaintext: false,
            health_interval: Duration::from_secs(5),
        }
    }
}

/// The CA that signs worker certificates (and the server certificate when
/// the coordinator issues it). Both unset: the built-in CA under
/// `<data_dir>/pki/`, created on first start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PkiConfig {
    /// PEM certificate of the operator's CA.
    pub ca_cert_file: Option<PathBuf>,
    /// PEM private key of that CA (0600). Without it worker enrollment is
    /// off and `server.cert_file` must be set.
    pub ca_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// Holds the embedded catalog cluster (when `catalog.url` is empty).
    pub data_dir: PathBuf,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("pgsnapman-coordinator"),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// `postgres://…` URL of the catalog database. Empty: the coordinator runs
    /// its own cluster under `<data_dir>/catalog`.
    pub url: String,
    pub max_connections: u32,
    /// OS user that owns and runs the embedded cluster when the coordinator
    /// runs as root (Postgres refuses to run as root).
    pub embedded_os_user: String,
    /// Directory with initdb/pg_ctl for the embedded cluster; empty: the
    /// newest under /usr/lib/postgresql/*/bin, else PATH.
    pub pg_bin_dir: String,
    /// Run as root with a data directory the OS user cannot enter (root's
    /// 0700 home): the cluster goes under `<this>/catalog-<hash>`.
    pub embedded_fallback_dir: PathBuf,
}

impl std::fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("embedded_os_user", &self.embedded_os_user)
            .field("pg_bin_dir", &self.pg_bin_dir)
            .field("embedded_fallback_dir", &self.embedded_fallback_dir)
            .finish()
    }
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 16,
            embedded_os_user: "postgres".into(),
            pg_bin_dir: String::new(),
            embedded_fallback_dir: PathBuf::from("/var/lib/pgsnapman"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// How long a task lease lasts without renewal.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often an open lease stream with credit looks for queued tasks.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often expired leases are returned to the queue.
    #[serde(with = "humantime_serde")]
    pub reap_interval: Duration,
    /// Keepalive period on lease streams (both directions).
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// Leases a task may use before it fails for good.
    pub max_attempts: u32,
    /// Lease streams one worker may hold open at once (more: RESOURCE_EXHAUSTED).
    pub max_lease_streams: usize,
    /// Upload streams one worker may hold open at once (more: RESOURCE_EXHAUSTED).
    pub max_upload_streams: usize,
    /// Longest a unary WorkerService call (Hello, SyncSchedule, Enroll,
    /// RenewCertificate) may take before it is answered DEADLINE_EXCEEDED.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// LISTEN for catalog notifications (migration 0020) and hand out
    /// queued tasks and schedule changes at once; false: poll only (a
    /// catalog behind a transaction pooler, where LISTEN does not work).
    pub notify: bool,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            notify: true,
            reap_interval: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            max_attempts: 3,
            max_lease_streams: 4,
            max_upload_streams: 4,
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// How long the catalog keeps its history tables (docs/configuration.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Ids of applied events (replay protection). Must outlast the longest
    /// time an event can wait in a worker's outbox after being applied
    /// (an acknowledgement lost, then the worker offline).
    #[serde(with = "humantime_serde")]
    pub applied_events: Duration,
    /// Rows of `messages`.
    #[serde(with = "humantime_serde")]
    pub messages: Duration,
    /// Lines of `restore_log` (the runs themselves stay).
    #[serde(with = "humantime_serde")]
    pub restore_log: Duration,
    /// Rows of `audit_log`.
    #[serde(with = "humantime_serde")]
    pub audit: Duration,
    /// FAILED rows of `dumps` (they hold no data; successful dumps go by
    /// the workers' retention), by their finish time.
    #[serde(with = "humantime_serde")]
    pub failed_dumps: Duration,
    /// How often the coordinator prunes.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            applied_events: Duration::from_secs(30 * DAY),
            messages: Duration::from_secs(90 * DAY),
            restore_log: Duration::from_secs(180 * DAY),
            audit: Duration::from_secs(365 * DAY),
            failed_dumps: Duration::from_secs(30 * DAY),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// Limits of the AdminService (docs/security-auth.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Sustained calls per second allowed to one operator token.
    pub requests_per_second: u32,
    /// Calls one token may make at once after a pause.
    pub burst: u32,
    /// Sustained failed authentications per second from one IP address
    /// (no, garbage, unknown, revoked or expired token).
    pub unauthenticated_requests_per_second: u32,
    pub unauthenticated_burst: u32,
    /// `WatchTask` streams open at once on this coordinator (all callers).
    pub max_watch_streams: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            requests_per_second: 50,
            burst: 100,
            unauthenticated_requests_per_second: 5,
            unauthenticated_burst: 20,
            max_watch_streams: 256,
        }
    }
}

impl AdminConfig {
    pub fn rate_limits(&self) -> crate::auth::RateLimits {
        use crate::auth::Rate;
        crate::auth::RateLimits {
            token: Rate {
                per_second: self.requests_per_second,
                burst: self.burst,
            },
            unauthenticated: Rate {
                per_second: self.unauthenticated_requests_per_second,
                burst: self.unauthenticated_burst,
            },
        }
    }
}

/// Worker enrollment and certificates (docs/security-enroll.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentConfig {
    /// How long an enrollment token stays usable (it works once).
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Validity of a worker certificate; workers renew with a third left.
    #[serde(with = "humantime_serde")]
    pub cert_validity: Duration,
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(3600),
            cert_validity: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Config {
    /// Defaults ← TOML file (if given) ← environment.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        fig = fig.merge(
            // Only SECTION__KEY variables: PGSNAPMAN_CONFIG and the client's
            // PGSNAPMAN_COORDINATOR (a URL) are not settings of this file.
            Env::prefixed("PGSNAPMAN_")
                .filter(|k| k.as_str().contains("__"))
                .split("__")
                .lowercase(true),
        );
        let cfg: Config = fig.extract().context("invalid configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let addr: SocketAddr = self.server.listen.parse().with_context(|| {
            format!(
                "server.listen {} is not an address:port",
                quoted(&self.server.listen)
            )
        })?;
        if self.server.cert_file.is_some() != self.server.key_file.is_some() {
            bail!("server.cert_file and server.key_file must be set together");
        }
        if self.server.plaintext && !addr.ip().is_loopback() {
            bail!(
                "server.plaintext is accepted on a loopback server.listen only, not on {addr}: remove it (the coordinator serves TLS with its own CA by default)"
            );
        }
        if self.pki.ca_key_file.is_some() && self.pki.ca_cert_file.is_none() {
            bail!("pki.ca_key_file is set without pki.ca_cert_file");
        }
        if self.pki.ca_cert_file.is_some()
            && self.pki.ca_key_file.is_none()
            && self.server.cert_file.is_none()
            && !self.server.plaintext
        {
            bail!(
                "pki.ca_cert_file without pki.ca_key_file: the coordinator cannot issue its server certificate; set server.cert_file and server.key_file (or pki.ca_key_file)"
            );
        }
        for name in &self.server.names {
            crate::pki::check_server_name(name)
                .with_context(|| format!("server.names: {}", quoted(name)))?;
        }
        if self.lease.ttl < Duration::from_secs(3) {
            bail!("lease.ttl must be at least 3s");
        }
        if self.lease.keepalive_interval.is_zero() || self.lease.poll_interval.is_zero() {
            bail!("lease.keepalive_interval and lease.poll_interval must be positive");
        }
        if self.lease.max_attempts == 0 {
            bail!("lease.max_attempts must be at least 1");
        }
        let a = &self.admin;
        if [
            a.requests_per_second,
            a.burst,
            a.unauthenticated_requests_per_second,
            a.unauthenticated_burst,
        ]
        .contains(&0)
        {
            bail!(
                "admin.requests_per_second, admin.burst, admin.unauthenticated_requests_per_second and admin.unauthenticated_burst must be at least 1"
            );
        }
        if a.max_watch_streams == 0 {
            bail!("admin.max_watch_streams must be at least 1");
        }
        self.notify.validate()?;
        let e = &self.enrollment;
        if e.token_ttl < Duration::from_secs(1) || e.token_ttl > Duration::from_secs(7 * 24 * 3600)
        {
            bail!("enrollment.token_ttl must be between 1s and 7d");
        }
        if e.cert_validity < Duration::from_secs(60)
            || e.cert_validity > Duration::from_secs(825 * 24 * 3600)
        {
            bail!("enrollment.cert_validity must be between 1m and 825d");
        }
        let l = &self.lease;
        if l.max_lease_streams == 0 || l.max_upload_streams == 0 {
            bail!("lease.max_lease_streams and lease.max_upload_streams must be at least 1");
        }
        if l.call_timeout < Duration::from_secs(1) {
            bail!("lease.call_timeout must be at least 1s");
        }
        self.metrics.validate()?;
        self.dashboard.validate(self.server.plaintext)?;
        let r = &self.retention;
        if r.applied_events < Duration::from_secs(24 * 3600) {
            bail!(
                "retention.applied_events must be at least 1d: a replayed event older than it would be applied twice"
            );
        }
        if r.messages.is_zero()
            || r.restore_log.is_zero()
            || r.audit.is_zero()
            || r.failed_dumps.is_zero()
            || r.prune_interval.is_zero()
        {
            bail!(
                "retention.messages, retention.restore_log, retention.audit, retention.failed_dumps and retention.prune_interval must be positive"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type
    fn environment_overrides_and_client_variables_are_ignored() {
        figment::Jail::expect_with(|jail| {
            // pgsnap's own variable must not be read as the [coordinator] section.
            jail.set_env("PGSNAPMAN_COORDINATOR", "http://127.0.0.1:7431");
            jail.set_env("PGSNAPMAN_CONFIG", "/nonexistent");
            jail.set_env("PGSNAPMAN_LEASE__TTL", "30s");
            jail.set_env("PGSNAPMAN_COORDINATOR__DATA_DIR", "/srv/coord");
            let cfg = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(cfg.lease.ttl, Duration::from_secs(30));
            assert_eq!(cfg.coordinator.data_dir, PathBuf::from("/srv/coord"));
            jail.set_env("PGSNAPMAN_LEASE__NO_SUCH_KEY", "1");
            assert!(Config::load(None).is_err(), "unknown keys are errors");
            Ok(())
        });
    }

    #[test]
    fn retention_defaults_and_the_replay_floor() {
        let mut cfg = Config::default();
        const DAY: u64 = 24 * 3600;
        assert_eq!(cfg.retention.applied_events, Duration::from_secs(30 * DAY));
        assert_eq!(cfg.retention.messages, Duration::from_secs(90 * DAY));
        assert_eq!(cfg.retention.restore_log, Duration::from_secs(180 * DAY));
        cfg.validate().unwrap();
        cfg.retention.applied_events = Duration::from_secs(3600);
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("retention.applied_events"), "{err}");
    }

    #[test]
    fn admin_rate_limits_default_and_must_be_positive() {
        let mut cfg = Config::default();
        assert_eq!((cfg.admin.requests_per_second, cfg.admin.burst), (50, 100));
        cfg.admin.burst = 0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("admin.burst"), "{err}");
    }

    #[test]
    fn plaintext_off_loopback_is_refused() {
        let mut cfg = Config::default();
        cfg.server.listen = "0.0.0.0:7431".into();
        assert!(cfg.validate().is_ok(), "TLS (the default) anywhere");
        cfg.server.plaintext = true;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
        cfg.server.listen = "[::1]:7431".into();
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn a_brought_ca_without_its_key_needs_a_server_certificate() {
        let mut cfg = Config::default();
        cfg.pki.ca_cert_file = Some("/etc/ca.crt".into());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("server.cert_file"), "{err}");
        cfg.server.cert_file = Some("/etc/s.crt".into());
        cfg.server.key_file = Some("/etc/s.key".into());
        assert!(cfg.validate().is_ok());
        cfg.server.names = vec!["bad name!".into()];
        let err = format!("{:#}", cfg.validate().unwrap_err());
        assert!(err.contains("server.names"), "{err}");
    }
}
