//! The worker's state database (`<data_dir>/state`, RocksDB): where it is,
//! its column families and its format version, opened in one place. The
//! outbox, the finished tasks and the schedule mirror are views on it and
//! own their keys; this module owns no keys but `meta`'s. Layout:
//! docs/worker.md, "State database".
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteOptions};

/// Events waiting for the coordinator's acknowledgement (`outbox` module).
pub const CF_OUTBOX: &str = "outbox";
/// The format version.
pub const CF_META: &str = "meta";
/// Finished tasks whose results may not be known to the coordinator yet
/// (`outbox` module).
pub const CF_DONE: &str = "done_tasks";
/// The mirrored schedule (`mirror` module).
pub const CF_MIRROR: &str = "mirror";
/// Per job, when it was first seen and the last fire time handled
/// (`mirror` module).
pub const CF_FIRES: &str = "fires";
/// Events the coordinator refused, set aside with the reason (`outbox`
/// module, `refused.rs`).
pub const CF_REFUSED: &str = "refused_events";
/// Every column family, created on open if missing.
const COLUMN_FAMILIES: [&str; 6] = [CF_OUTBOX, CF_META, CF_DONE, CF_MIRROR, CF_FIRES, CF_REFUSED];

const FORMAT_KEY: &[u8] = b"format_version";
/// Version of the state database layout (docs/worker.md). Bump on any
/// incompatible change and keep an upgrade for the old version.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// The state directory of a worker whose data directory is `data_dir`: the
/// database, and the files kept beside it (unrecorded dumps, paused
/// replays).
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("state")
}

/// Write options of every state write: synced, durable once it returns.
pub fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

/// The open state database; cheap to clone (all clones share it).
#[derive(Clone)]
pub struct State {
    db: Arc<DB>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("path", &self.db.path())
            .finish()
    }
}

impl State {
    /// Opens (or creates) the state database at `path` (see `dir`) with all
    /// its column families, and checks (or, when new, writes) its format
    /// version.
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        pgsnapman_store::bound_info_logs(&mut opts);
        let cfs = COLUMN_FAMILIES
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)
            .with_context(|| format!("open state database {}", path.display()))?;
        let state = Self { db: Arc::new(db) };
        state.check_format(path)?;
        Ok(state)
    }

    /// Opens an existing state database read-only (beside a running worker),
    /// with whichever of the column families it has.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let opts = Options::default();
        let names = DB::list_cf(&opts, path)
            .with_context(|| format!("open state database {}", path.display()))?;
        let db = DB::open_cf_for_read_only(&opts, path, names, false)
            .with_context(|| format!("open state database {} read-only", path.display()))?;
        Ok(Self { db: Arc::new(db) })
    }

    fn check_format(&self, path: &Path) -> Result<()> {
        let meta = self.cf(CF_META)?;
        match self
            .db
            .get_cf(meta, FORMAT_KEY)
            .context("read state format version")?
        {
            None => self
                .db
                .put_cf_opt(
                    meta,
                    FORMAT_KEY,
                    STATE_FORMAT_VERSION.to_be_bytes(),
                    &synced(),
                )
                .context("write state format version"),
            Some(v) => {
                let arr: [u8; 4] = v.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!("state format version has {} bytes, expected 4", v.len())
                })?;
                let found = u32::from_be_bytes(arr);
                if found != STATE_FORMAT_VERSION {
                    bail!(
                        "state database {} has format version {found}, this worker reads version {STATE_FORMAT_VERSION}",
                        path.display()
                    );
                }
                Ok(())
            }
        }
    }

    /// The database, for the views' reads and writes.
    pub fn db(&self) -> &DB {
        &self.db
    }

    /// One of the column families named above.
    pub fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .with_context(|| format!("column family {name} missing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_keeps_few_rocksdb_text_logs() {
        let dir = tempfile::tempdir().unwrap();
        let path = super::dir(dir.path());
        for _ in 0..(pgsnapman_store::INFO_LOGS_KEPT + 4) {
            State::open(&path).unwrap();
        }
        let logs = std::fs::read_dir(&path)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("LOG")
            })
            .count();
        assert!(
            (1..=pgsnapman_store::INFO_LOGS_KEPT).contains(&logs),
            "{logs} text logs"
        );
    }

    #[test]
    fn another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = super::dir(dir.path());
        {
            let state = State::open(&path).unwrap();
            for name in COLUMN_FAMILIES {
                state.cf(name).unwrap();
            }
            let meta = state.cf(CF_META).unwrap();
            let stored = state.db().get_cf(meta, FORMAT_KEY).unwrap();
            assert_eq!(stored.as_deref(), Some(&1u32.to_be_bytes()[..]));
            state
                .db()
                .put_cf(meta, FORMAT_KEY, 2u32.to_be_bytes())
                .unwrap();
        }
        let err = State::open(&path).unwrap_err().to_string();
        assert!(err.contains("has format version 2"), "{err}");
    }
}
