//! A worker with no coordinator (docs/standalone.md): its schedule comes from
//! a local jobs file and is installed in the same mirror the scheduler,
//! retention and verification read; its events stay in the outbox until the
//! worker joins a coordinator. Owns the file and the local commands only.
pub mod copies;
pub mod local;
pub mod passwords;

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

pub use pgsnapman_proto::jobs_file::{self as jobs, Jobs};

/// `[standalone]` of the worker configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StandaloneConfig {
    /// Run with no coordinator: the schedule comes from `jobs_file`.
    pub enabled: bool,
    /// The jobs file (TOML; docs/standalone.md).
    pub jobs_file: PathBuf,
    /// Instance passwords, libpq's pgpass format, mode 0600 (the
    /// environment's `PGSNAPMAN_PASSWORD_<INSTANCE>` comes first).
    pub password_file: Option<PathBuf>,
}

impl StandaloneConfig {
    pub fn validate(&self) -> Result<()> {
        if self.enabled && self.jobs_file.as_os_str().is_empty() {
            bail!(
                "standalone.enabled needs standalone.jobs_file (or PGSNAPMAN_STANDALONE__JOBS_FILE)"
            );
        }
        Ok(())
    }

    /// Reads and validates the jobs file, with the passwords.
    pub fn load_jobs(&self) -> Result<Jobs> {
        if self.jobs_file.as_os_str().is_empty() {
            bail!("no jobs file: set standalone.jobs_file (or PGSNAPMAN_STANDALONE__JOBS_FILE)");
        }
        let file = match &self.password_file {
            Some(p) => Some(passwords::PasswordFile::load(p)?),
            None => None,
        };
        jobs::load(&self.jobs_file, &|i| {
            passwords::password_of(i, file.as_ref()).map_err(|e| format!("{e:#}"))
        })
        .map_err(anyhow::Error::from)
    }
}

/// Makes the jobs file's schedule the mirrored one, as a sync from a
/// coordinator would. Takes the schedule: its clear passwords are sealed
/// and wiped on the way in, no copy stays behind.
pub fn install(mirror: &crate::mirror::Mirror, jobs: &mut Jobs) -> Result<()> {
    mirror.set_worker_halted(false)?;
    mirror.replace(jobs.version, std::mem::take(&mut jobs.schedule))
}
