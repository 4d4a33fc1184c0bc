//! WAL replay paused on standbys for the dumps that asked for it: one pause
//! per server however many of this worker's dumps overlap (a count per
//! server: pause with the first, resume after the last), and a file that
//! remembers the servers this worker has paused, so that the next start
//! resumes what a crash left paused. Runs no SQL itself: callers pass it in.
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use pgsnapman_proto::v1::InstanceConnection;
use serde::{Deserialize, Serialize};

/// Version of the file below (docs/worker.md, "Standby sources").
pub const PAUSED_FILE_VERSION: u32 = 1;
/// The file's name under `<data_dir>/state/`.
pub const PAUSED_FILE: &str = "replay-paused.json";

/// A server this worker paused replay on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    /// `host:port`, the key of the count.
    pub server: String,
    /// The instance the pause went through (how to connect to resume it).
    pub instance_id: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PausedFile {
    format_version: u32,
    paused: Vec<Paused>,
}

/// The key of a server: `host:port` (two instances on one server share it).
pub fn server_of(instance: &InstanceConnection) -> String {
    let port = if instance.port == 0 {
        5432
    } else {
        instance.port
    };
    format!("{}:{port}", instance.host)
}

/// The per-server counts of this process and the file behind them.
pub struct ReplayPauses {
    /// Per server: how many running dumps need replay paused. The async
    /// lock is held while pausing or resuming, so a second dump waits for
    /// the first one's pause to take effect or fail.
    holders: Mutex<HashMap<String, Arc<tokio::sync::Mutex<u32>>>>,
    /// Serializes rewrites of the file.
    file_lock: Mutex<()>,
    file: PathBuf,
}

