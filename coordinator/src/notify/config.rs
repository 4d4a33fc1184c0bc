//! The `[notify]` section of the coordinator's configuration: how often
//! rules are evaluated, how deliveries are retried, where the key that seals
//! channel secrets lives (docs/configuration.md, docs/alerts.md).
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Evaluate rules and send notifications from this coordinator. Several
    /// coordinators on one catalog may all do it (claims do not overlap).
    pub enabled: bool,
    /// The 32-byte key that seals channel secrets in the catalog (0600,
    /// created on first use). Unset: `<coordinator.data_dir>/notify.key`.
    /// Every coordinator on one catalog needs the same key.
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle trusted for https webhooks and SMTP TLS besides the
    /// web PKI roots (a relay or receiver with an internal CA).
    pub ca_file: Option<PathBuf>,
    /// How often rules are evaluated and due deliveries are sent.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Longest one webhook POST or SMTP conversation may take.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Attempts of one delivery before it is given up (and its channel is
    /// reported as failing).
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles after each further one.
    #[serde(with = "humantime_serde")]
    pub retry_initial_interval: Duration,
    /// The longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max_interval: Duration,
    /// Resolved incidents (and their deliveries) are deleted after this.
    #[serde(with = "humantime_serde")]
    pub history: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            key_file: None,
            ca_file: None,
            interval: Duration::from_secs(15),
            send_timeout: Duration::from_secs(30),
            max_attempts: 8,
            retry_initial_interval: Duration::from_secs(10),
            retry_max_interval: Duration::from_secs(600),
            history: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl NotifyConfig {
    pub fn validate(&self) -> Result<()> {
        if self.interval < Duration::from_millis(100) || self.interval > Duration::from_secs(3600) {
            bail!("notify.interval must be between 100ms and 1h");
        }
        if self.send_timeout < Duration::from_secs(1)
            || self.send_timeout > Duration::from_secs(300)
        {
            bail!("notify.send_timeout must be between 1s and 5m");
        }
        if !(1..=100).contains(&self.max_attempts) {
            bail!("notify.max_attempts must be between 1 and 100");
        }
        if self.retry_initial_interval.is_zero()
            || self.retry_max_interval < self.retry_initial_interval
        {
            bail!(
                "notify.retry_initial_interval must be positive and at most notify.retry_max_interval"
            );
        }
        if self.history < Duration::from_secs(3600) {
            bail!("notify.history must be at least 1h");
        }
        Ok(())
    }

    /// The key file: `key_file`, else `notify.key` in the data directory.
    pub fn key_path(&self, data_dir: &Path) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("notify.key"))
    }

    /// The wait before attempt `attempts + 1` after `attempts` failed ones:
    /// the initial interval doubled per further failure, capped.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(20);
        self.retry_initial_interval
            .saturating_mul(1u32 << shift)
            .min(self.retry_max_interval)
    }

    /// How long a claimed delivery stays reserved to its sender: the send
    /// timeout plus a margin; a sender that dies leaves it due again after.
    pub fn claim_ttl(&self) -> Duration {
        self.send_timeout + Duration::from_secs(30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let c = NotifyConfig {
            retry_initial_interval: Duration::from_secs(10),
            retry_max_interval: Duration::from_secs(60),
            ..NotifyConfig::default()
        };
        let waits: Vec<u64> = (1..=6).map(|a| c.backoff(a).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60, 60]);
        assert_eq!(c.backoff(1000).as_secs(), 60, "no overflow");
    }

    #[test]
    fn the_example_config_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/coordinator.toml");
        let cfg = crate::config::Config::load(Some(&path)).unwrap();
        assert_eq!(cfg.notify.retry_max_interval, Duration::from_secs(600));
        assert_eq!(cfg.dashboard.session_ttl, Duration::from_secs(8 * 3600));
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        NotifyConfig::default().validate().unwrap();
        let c = NotifyConfig {
            max_attempts: 0,
            ..NotifyConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("notify.max_attempts"), "{e}");
    }
}
