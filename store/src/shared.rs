//! The state every handle on one open store shares (`Inner`): paths, options,
//! the index, the gc lock and the registry of in-progress ingests. `Store`,
//! `Ingest` and the readers each hold an `Arc` of it; it knows none of them.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
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
    /// A gc is reading the manifests (without the gc lock).
    marking: bool,
    /// The chunk sets of ingests that ended while `marking`: the gc marks
    /// them, since it may have listed the manifests before theirs appeared.
    ended: Vec<HashSet<ChunkId>>,
}

/// A test's hook, called with the name of the place reached.
#[cfg(test)]
pub(crate) type TestHook = std::sync::Arc<dyn Fn(&'static str) + Send + Sync>;

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) packs_dir: PathBuf,
    pub(crate) manifests_dir: PathBuf,
    pub(crate) opts: StoreOptions,
    pub(crate) index: Index,
    /// The bucket of an S3 store (`None`: local backend).
    pub(crate) remote: Option<std::sync::Arc<crate::backend::Remote>>,
    /// The ciphers of an encrypted store (`None`: plain; docs/encryption.md).
    pub(crate) crypto: Option<std::sync::Arc<crate::crypto::Crypto>>,
    /// Opened with `Store::open_read_only`: nothing may be written.
    pub(crate) read_only: bool,
    /// GC takes it for writing while it sweeps the index and deletes packs
    /// (never while it reads manifests or copies records). Everything that
    /// must not interleave with a sweep takes it for reading, briefly: an
    /// ingest's "look up the index and register the chunk" step and its
    /// "seal pack + index entries" step, the read path's "look up + open
    /// pack" step, verify's opening of one pack. Nothing holds it for long,
    /// so a gc waiting for it (which blocks new readers) waits briefly.
    pub(crate) gc_lock: RwLock<()>,
    /// Held by the one gc that may run at a time, for its whole run.
    pub(crate) gc_running: Mutex<()>,
    /// Counts gc sweeps: a verify that sees it change re-checks what it
    /// found missing (the dump may be gone, the chunk moved by repack).
    pub(crate) gc_generation: AtomicU64,
    pub(crate) registry: Mutex<Registry>,
    /// Set when space is waiting for gc: an ingest was abandoned after it
    /// had sealed packs, or `open` found an interrupted write. Cleared when
    /// a gc starts.
    pub(crate) garbage: AtomicBool,
    /// Read-only bucket opens: the packs indexed so far, each with whether
    /// it skipped records already indexed (`backend::bucket`).
    pub(crate) bucket_packs: Mutex<HashMap<PackId, bool>>,
    /// A read-only open's shared lock on `readers.lock` (`readers`), held
    /// for as long as it is open.
    pub(crate) reader_lock: Option<nix::fcntl::Flock<std::fs::File>>,
    /// Chunks stored uncompressed whose delta `Store::compress_later` will
    /// encode (the index's `b` keys, and those an ingest of this process
    /// has just chosen to defer). None of them is chosen as a delta base
    /// until then: its chain's depth is not known before the pass.
    pub(crate) later_deltas: Mutex<HashSet<ChunkId>>,
    #[cfg(test)]
    pub(crate) hook: Mutex<Option<TestHook>>,
}

impl Inner {
    pub(crate) fn new(
        root: &Path,
        opts: StoreOptions,
        index: Index,
        read_only: bool,
        garbage: bool,
        remote: Option<std::sync::Arc<crate::backend::Remote>>,
    ) -> Inner {
        Inner {
            root: root.to_path_buf(),
            packs_dir: root.join("packs"),
            manifests_dir: root.join("manifests"),
            opts,
            index,
            remote,
            crypto: None,
            read_only,
            gc_lock: RwLock::new(()),
            gc_running: Mutex::new(()),
            gc_generation: AtomicU64::new(0),
            registry: Mutex::new(Registry::default()),
            garbage: AtomicBool::new(garbage),
            bucket_packs: Mutex::new(HashMap::new()),
            reader_lock: None,
            later_deltas: Mutex::new(HashSet::new()),
            #[cfg(test)]
            hook: Mutex::new(None),
        }
    }

    /// Keeps a read-only open's shared lock on `readers.lock`
    /// (`readers::lock_shared`, taken before the index was opened).
    pub(crate) fn with_reader_lock(
        mut self,
        lock: Option<nix::fcntl::Flock<std::fs::File>>,
    ) -> Inner {
        self.reader_lock = lock;
        self
    }

