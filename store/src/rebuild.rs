//! `rebuild_index`: recreates a lost or damaged RocksDB index from what it
//! indexes — chunk entries from the pack records (each names its chunk id,
//! kind and base), feature entries by decoding and sketching every chunk,
//! dump summaries from the manifests — in a new directory swapped in
//! atomically. Refuses while a process holds the store. docs/store.md.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use crate::backend::{Remote, bucket};
use crate::chunk::ChunkId;
use crate::crypto::{Crypto, StoreKey};
use crate::error::StoreError;
use crate::index::{Index, IndexEntry, SealedEntries, StoreParams};
use crate::options::StoreOptions;
use crate::pack::{self, ChunkKind, PackId};
use crate::reader::ChunkReader;
use crate::resemblance;
use crate::shared::{Inner, summary_of};

/// Directory the new index is built in, beside `index/`.
pub const REBUILD_DIR: &str = "index.rebuild";
/// Entries written per synced batch (bounds the memory of one batch).
const BATCH_ENTRIES: usize = 10_000;

/// What `rebuild_index` found and wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebuildReport {
    pub packs: u64,
    /// Chunk entries written (one per distinct chunk id).
    pub chunks: u64,
    pub delta_chunks: u64,
    /// Records of a chunk already found in an older pack (left to gc).
    pub duplicate_records: u64,
    pub feature_entries: u64,
    /// Dump summaries written (one per readable manifest).
    pub dumps: u64,
    /// Packs that did not read end to end, with the reason; their intact
    /// records before the damage are indexed (verify names what is lost).
    pub damaged_packs: Vec<(PackId, String)>,
    /// Chunks that could not be decoded (a missing or damaged base); they
    /// are indexed but get no feature entries; verify names their dumps.
    pub undecodable_chunks: u64,
    /// True when the chunk and feature parameters came from the old index;
    /// false when they were unreadable and the defaults were recorded.
    pub params_kept: bool,
}

/// True when a process other than this one holds a POSIX lock on `path`
/// (RocksDB's `LOCK` file of an open database). Absent file: false.
pub fn locked_by_another_process(path: &Path) -> Result<bool, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(format!("open {}", path.display()))(e)),
    };
    // Asks whether a write lock on the whole file would conflict.
    let mut query = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETLK(&mut query))
        .map_err(|e| StoreError::io(format!("query the lock of {}", path.display()))(e.into()))?;
    Ok(query.l_type != nix::libc::F_UNLCK as i16)
}

/// Rebuilds `<root>/index` from the packs and manifests; see the module
/// doc. Refuses when the index is held open (a worker running). Crash
/// order: 1. `index.rebuild/` is built (a leftover one from a crash is
/// removed first) and closed; 2. it is exchanged with `index/` in one
/// `renameat2(RENAME_EXCHANGE)` (or renamed when there is no `index/`); 3.
/// the old index (now at `index.rebuild/`) is removed. A crash before 2
/// leaves the old index in place; after 2 the new one.
pub fn rebuild_index(root: &Path) -> Result<RebuildReport, StoreError> {
    rebuild_index_encrypted(root, None)
}

/// `rebuild_index` of a store encrypted with `key` (the new index records
/// it). Without a key, a store whose old index or manifests say it is
/// encrypted fails with an error naming the key id.
pub fn rebuild_index_encrypted(
    root: &Path,
    key: Option<&StoreKey>,
) -> Result<RebuildReport, StoreError> {
    crate::backend::refuse_if_in_bucket(root, "rebuild its index")?;
    rebuild(root, None, None, key)
}

/// `rebuild_index` of an S3 store from its bucket alone (a lost data
/// directory): the bucket's manifests are copied back and every pack in the
/// bucket is fetched and indexed, so the new index names every pack the
/// bucket holds (a gc then deletes none that a manifest needs). `fallback`:
/// the parameters recorded when the old index has none.
pub(crate) fn rebuild_from_bucket(
    root: &Path,
    remote: Arc<Remote>,
    fallback: StoreParams,
    key: Option<&StoreKey>,
) -> Result<RebuildReport, StoreError> {
    rebuild(root, Some(remote), Some(fallback), key)
}

