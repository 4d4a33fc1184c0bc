//! The state every handle on one open store shares (`Inner`): paths, options,
//! the index, the gc lock and the registry of in-progress ingests. `Store`,
//! `Ingest` and the readers each hold an `Arc` of it; it knows none of them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use uuid::Uuid;

use crate::chunk::ChunkId;
use crate::error::StoreError;
use crate::index::Index;
use crate::manifest::{self, Manifest};
use crate::options::StoreOptions;
use crate::pack::PackId;

/// Chunks referenced by ingests that have not finished yet, keyed by ingest.
#[derive(Default)]
pub(crate) struct Registry {
    next_id: u64,
    pub(crate) ingests: HashMap<u64, (Uuid, HashSet<ChunkId>)>,
}

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) packs_dir: PathBuf,
    pub(crate) manifests_dir: PathBuf,
    pub(crate) opts: StoreOptions,
    pub(crate) index: Index,
    /// Opened with `Store::open_read_only`: nothing may be written.
    pub(crate) read_only: bool,
    /// GC takes it for writing for its whole run. Everything that must not
    /// interleave with a sweep takes it for reading: an ingest's "look up the
    /// index and register the chunk" step and its "seal pack + index entries"
    /// step, and the read path's "look up + open pack" step.
    pub(crate) gc_lock: RwLock<()>,
    pub(crate) registry: Mutex<Registry>,
    /// Set when space is waiting for gc: an ingest was abandoned after it
    /// had sealed packs, or `open` found an interrupted write. Cleared when
    /// a gc starts.
    pub(crate) garbage: std::sync::atomic::AtomicBool,
}

impl Inner {
    pub(crate) fn gc_read(&self) -> RwLockReadGuard<'_, ()> {
        // A panic while holding the lock poisons it; the data it guards is (),
        // so continuing is sound.
        self.gc_lock.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn gc_write(&self) -> RwLockWriteGuard<'_, ()> {
        self.gc_lock.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn pack_path(&self, id: PackId) -> PathBuf {
        self.packs_dir.join(id.sealed_name())
    }

    /// Registers a new ingest; fails if the dump is stored or being ingested.
    pub(crate) fn register(&self, dump: Uuid) -> Result<u64, StoreError> {
        let mut reg = self.registry();
        if reg.ingests.values().any(|(d, _)| *d == dump)
            || manifest::manifest_path(&self.manifests_dir, dump).exists()
        {
            return Err(StoreError::DumpExists(dump));
        }
        reg.next_id += 1;
        let id = reg.next_id;
        reg.ingests.insert(id, (dump, HashSet::new()));
        Ok(id)
    }

    /// Under the gc read lock: otherwise a gc could list the manifests before
    /// this ingest's manifest is renamed into place and read the registry
    /// after this removal, and so mark none of the dump's chunks.
    pub(crate) fn unregister(&self, ingest: u64) {
        let _gc = self.gc_read();
        self.registry().ingests.remove(&ingest);
    }

    pub(crate) fn list_manifest_paths(&self) -> Result<Vec<(Uuid, PathBuf)>, StoreError> {
        let dir = &self.manifests_dir;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(StoreError::io(format!("list {}", dir.display())))? {
            let entry = entry.map_err(StoreError::io(format!("list {}", dir.display())))?;
            let name = entry.file_name();
            if let Some(dump) = name.to_str().and_then(manifest::dump_of_file_name) {
                out.push((dump, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    pub(crate) fn list_packs(&self) -> Result<Vec<(PackId, u64)>, StoreError> {
        let dir = &self.packs_dir;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(StoreError::io(format!("list {}", dir.display())))? {
            let entry = entry.map_err(StoreError::io(format!("list {}", dir.display())))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(PackId::from_sealed_name)
            {
                let len = entry
                    .metadata()
                    .map_err(StoreError::io(format!("stat {}", entry.path().display())))?
                    .len();
                out.push((id, len));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The index's summary of a manifest.
pub(crate) fn summary_of(m: &Manifest) -> crate::index::DumpSummary {
    crate::index::DumpSummary {
        logical_bytes: m.logical_bytes,
        new_stored_bytes: m.new_stored_bytes,
    }
}
