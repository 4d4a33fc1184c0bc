//! `Store`: opening a store directory, the read path (every chunk hash
//! checked), dump deletion and statistics. The shared state lives in
//! `shared.rs`, writing in `ingest/`, collection in `gc.rs`, checking in
//! `verify.rs`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use crate::backend::{BackendConfig, BackendInfo, Remote};
use crate::crash::{self, CrashPoint};
use crate::crypto::StoreKey;
use crate::durable;
use crate::error::StoreError;
use crate::index::{Index, StoreParams};
use crate::ingest::Ingest;
use crate::manifest::{self, Manifest};
use crate::options::StoreOptions;
use crate::pack::{ChunkKind, PackId};
use crate::reader::{FileReader, StoredFile};
use crate::shared::{Inner, summary_of};

/// True when `packs` holds a sealed pack or `manifests` a manifest.
fn holds_data(packs: &Path, manifests: &Path) -> Result<bool, StoreError> {
    for (dir, is_data) in [
        (
            packs,
            &(|n: &str| PackId::from_sealed_name(n).is_some()) as &dyn Fn(&str) -> bool,
        ),
        (manifests, &|n: &str| {
            manifest::dump_of_file_name(n).is_some()
        }),
    ] {
        for entry in fs::read_dir(dir).map_err(StoreError::io(format!("list {}", dir.display())))? {
            let entry = entry.map_err(StoreError::io(format!("list {}", dir.display())))?;
            if entry.file_name().to_str().is_some_and(is_data) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Counts and sizes of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StoreStats {
    pub packs: u64,
    pub pack_bytes: u64,
    /// Indexed (unique) chunks.
    pub chunks: u64,
    /// Raw bytes of the indexed chunks.
    pub unique_raw_bytes: u64,
    /// Compressed bytes of the indexed chunks.
    pub stored_bytes: u64,
    /// Indexed chunks stored as deltas against a base (included in `chunks`).
    pub delta_chunks: u64,
    /// Raw bytes of the delta chunks (included in `unique_raw_bytes`).
    pub delta_raw_bytes: u64,
    /// Stored bytes of the delta chunks (included in `stored_bytes`).
    pub delta_stored_bytes: u64,
    /// Entries of the feature index (super-feature → base candidate).
    pub feature_entries: u64,
    pub manifests: u64,
    /// Sum of the manifests' logical bytes.
    pub logical_bytes: u64,
    /// `logical_bytes / pack_bytes`: what dedup and compression save together.
    pub dedup_ratio: f64,
}

/// A deduplicating pack store rooted at one directory. Cheap to clone (an
/// `Arc` inside); `Send + Sync`. Only one process may open a store at a time
/// (RocksDB's lock file enforces it).
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl Store {
    /// Opens or creates the store under `root` (`packs/`, `manifests/`,
    /// `index/`) and removes what a crash may leave: `.pack.open` files and
    /// manifest `.tmp` files. Neither is referenced by anything durable.
    pub fn open(root: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        Store::open_with(root, opts, BackendConfig::Local)
    }

    /// `open` with packs and manifests also kept in `backend` (an S3 bucket:
    /// `packs/` becomes a bounded cache; docs/object-storage.md).
    pub fn open_with(
        root: &Path,
        opts: StoreOptions,
        backend: BackendConfig,
    ) -> Result<Store, StoreError> {
        Store::open_encrypted(root, opts, backend, None)
    }

    /// `open_with` for a store that is (or, when new, becomes) encrypted
    /// with `key` (docs/encryption.md). An encrypted store opened without
    /// its key or with another, or a key given for a store holding plain
    /// data, fails with a one-line `StoreError::Encryption`.
    pub fn open_encrypted(
        root: &Path,
        opts: StoreOptions,
        backend: BackendConfig,
        key: Option<&StoreKey>,
    ) -> Result<Store, StoreError> {
        opts.validate()?;
        let remote = match backend {
            BackendConfig::Local => None,
            BackendConfig::S3(cfg) => {
                fs::create_dir_all(root)
                    .map_err(StoreError::io(format!("create {}", root.display())))?;
                crate::backend::mark_in_bucket(root, &cfg)?;
                Some(Arc::new(Remote::new(cfg)?))
            }
        };
        let packs_dir = root.join("packs");
        let manifests_dir = root.join("manifests");
        for dir in [root, packs_dir.as_path(), manifests_dir.as_path()] {
            fs::create_dir_all(dir).map_err(StoreError::io(format!("create {}", dir.display())))?;
        }
        let requested = StoreParams {
            chunking: opts.chunking,
            features: opts.features,
        };
        let index_dir = root.join("index");
        // A lost index must not be replaced by an empty one: every stored
        // dump would read as missing, and gc would see no live chunk (on an
        // S3 store: would delete every pack in the bucket). An S3 store
        // rebuilds it from the bucket, which holds every pack and manifest.
        let lost = !index_dir.join("CURRENT").is_file();
        if lost
            && let Some(remote) = &remote
            && crate::backend::bucket::holds_data(remote)?
        {
            let r = crate::rebuild::rebuild_from_bucket(root, Arc::clone(remote), requested, key)?;
            tracing::info!(
                packs = r.packs,
                chunks = r.chunks,
                dumps = r.dumps,
                damaged_packs = r.damaged_packs.len(),
                "chunk index and manifests rebuilt from the bucket"
            );
        } else if lost && holds_data(&packs_dir, &manifests_dir)? {
            return Err(StoreError::Invalid {
                what: "store",
                detail: format!(
                    "{} holds packs or manifests but no chunk index: run `pgsnapman-worker store rebuild-index`",
                    root.display()
                ),
            });
        }
        let (index, kept) = Index::open(&index_dir, requested)?;
        let crypto = crate::crypto::resolve(root, &index, key, true, || {
            Ok(index.dumps()?.is_empty()
                && !index.has_chunks()?
                && !holds_data(&packs_dir, &manifests_dir)?)
        })?;
        if kept != requested {
            tracing::info!(
                ?kept,
                ?requested,
                "store keeps the chunk and feature parameters it was created with"
            );
        }
        let crashed = remove_leftovers(&packs_dir, PackId::is_open_name)?;
        remove_leftovers(&manifests_dir, |n| n.ends_with(durable::TMP_SUFFIX))?;
        let opts = StoreOptions {
            chunking: kept.chunking,
            features: kept.features,
            ..opts
        };
        let store = Store {
            inner: Arc::new(
                Inner::new(root, opts, index, false, crashed, remote).with_crypto(crypto),
            ),
        };
        store.repair_summaries()?;
        store.inner.trim_cache(None)?;
        let planned = store.inner.index.later_deltas()?;
        store
            .inner
            .later_deltas()
            .extend(planned.into_iter().map(|(id, _)| id));
        Ok(store)
    }

    /// Opens an existing store for reading only — listing, reading and
    /// verifying dumps — also while a worker has it open (the index is seen
    /// as it was at this moment; a pack that a later gc deletes cannot be
    /// read). Nothing is cleaned up or repaired; writing calls fail.
    pub fn open_read_only(root: &Path) -> Result<Store, StoreError> {
        Store::open_read_only_encrypted(root, None)
    }

    /// `open_read_only` of a store that may be encrypted with `key`.
    pub fn open_read_only_encrypted(
        root: &Path,
        key: Option<&StoreKey>,
    ) -> Result<Store, StoreError> {
        // Before the index: see `readers` (packs a pass rewrites stay while
        // this open may still look for them).
        let reader_lock = crate::readers::lock_shared(root);
        let (index, kept) = Index::open_read_only(&root.join("index"))?;
        let crypto = crate::crypto::resolve(root, &index, key, false, || Ok(false))?;
        let opts = StoreOptions {
            chunking: kept.chunking,
            features: kept.features,
            ..StoreOptions::default()
        };
        Ok(Store {
            inner: Arc::new(
                Inner::new(root, opts, index, true, false, None)
                    .with_crypto(crypto)
                    .with_reader_lock(reader_lock),
            ),
        })
    }

    /// True when a gc would reclaim the space of abandoned writes: an ingest
    /// dropped unfinished after it had sealed packs (a failed or cancelled
    /// dump), or an interrupted write found by `open` (a crash). Packs
    /// sealed just before a crash with no open pack are not noticed; any
    /// later gc removes them.
    pub fn has_garbage(&self) -> bool {
        self.inner.garbage.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn writable(&self) -> Result<(), StoreError> {
        if self.inner.read_only {
            return Err(StoreError::Invalid {
                what: "operation",
                detail: format!(
                    "the store at {} is open read-only",
                    self.inner.root.display()
                ),
            });
        }
        Ok(())
    }

    /// Makes the dump summaries match the manifests: a crash can fall
    /// between a manifest's rename and its summary, or between a deletion's
    /// unlink and its summary's removal.
    fn repair_summaries(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut summaries: HashMap<Uuid, crate::index::DumpSummary> =
            inner.index.dumps()?.into_iter().collect();
        for (dump, path) in inner.list_manifest_paths()? {
            if summaries.remove(&dump).is_some() {
                continue;
            }
            match inner.read_manifest(&path) {
                Ok(m) => inner.index.put_dump(&dump, summary_of(&m))?,
                // verify reports it; stats simply do not count it.
                Err(e) => tracing::warn!(dump_id = %dump, "unreadable manifest: {e}"),
            }
        }
        for dump in summaries.keys() {
            inner.index.delete_dump(dump)?;
        }
        Ok(())
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The options in force (with the chunk parameters recorded in the index).
    pub fn options(&self) -> StoreOptions {
        self.inner.opts
    }

    /// Starts storing a dump. Several ingests may run at once on different
    /// threads. Fails if `dump_uuid` is already stored or being ingested.
    pub fn begin(&self, dump_uuid: Uuid) -> Result<Ingest, StoreError> {
        self.begin_after(dump_uuid, None)
    }

    /// Like `begin`, naming the dump the same job stored before this one:
    /// each new chunk is then also offered, as delta base, the chunk at its
    /// place in that dump (docs/store.md, "Positional bases"). A hint: a
    /// `previous` that is not stored (deleted, unknown) or unreadable is
    /// ignored, and the stored formats are the same either way.
    pub fn begin_after(
        &self,
        dump_uuid: Uuid,
        previous: Option<Uuid>,
    ) -> Result<Ingest, StoreError> {
        self.writable()?;
        Ingest::new(Arc::clone(&self.inner), dump_uuid, previous)
    }

    /// The manifest of one stored dump.
    pub fn manifest(&self, dump_uuid: Uuid) -> Result<Manifest, StoreError> {
        let path = manifest::existing_manifest(&self.inner.manifests_dir, dump_uuid)
            .ok_or(StoreError::ManifestNotFound(dump_uuid))?;
        self.inner.read_manifest(&path)
    }

    /// The uuids of every stored dump (one per manifest file), sorted.
    pub fn dump_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        Ok(self
            .inner
            .list_manifest_paths()?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// Every stored dump's manifest, read one at a time as the iterator is
    /// advanced (memory does not grow with the number of dumps), in
    /// directory order. A manifest deleted meanwhile is skipped; an
    /// unreadable one yields its error and the iteration goes on.
    pub fn each_manifest(
        &self,
    ) -> Result<impl Iterator<Item = Result<Manifest, StoreError>>, StoreError> {
        let mut files = manifest::ManifestFiles::list(&self.inner.manifests_dir)?
            .with_crypto(self.inner.crypto.clone());
        Ok(std::iter::from_fn(move || {
            files.next_read().map(|r| r.and_then(|(_, m)| m))
        }))
    }

    /// Every stored dump's manifest, ordered by dump uuid, all in memory
    /// (`each_manifest` reads one at a time). Fails on the first
    /// unreadable manifest (`verify` reports them all instead).
    pub fn manifests(&self) -> Result<Vec<Manifest>, StoreError> {
        self.inner
            .list_manifest_paths()?
            .iter()
            .map(|(_, p)| self.inner.read_manifest(p))
            .collect()
    }

    /// One file of a stored dump as a stream; every chunk is hash-checked as
    /// it is read. The reader keeps working if the dump is deleted meanwhile,
    /// until a gc removes its chunks.
    pub fn file_reader(&self, dump_uuid: Uuid, file_name: &str) -> Result<FileReader, StoreError> {
        Ok(self.stored_file(dump_uuid, file_name)?.reader())
    }

    /// One file of a dump, for readers of it on any thread
    /// (`StoredFile::reader`).
    pub fn stored_file(&self, dump_uuid: Uuid, file_name: &str) -> Result<StoredFile, StoreError> {
        let m = self.manifest(dump_uuid)?;
        let file = m.file(file_name).ok_or_else(|| StoreError::FileNotFound {
            dump: dump_uuid,
            name: file_name.to_string(),
        })?;
        Ok(StoredFile::new(
            Arc::clone(&self.inner),
            dump_uuid,
            file_name,
            &file.chunks,
        ))
    }

    /// Every file of a dump, its manifest read once: readers of each for
    /// any thread (`StoredFile::reader`).
    pub fn stored_files(&self, dump_uuid: Uuid) -> Result<Vec<StoredFile>, StoreError> {
        let m = self.manifest(dump_uuid)?;
        Ok(m.files
            .iter()
            .map(|f| StoredFile::new(Arc::clone(&self.inner), dump_uuid, &f.name, &f.chunks))
            .collect())
    }

    /// Streams one file of a dump into `out`, checking every chunk's hash;
    /// returns the bytes written.
    pub fn read_file(
        &self,
        dump_uuid: Uuid,
        file_name: &str,
        out: &mut dyn Write,
    ) -> Result<u64, StoreError> {
        let mut reader = self.file_reader(dump_uuid, file_name)?;
        copy_out(
            &mut reader,
            out,
            &format!("{file_name} of dump {dump_uuid}"),
        )
    }

    /// Writes every file of a dump into `dir` (created if missing; existing
    /// files are not overwritten), fsyncing each file and the directory.
    pub fn restore_dir(&self, dump_uuid: Uuid, dir: &Path) -> Result<(), StoreError> {
        let m = self.manifest(dump_uuid)?;
        fs::create_dir_all(dir).map_err(StoreError::io(format!("create {}", dir.display())))?;
        for f in &m.files {
            crate::ingest::validate_file_name(&f.name)?;
            let path = dir.join(&f.name);
            let file = File::options()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(StoreError::io(format!("create {}", path.display())))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            self.read_file(dump_uuid, &f.name, &mut w)?;
            let file = w.into_inner().map_err(|e| StoreError::Io {
                context: format!("flush {}", path.display()),
                error: e.into_error(),
            })?;
            file.sync_all()
                .map_err(StoreError::io(format!("fsync {}", path.display())))?;
        }
        durable::fsync_dir(dir)
    }

    /// Forgets a dump: removes its manifest (and summary). Its chunks stay
    /// until `gc`.
    pub fn delete_dump(&self, dump_uuid: Uuid) -> Result<(), StoreError> {
        self.writable()?;
        let Some(path) = manifest::existing_manifest(&self.inner.manifests_dir, dump_uuid) else {
            return Err(StoreError::ManifestNotFound(dump_uuid));
        };
        self.inner.delete_remote_manifest(&path)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                crash::at(CrashPoint::DeleteUnlinked);
                durable::fsync_dir(&self.inner.manifests_dir)?;
                crash::at(CrashPoint::DeleteDirFsync);
                self.inner.index.delete_dump(&dump_uuid)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::ManifestNotFound(dump_uuid))
            }
            Err(e) => Err(StoreError::io(format!("remove {}", path.display()))(e)),
        }
    }

    /// Counts packs, chunks and dumps. Cost: a listing of `packs/` and one
    /// scan of the chunk and feature index (no manifest is read).
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        for (_, len) in self.inner.list_packs()? {
            s.packs += 1;
            s.pack_bytes += len;
        }
        self.inner.index.for_each(|_, e| {
            s.chunks += 1;
            s.unique_raw_bytes += u64::from(e.raw_len);
            s.stored_bytes += u64::from(e.stored_len);
            if e.kind == ChunkKind::Delta {
                s.delta_chunks += 1;
                s.delta_raw_bytes += u64::from(e.raw_len);
                s.delta_stored_bytes += u64::from(e.stored_len);
            }
            Ok(())
        })?;
        s.feature_entries = self.inner.index.feature_entries()?;
        for (_, d) in self.inner.index.dumps()? {
            s.manifests += 1;
            s.logical_bytes += d.logical_bytes;
        }
        s.dedup_ratio = if s.pack_bytes == 0 {
            0.0
        } else {
            s.logical_bytes as f64 / s.pack_bytes as f64
        };
        Ok(s)
    }

    /// Which backend holds the packs, and the cache's use (S3).
    pub fn backend(&self) -> Result<BackendInfo, StoreError> {
        Ok(match &self.inner.remote {
            None => BackendInfo {
                kind: "local".into(),
                location: self.inner.root.display().to_string(),
                ..BackendInfo::default()
            },
            Some(r) => BackendInfo {
                kind: "s3".into(),
                location: r.config().location(),
                cache_bytes: self.inner.cache_bytes()?,
                cache_limit: r.config().cache_size,
            },
        })
    }

    /// The id of the key an encrypted store is sealed with; `None` for a
    /// plain store.
    pub fn key_id(&self) -> Option<&str> {
        self.inner.crypto.as_ref().map(|c| c.key_id())
    }

    /// The chunk index (for tests and tools that need to look at it).
    #[doc(hidden)]
    pub fn index(&self) -> &Index {
        &self.inner.index
    }
}

/// Removes leftovers of interrupted writes; true if there were any.
pub(crate) fn remove_leftovers(
    dir: &Path,
    is_leftover: impl Fn(&str) -> bool,
) -> Result<bool, StoreError> {
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(StoreError::io(format!("list {}", dir.display())))? {
        let entry = entry.map_err(StoreError::io(format!("list {}", dir.display())))?;
        if entry.file_name().to_str().is_some_and(&is_leftover) {
            let path = entry.path();
            fs::remove_file(&path).map_err(StoreError::io(format!(
                "remove leftover {}",
                path.display()
            )))?;
            tracing::info!(path = %path.display(), "removed leftover of an interrupted write");
            crash::at(CrashPoint::OpenLeftoversRemoved);
            removed = true;
        }
    }
    if removed {
        durable::fsync_dir(dir)?;
    }
    Ok(removed)
}

/// Copies a file reader into `out`, keeping the store's error (a corrupt or
/// missing chunk) apart from a failure to write.
pub(crate) fn copy_out(
    reader: &mut FileReader,
    out: &mut dyn Write,
    what: &str,
) -> Result<u64, StoreError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(written),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(crate::reader::store_error(e)),
        };
        out.write_all(&buf[..n])
            .map_err(StoreError::io(format!("write {what}")))?;
        written += n as u64;
    }
}