fn rebuild(
    root: &Path,
    remote: Option<Arc<Remote>>,
    fallback: Option<StoreParams>,
    key: Option<&StoreKey>,
) -> Result<RebuildReport, StoreError> {
    let index_dir = root.join("index");
    let lock = index_dir.join("LOCK");
    if locked_by_another_process(&lock)? || held_in_this_process(&index_dir) {
        return Err(in_use(root));
    }
    let mut report = RebuildReport::default();
    let params = match old_params(&index_dir) {
        Ok(p) => {
            report.params_kept = true;
            p
        }
        Err(e) => {
            tracing::warn!(
                "the old index's parameters are unreadable ({e}); recording the defaults"
            );
            fallback.unwrap_or_else(|| {
                let d = StoreOptions::default();
                StoreParams {
                    chunking: d.chunking,
                    features: d.features,
                }
            })
        }
    };
    let crypto = key.map(|k| Arc::new(Crypto::new(k)));
    if crypto.is_none()
        && let Some(key_id) = encrypted_with(root)?
    {
        return Err(StoreError::Encryption {
            store: root.to_path_buf(),
            detail: format!("encrypted with key {key_id}: rebuilding its index needs that key"),
        });
    }
    let new_dir = root.join(REBUILD_DIR);
    remove_dir(&new_dir)?;
    {
        let (index, _) = Index::open(&new_dir, params)?;
        if let Some(c) = &crypto {
            index.set_encryption(&c.meta())?;
        }
        let opts = StoreOptions {
            chunking: params.chunking,
            features: params.features,
            ..StoreOptions::default()
        };
        match remote {
            None => {
                index_packs(root, &index, &mut report)?;
                let inner =
                    Arc::new(Inner::new(root, opts, index, false, false, None).with_crypto(crypto));
                index_features(&inner, &mut report)?;
                index_dumps(&inner, &mut report)?;
            }
            Some(remote) => {
                let manifests = root.join("manifests");
                for dir in [root.join("packs"), manifests.clone()] {
                    fs::create_dir_all(&dir)
                        .map_err(StoreError::io(format!("create {}", dir.display())))?;
                }
                bucket::sync_manifests(&remote, &manifests)?;
                let inner = Arc::new(
                    Inner::new(root, opts, index, false, false, Some(remote)).with_crypto(crypto),
                );
                bucket::index_bucket_packs(&inner, &mut HashMap::new(), &mut report)?;
                index_features(&inner, &mut report)?;
                index_dumps(&inner, &mut report)?;
            }
        }
    }
    swap_in(root, &index_dir, &new_dir)?;
    Ok(report)
}

fn in_use(root: &Path) -> StoreError {
    StoreError::Invalid {
        what: "store",
        detail: format!(
            "the store at {} is in use (its index is locked by a running worker): stop the worker first",
            root.display()
        ),
    }
}

/// True when this process has the index open (POSIX locks do not conflict
/// within a process; RocksDB keeps its own table of them).
fn held_in_this_process(index_dir: &Path) -> bool {
    if !index_dir.join("CURRENT").is_file() {
        return false;
    }
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(false);
    match rocksdb::DB::open(&opts, index_dir) {
        Ok(_) => false,
        Err(e) => e.to_string().to_ascii_lowercase().contains("lock"),
    }
}

/// The parameters recorded in the old index, if it opens and has them.
/// The key id of an encrypted store, from its old index or else from its
/// first encrypted manifest; `None` for a plain store.
fn encrypted_with(root: &Path) -> Result<Option<String>, StoreError> {
    if let Ok((old, _)) = Index::open_read_only(&root.join("index"))
        && let Ok(Some(meta)) = old.encryption()
    {
        return Ok(Some(meta.key_id));
    }
    crate::crypto::manifests_key_id(&root.join("manifests"))
}

fn old_params(index_dir: &Path) -> Result<StoreParams, StoreError> {
    Index::open_read_only(index_dir).map(|(_, p)| p)
}

