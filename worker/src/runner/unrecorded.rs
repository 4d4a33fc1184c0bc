//! Dumps stored but not yet recorded in the outbox. A marker file per dump
//! is made durable before its data goes into the store and removed once its
//! `DumpFinished` is in the outbox; a crash between the manifest's rename and
//! the outbox append leaves the marker, and at start the worker reports such
//! a dump from its manifest, under the task that took it. Format in
//! docs/worker.md ("Unrecorded dumps").
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pgsnapman_proto::v1::TaskRef;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of a marker's JSON; bump on an incompatible change.
const MARKER_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format_version: u32,
    /// The task that took the dump; `None` for a scheduled dump.
    task_id: Option<i64>,
    lease_id: String,
}

/// The markers under `<data_dir>/state/unrecorded/`, one `<dump uuid>.json`
/// per dump between the start of its ingest and its outbox event.
#[derive(Debug, Clone)]
pub struct Unrecorded {
    dir: PathBuf,
}

/// A dump a crash left stored but unrecorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub dump_uuid: Uuid,
    /// The task that took it, if the marker names one (a marker cut by the
    /// crash names none: the dump is then reported without a task).
    pub task: Option<TaskRef>,
}

impl Unrecorded {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("unrecorded"),
        }
    }

    fn path(&self, dump_uuid: Uuid) -> PathBuf {
        self.dir.join(format!("{dump_uuid}.json"))
    }

    /// Records, durably, that `dump_uuid` is about to be stored.
    pub fn begin(&self, dump_uuid: Uuid, task: Option<&TaskRef>) -> Result<()> {
        fs::create_dir_all(&self.dir).with_context(|| format!("create {}", self.dir.display()))?;
        let marker = Marker {
            format_version: MARKER_VERSION,
            task_id: task.map(|t| t.task_id),
            lease_id: task.map(|t| t.lease_id.clone()).unwrap_or_default(),
        };
        let path = self.path(dump_uuid);
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            f.write_all(&serde_json::to_vec(&marker).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| format!("write {}", path.display()))
    }

    /// The dump's marker is there: stored (or being stored) but its
    /// `DumpFinished` is not in the outbox yet.
    pub fn pending(&self, dump_uuid: Uuid) -> bool {
        self.path(dump_uuid).exists()
    }

    /// The dump is recorded in the outbox, or will never be stored.
    pub fn end(&self, dump_uuid: Uuid) {
        let path = self.path(dump_uuid);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dump_id = %dump_uuid, "cannot remove {}: {e}", path.display()),
        }
    }

    /// Every marker left, oldest dump first. Files that are not markers are
    /// ignored; a marker whose content a crash cut names no task.
    pub fn leftovers(&self) -> Result<Vec<Leftover>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("list {}", self.dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry
                .with_context(|| format!("list {}", self.dir.display()))?
                .path();
            let Some(dump_uuid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| Uuid::parse_str(n).ok())
            else {
                continue;
            };
            let marker = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
                .filter(|m| m.format_version == MARKER_VERSION);
            let task = marker.and_then(|m| {
                m.task_id.map(|task_id| TaskRef {
                    task_id,
                    lease_id: m.lease_id,
                })
            });
            out.push(Leftover { dump_uuid, task });
        }
        out.sort_by_key(|l| l.dump_uuid);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_live_from_begin_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let u = Unrecorded::new(dir.path());
        assert!(u.leftovers().unwrap().is_empty());
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let task = TaskRef {
            task_id: 7,
            lease_id: "l-1".into(),
        };
        u.begin(a, Some(&task)).unwrap();
        u.begin(b, None).unwrap();
        assert!(u.begin(a, None).is_err(), "a marker is never overwritten");
        assert_eq!(
            u.leftovers().unwrap(),
            [
                Leftover {
                    dump_uuid: a,
                    task: Some(task)
                },
                Leftover {
                    dump_uuid: b,
                    task: None
                }
            ]
        );
        u.end(a);
        u.end(a);
        assert_eq!(u.leftovers().unwrap().len(), 1);
    }

    #[test]
    fn a_cut_marker_still_names_its_dump() {
        let dir = tempfile::tempdir().unwrap();
        let u = Unrecorded::new(dir.path());
        let a = Uuid::now_v7();
        fs::create_dir_all(dir.path().join("unrecorded")).unwrap();
        fs::write(u.path(a), b"{\"format_version\":1,\"task_i").unwrap();
        fs::write(dir.path().join("unrecorded/stray.txt"), b"x").unwrap();
        assert_eq!(
            u.leftovers().unwrap(),
            [Leftover {
                dump_uuid: a,
                task: None
            }]
        );
    }
}