impl ReplayPauses {
    /// Counts backed by `<state_dir>/replay-paused.json` (not read yet).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            holders: Mutex::new(HashMap::new()),
            file_lock: Mutex::new(()),
            file: state_dir.join(PAUSED_FILE),
        }
    }

    fn holders_of(&self, server: &str) -> Arc<tokio::sync::Mutex<u32>> {
        let mut map = self.holders.lock().expect("replay holders lock poisoned");
        Arc::clone(map.entry(server.to_string()).or_default())
    }

    /// Takes a share of the pause of `instance`'s server; the first share
    /// runs `pause` (recorded in the file first, so a crash right after
    /// the pause still finds it). A failed pause takes no share.
    pub async fn hold<F, Fut>(&self, instance: &InstanceConnection, pause: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let server = server_of(instance);
        let slot = self.holders_of(&server);
        let mut holders = slot.lock().await;
        if *holders == 0 {
            self.record(Paused {
                server: server.clone(),
                instance_id: instance.instance_id,
            })?;
            if let Err(e) = pause().await {
                // Nothing is paused that this worker must remember.
                if let Err(fe) = self.forget(&server) {
                    tracing::warn!("cannot update {}: {fe:#}", self.file.display());
                }
                return Err(e);
            }
        }
        *holders += 1;
        Ok(())
    }

    /// Gives back a share taken by `hold`; the last one runs `resume`.
    /// `Ok(false)`: another dump still holds replay paused. A failed resume
    /// stays in the file (the next start tries again).
    pub async fn release<F, Fut>(&self, instance: &InstanceConnection, resume: F) -> Result<bool>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let server = server_of(instance);
        let slot = self.holders_of(&server);
        let mut holders = slot.lock().await;
        *holders = holders.saturating_sub(1);
        if *holders > 0 {
            return Ok(false);
        }
        resume().await?;
        self.forget(&server)?;
        Ok(true)
    }

    /// Resumes each server the file lists that no dump of this process
    /// holds paused (what a crash left paused): `resume` gets the record
    /// and says whether it is done (`Ok(true)`: resumed or nothing to
    /// resume; then the record goes).
    pub async fn resume_leftovers<F, Fut>(&self, mut resume: F) -> Result<()>
    where
        F: FnMut(Paused) -> Fut,
        Fut: Future<Output = bool>,
    {
        for p in self.load()? {
            let slot = self.holders_of(&p.server);
            let holders = slot.lock().await;
            if *holders > 0 {
                continue;
            }
            let server = p.server.clone();
            if resume(p).await {
                self.forget(&server)?;
            }
            drop(holders);
        }
        Ok(())
    }

    /// The servers the file lists.
    pub fn load(&self) -> Result<Vec<Paused>> {
        let _guard = self.file_lock.lock().expect("replay file lock poisoned");
        self.read()
    }

    fn read(&self) -> Result<Vec<Paused>> {
        let text = match std::fs::read_to_string(&self.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.file.display())),
        };
        let f: PausedFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a replay pause file", self.file.display()))?;
        if f.format_version != PAUSED_FILE_VERSION {
            bail!(
                "{} has format version {}, expected {PAUSED_FILE_VERSION}",
                self.file.display(),
                f.format_version
            );
        }
        Ok(f.paused)
    }

    fn record(&self, p: Paused) -> Result<()> {
        let _guard = self.file_lock.lock().expect("replay file lock poisoned");
        let mut all = self.read()?;
        all.retain(|o| o.server != p.server);
        all.push(p);
        self.write(all)
    }

    fn forget(&self, server: &str) -> Result<()> {
        let _guard = self.file_lock.lock().expect("replay file lock poisoned");
        let mut all = self.read()?;
        let before = all.len();
        all.retain(|o| o.server != server);
        if all.len() == before {
            return Ok(());
        }
        self.write(all)
    }

    /// Replaces the file: temporary file, fsync, rename, fsync of the
    /// directory.
    fn write(&self, paused: Vec<Paused>) -> Result<()> {
        let dir = self
            .file
            .parent()
            .context("the replay file has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let doc = PausedFile {
            format_version: PAUSED_FILE_VERSION,
            paused,
        };
        let tmp = self.file.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.file)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("write {}", self.file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn inst(id: i64, port: u32) -> InstanceConnection {
        InstanceConnection {
            instance_id: id,
            host: "standby.example".into(),
            port,
            ..InstanceConnection::default()
        }
    }

    #[tokio::test]
    async fn the_first_pauses_and_the_last_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let r = ReplayPauses::new(dir.path());
        let (pauses, resumes) = (AtomicU32::new(0), AtomicU32::new(0));
        let pause = || async {
            pauses.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        let resume = || async {
            resumes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        // Two instances of one server, and another server.
        r.hold(&inst(1, 5433), pause).await.unwrap();
        r.hold(&inst(2, 5433), pause).await.unwrap();
        r.hold(&inst(3, 5434), pause).await.unwrap();
        assert_eq!(pauses.load(Ordering::SeqCst), 2);
        let listed = r.load().unwrap();
        assert_eq!(
            listed,
            vec![
                Paused {
                    server: "standby.example:5433".into(),
                    instance_id: 1
                },
                Paused {
                    server: "standby.example:5434".into(),
                    instance_id: 3
                },
            ]
        );
        assert!(!r.release(&inst(1, 5433), resume).await.unwrap());
        assert_eq!(resumes.load(Ordering::SeqCst), 0, "resumed under a dump");
        assert!(r.release(&inst(2, 5433), resume).await.unwrap());
        assert_eq!(resumes.load(Ordering::SeqCst), 1);
        assert_eq!(r.load().unwrap().len(), 1);

        // A failed resume stays listed; a restart (new counts, same file)
        // resumes it, and what resume_leftovers reports done goes.
        let failing = || async { anyhow::bail!("server gone") };
        assert!(r.release(&inst(3, 5434), failing).await.is_err());
        let restarted = ReplayPauses::new(dir.path());
        let mut seen = Vec::new();
        restarted
            .resume_leftovers(|p| {
                seen.push(p.instance_id);
                async { true }
            })
            .await
            .unwrap();
        assert_eq!(seen, vec![3]);
        assert!(restarted.load().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_pause_holds_nothing_and_leftovers_held_now_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let r = ReplayPauses::new(dir.path());
        let err = r
            .hold(&inst(1, 5433), || async {
                anyhow::bail!("permission denied")
            })
            .await;
        assert!(err.is_err());
        assert!(r.load().unwrap().is_empty());
        // Held by a running dump: the leftover pass leaves it alone.
        r.hold(&inst(1, 5433), || async { Ok(()) }).await.unwrap();
        let mut called = false;
        r.resume_leftovers(|_| {
            called = true;
            async { true }
        })
        .await
        .unwrap();
        assert!(!called);
        assert_eq!(r.load().unwrap().len(), 1);
    }
}