/// Pass 1: a chunk entry for every record of every sealed pack, oldest
/// pack first (UUIDv7 order); the first record of a chunk wins, as when
/// the packs were written.
fn index_packs(root: &Path, index: &Index, report: &mut RebuildReport) -> Result<(), StoreError> {
    let packs_dir = root.join("packs");
    let mut packs = Vec::new();
    for entry in
        fs::read_dir(&packs_dir).map_err(StoreError::io(format!("list {}", packs_dir.display())))?
    {
        let entry = entry.map_err(StoreError::io(format!("list {}", packs_dir.display())))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(PackId::from_sealed_name)
        {
            packs.push(id);
        }
    }
    packs.sort();
    let mut seen: HashMap<ChunkId, ()> = HashMap::new();
    let mut batch: Vec<(ChunkId, IndexEntry)> = Vec::with_capacity(BATCH_ENTRIES);
    for pack_id in packs {
        report.packs += 1;
        let path = packs_dir.join(pack_id.sealed_name());
        let scanned = pack::scan_pack(&path, |offset, header, _stored| {
            if seen.insert(header.chunk, ()).is_some() {
                report.duplicate_records += 1;
                return Ok(());
            }
            batch.push(first_record(report, pack_id, offset, header));
            if batch.len() >= BATCH_ENTRIES {
                index.put_all(&batch)?;
                batch.clear();
            }
            Ok(())
        });
        if let Err(e) = scanned {
            tracing::warn!(pack_id = %pack_id, "pack damaged; its intact records are indexed: {e}");
            report.damaged_packs.push((pack_id, e.to_string()));
        }
    }
    index.put_all(&batch)
}

/// The index entry of the first record of a chunk, counted in `report`.
pub(crate) fn first_record(
    report: &mut RebuildReport,
    pack: PackId,
    offset: u64,
    header: &pack::RecordHeader,
) -> (ChunkId, IndexEntry) {
    if header.kind == ChunkKind::Delta {
        report.delta_chunks += 1;
    }
    report.chunks += 1;
    (
        header.chunk,
        IndexEntry {
            pack,
            offset,
            stored_len: header.stored_len,
            raw_len: header.raw_len,
            kind: header.kind,
            base: header.base,
        },
    )
}

/// Pass 2: every indexed chunk is decoded (hash-checked, through its delta
/// chain) and sketched; its super-features point at it.
fn index_features(inner: &Arc<Inner>, report: &mut RebuildReport) -> Result<(), StoreError> {
    let mut ids = Vec::new();
    inner.index.for_each(|id, _| {
        ids.push(id);
        Ok(())
    })?;
    let mut reader = ChunkReader::new(Arc::clone(inner));
    let mut features: Vec<(u8, u64, ChunkId)> = Vec::with_capacity(BATCH_ENTRIES);
    for id in ids {
        let raw = match reader.read(id) {
            Ok(Some(raw)) => raw,
            Ok(None) | Err(_) => {
                report.undecodable_chunks += 1;
                continue;
            }
        };
        if let Some(sketch) = resemblance::sketch(&raw, &inner.opts.features) {
            for (slot, value) in sketch.slots() {
                features.push((slot, value, id));
            }
        }
        if features.len() >= BATCH_ENTRIES {
            report.feature_entries += write_features(inner, &features)?;
            features.clear();
        }
    }
    report.feature_entries += write_features(inner, &features)?;
    Ok(())
}

fn write_features(inner: &Inner, features: &[(u8, u64, ChunkId)]) -> Result<u64, StoreError> {
    inner.index.insert_sealed(SealedEntries {
        compress_later: None,
        later_deltas: &[],
        chunks: &[],
        features,
    })?;
    Ok(features.len() as u64)
}

/// Pass 3: the dump summaries, from the manifests.
fn index_dumps(inner: &Inner, report: &mut RebuildReport) -> Result<(), StoreError> {
    for (dump, path) in inner.list_manifest_paths()? {
        match inner.read_manifest(&path) {
            Ok(m) => {
                inner.index.put_dump(&dump, summary_of(&m))?;
                report.dumps += 1;
            }
            Err(e) => tracing::warn!(dump_id = %dump, "unreadable manifest (verify names it): {e}"),
        }
    }
    Ok(())
}

/// Puts `new_dir` in the place of `index_dir` atomically, then removes the
/// old index.
fn swap_in(root: &Path, index_dir: &Path, new_dir: &Path) -> Result<(), StoreError> {
    sync_dir(new_dir)?;
    if index_dir.exists() {
        nix::fcntl::renameat2(
            None,
            new_dir,
            None,
            index_dir,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| {
            StoreError::io(format!(
                "exchange {} and {}",
                new_dir.display(),
                index_dir.display()
            ))(e.into())
        })?;
        sync_dir(root)?;
        remove_dir(new_dir)?;
    } else {
        fs::rename(new_dir, index_dir).map_err(StoreError::io(format!(
            "rename {} to {}",
            new_dir.display(),
            index_dir.display()
        )))?;
    }
    sync_dir(root)
}

fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(format!("remove {}", dir.display()))(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(format!("fsync {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::store::Store;
    use crate::verify::tests::{bytes, opts, store_dump};

    fn read_all(store: &Store, dumps: &[Uuid]) -> Vec<Vec<u8>> {
        dumps
            .iter()
            .map(|d| {
                let mut out = Vec::new();
                store.read_file(*d, "data", &mut out).unwrap();
                out
            })
            .collect()
    }

    /// Three dumps sharing data (so dedup and deltas), the index deleted or
    /// replaced by garbage, rebuilt: verify is clean, every dump reads back
    /// byte-identical, the figures match, and gc keeps every live chunk.
    #[test]
    fn a_lost_or_damaged_index_is_rebuilt_from_packs_and_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = bytes(1, 700_000);
        let mut b = a[..500_000].to_vec();
        b.extend(bytes(2, 200_000));
        // Small edits spread over a copy: similar chunks, stored as deltas.
        let mut c = a.clone();
        for i in (0..c.len()).step_by(20_000) {
            c[i] ^= 0xff;
        }
        let (dumps, before, stats) = {
            let store = Store::open(root, opts()).unwrap();
            let dumps = vec![
                store_dump(&store, &a),
                store_dump(&store, &b),
                store_dump(&store, &c),
            ];
            (
                dumps.clone(),
                read_all(&store, &dumps),
                store.stats().unwrap(),
            )
        };
        assert!(
            stats.delta_chunks > 0,
            "the test needs delta chunks: {stats:?}"
        );

        for damage in ["deleted", "garbage"] {
            let index = root.join("index");
            fs::remove_dir_all(&index).unwrap();
            if damage == "garbage" {
                fs::create_dir(&index).unwrap();
                fs::write(index.join("CURRENT"), "MANIFEST-999999\n").unwrap();
            } else {
                let err = Store::open(root, opts()).err().unwrap().to_string();
                assert!(err.contains("store rebuild-index"), "{err}");
            }
            let report = rebuild_index(root).unwrap();
            assert_eq!(report.chunks, stats.chunks, "{damage}: {report:?}");
            assert_eq!(report.delta_chunks, stats.delta_chunks);
            assert_eq!(report.dumps, 3);
            assert_eq!(report.undecodable_chunks, 0);
            assert!(report.damaged_packs.is_empty());
            assert!(!report.params_kept, "{damage}: the old meta was gone");
            assert!(!root.join(REBUILD_DIR).exists());

            let store = Store::open(root, opts()).unwrap();
            assert!(store.verify().unwrap().is_clean(), "{damage}");
            assert_eq!(read_all(&store, &dumps), before, "{damage}");
            let now = store.stats().unwrap();
            assert_eq!(
                (
                    now.chunks,
                    now.unique_raw_bytes,
                    now.stored_bytes,
                    now.manifests
                ),
                (
                    stats.chunks,
                    stats.unique_raw_bytes,
                    stats.stored_bytes,
                    stats.manifests
                ),
            );
            assert_eq!(now.logical_bytes, stats.logical_bytes);
            assert_eq!(now.feature_entries, stats.feature_entries, "{damage}");
            store.gc(0.5).unwrap();
            assert!(store.verify().unwrap().is_clean(), "{damage}: after gc");
            assert_eq!(read_all(&store, &dumps), before);
        }
    }

    /// A store in use is refused; a good index is replaced (parameters kept).
    #[test]
    fn a_store_in_use_is_refused_and_a_good_index_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        let d = store_dump(&store, &bytes(3, 300_000));
        let err = rebuild_index(dir.path()).unwrap_err().to_string();
        assert!(err.contains("stop the worker"), "{err}");
        drop(store);
        // A crash left a half-built index behind: it is started afresh.
        fs::create_dir(dir.path().join(REBUILD_DIR)).unwrap();
        fs::write(dir.path().join(REBUILD_DIR).join("junk"), "x").unwrap();
        let report = rebuild_index(dir.path()).unwrap();
        assert!(report.params_kept, "{report:?}");
        let store = Store::open(dir.path(), opts()).unwrap();
        assert!(store.verify().unwrap().is_clean());
        assert_eq!(store.manifest(d).unwrap().dump_uuid, d);
        assert!(!locked_by_another_process(&dir.path().join("nothing")).unwrap());
    }
}
