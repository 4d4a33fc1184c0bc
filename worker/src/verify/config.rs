//! `[verify]` of the worker's configuration (docs/configuration.md): how long
//! one verification may take and how many scheduled ones run at once.
use std::time::Duration;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The most scheduled verifications `max_concurrent` allows at once.
pub const MAX_CONCURRENT: u32 = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyConfig {
    /// A verification (scheduled or `verify now`) still running after this
    /// long is stopped: pg_restore/psql killed, the scratch database
    /// dropped, and it fails naming this setting.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Scheduled verifications running at once on this worker (a fire that
    /// finds none free waits for one). `verify now` tasks are bounded by the
    /// task slots instead.
    pub max_concurrent: u32,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(6 * 3600),
            max_concurrent: 1,
        }
    }
}

impl VerifyConfig {
    pub fn validate(&self) -> Result<()> {
        if self.timeout < Duration::from_secs(1) {
            bail!("verify.timeout must be at least 1s");
        }
        if self.max_concurrent == 0 || self.max_concurrent > MAX_CONCURRENT {
            bail!(
                "verify.max_concurrent {} must be between 1 and {MAX_CONCURRENT}",
                self.max_concurrent
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced() {
        let mut c = VerifyConfig::default();
        assert!(c.validate().is_ok());
        c.max_concurrent = 0;
        assert!(c.validate().is_err());
        c.max_concurrent = MAX_CONCURRENT + 1;
        assert!(c.validate().is_err());
        c.max_concurrent = 2;
        c.timeout = Duration::from_millis(500);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("verify.timeout"), "{e}");
    }
}