    /// Sets the ciphers of an encrypted store.
    pub(crate) fn with_crypto(
        mut self,
        crypto: Option<std::sync::Arc<crate::crypto::Crypto>>,
    ) -> Inner {
        self.crypto = crypto;
        self
    }

    /// How this store names chunks.
    pub(crate) fn naming(&self) -> crate::chunk::Naming {
        self.crypto
            .as_ref()
            .map_or(crate::chunk::Naming::Plain, |c| c.naming())
    }

    /// A manifest read with this store's key (if any).
    pub(crate) fn read_manifest(&self, path: &Path) -> Result<Manifest, StoreError> {
        manifest::read_manifest_with(path, self.crypto.as_deref())
    }

    /// Calls the test's hook, if one is set (test builds only).
    #[cfg(test)]
    pub(crate) fn hook(&self, at: &'static str) {
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(h) = hook {
            h(at);
        }
    }

    #[cfg(not(test))]
    pub(crate) fn hook(&self, _at: &'static str) {}

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

    /// See `Inner::later_deltas` (the field).
    pub(crate) fn later_deltas(&self) -> MutexGuard<'_, HashSet<ChunkId>> {
        self.later_deltas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An ingest is storing a dump (`Store::compress_later` yields to it).
    pub(crate) fn ingest_running(&self) -> bool {
        !self.registry().ingests.is_empty()
    }

    /// Taken by gc for its whole run: one gc at a time.
    pub(crate) fn gc_running(&self) -> MutexGuard<'_, ()> {
        self.gc_running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A gc starts reading the manifests: from now on an ending ingest
    /// leaves its chunk set for it.
    pub(crate) fn start_marking(&self) {
        self.registry().marking = true;
    }

    /// The gc has read the manifests: every chunk registered by a running
    /// ingest or by one that ended meanwhile. Call under the gc write lock,
    /// so that no ingest registers more until the sweep is done.
    pub(crate) fn stop_marking(&self) -> HashSet<ChunkId> {
        let mut reg = self.registry();
        reg.marking = false;
        let mut out: HashSet<ChunkId> = std::mem::take(&mut reg.ended)
            .into_iter()
            .flatten()
            .collect();
        for (_, set) in reg.ingests.values() {
            out.extend(set.iter().copied());
        }
        out
    }

    pub(crate) fn pack_path(&self, id: PackId) -> PathBuf {
        self.packs_dir.join(id.sealed_name())
    }

    /// Registers a new ingest; fails if the dump is stored or being ingested.
    pub(crate) fn register(&self, dump: Uuid) -> Result<u64, StoreError> {
        let mut reg = self.registry();
        if reg.ingests.values().any(|(d, _)| *d == dump)
            || manifest::existing_manifest(&self.manifests_dir, dump).is_some()
        {
            return Err(StoreError::DumpExists(dump));
        }
        reg.next_id += 1;
        let id = reg.next_id;
        reg.ingests.insert(id, (dump, HashSet::new()));
        Ok(id)
    }

    /// Forgets an ingest (its manifest is durable, or it was abandoned).
    /// While a gc reads the manifests its chunk set goes to that gc instead:
    /// otherwise the gc could list the manifests before this ingest's
    /// manifest was renamed into place and read the registry after this
    /// removal, and so mark none of the dump's chunks (the race
    /// `gc_racing_ingests_loses_nothing` found).
    pub(crate) fn unregister(&self, ingest: u64) {
        let mut reg = self.registry();
        if let Some((_, set)) = reg.ingests.remove(&ingest)
            && reg.marking
        {
            reg.ended.push(set);
        }
    }

    /// Every manifest file, sorted by dump uuid (one path per dump in memory).
    pub(crate) fn list_manifest_paths(&self) -> Result<Vec<(Uuid, PathBuf)>, StoreError> {
        let mut out =
            manifest::ManifestFiles::list(&self.manifests_dir)?.collect::<Result<Vec<_>, _>>()?;
        out.sort();
        Ok(out)
    }

    /// Every sealed pack with its size: the bucket's objects on an S3 store.
    pub(crate) fn list_packs(&self) -> Result<Vec<(PackId, u64)>, StoreError> {
        if let Some(remote) = &self.remote {
            let mut out: Vec<(PackId, u64)> = remote
                .list("packs")?
                .into_iter()
                .filter_map(|(n, len)| PackId::from_sealed_name(&n).map(|id| (id, len)))
                .collect();
            out.sort();
            return Ok(out);
        }
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
