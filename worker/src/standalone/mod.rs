//! A worker with no coordinator (docs/standalone.md): its schedule comes from
//! a local jobs file and is installed in the same mirror the scheduler,
//! retention and verification read; its events stay in the outbox until the
//! worker joins a coordinator. Owns the file and the local commands only.
pub mod control;
pub mod copies;
pub mod local;
pub mod passwords;
pub mod restores;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

pub use pgsnapman_proto::jobs_file::{self as jobs, Jobs};

/// What a standalone worker restores besides its own dumps: the jobs
/// file's copies and cron restores (both empty on a managed worker).
#[derive(Debug, Default)]
pub struct Restores {
    copies: Mutex<Vec<jobs::Copy>>,
    scheduled: Mutex<Vec<jobs::Restore>>,
    /// Copies running now (by name), each with the newest dump that waits
    /// for it: a copy never runs twice at once, and a dump stored while
    /// its copy runs is copied next (only the newest such one).
    running_copies: Mutex<HashMap<String, Option<uuid::Uuid>>>,
}

impl Restores {
    /// Takes the copies and restores of the jobs file.
    pub fn set(&self, jobs: &Jobs) {
        *lock(&self.copies) = jobs.copies.clone();
        *lock(&self.scheduled) = jobs.restores.clone();
    }

    /// The copies of dump job `job_id`.
    pub fn copies_of(&self, job_id: i64) -> Vec<jobs::Copy> {
        lock(&self.copies)
            .iter()
            .filter(|c| c.job_id == job_id)
            .cloned()
            .collect()
    }

    /// The cron restores.
    pub fn scheduled(&self) -> Vec<jobs::Restore> {
        lock(&self.scheduled).clone()
    }

    /// Whether copy `name` of `dump` should start now (true: it is marked
    /// running); false: it is running, and `dump` is what it copies next.
    fn begin_copy(&self, name: &str, dump: uuid::Uuid) -> bool {
        let mut running = lock(&self.running_copies);
        match running.get_mut(name) {
            Some(next) => {
                *next = Some(dump);
                false
            }
            None => {
                running.insert(name.to_string(), None);
                true
            }
        }
    }

    /// Copy `name` ended: the dump it copies next, if one waits (it stays
    /// marked running), or none (no longer running). `stop`: forget
    /// what waits (shutdown).
    fn end_copy(&self, name: &str, stop: bool) -> Option<uuid::Uuid> {
        let mut running = lock(&self.running_copies);
        let next = running.get_mut(name).and_then(Option::take);
        if stop || next.is_none() {
            running.remove(name);
            return None;
        }
        next
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_runs_once_at_a_time_and_then_copies_the_newest_waiting_dump() {
        let r = Restores::default();
        let (a, b, c) = (
            uuid::Uuid::from_u128(1),
            uuid::Uuid::from_u128(2),
            uuid::Uuid::from_u128(3),
        );
        assert!(r.begin_copy("x", a), "nothing runs: start");
        assert!(r.begin_copy("y", a), "another copy is independent");
        assert!(!r.begin_copy("x", b), "x runs: b waits");
        assert!(!r.begin_copy("x", c), "c supersedes b");
        assert_eq!(r.end_copy("x", false), Some(c));
        assert_eq!(r.end_copy("x", false), None, "nothing waits: x stops");
        assert!(r.begin_copy("x", b), "x no longer runs");
        assert!(!r.begin_copy("x", c));
        assert_eq!(r.end_copy("x", true), None, "shutdown forgets what waits");
        assert!(r.begin_copy("x", a));
    }
}
