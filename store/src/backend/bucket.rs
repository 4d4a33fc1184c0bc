//! A store read from its bucket alone: the bucket's manifests copied into the
//! local `manifests/`, and the bucket's packs indexed record by record (each
//! downloaded through the bounded cache and scanned). Used by the rebuild of
//! an S3 store's index and by read-only opens of another worker's prefix.
//! Reads only: nothing here writes or deletes an object.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use crate::chunk::ChunkId;
use crate::error::StoreError;
use crate::index::{Index, IndexEntry};
use crate::manifest;
use crate::pack::{self, PackId};
use crate::rebuild::RebuildReport;
use crate::shared::Inner;

use super::Remote;

/// Entries written per batch while indexing (bounds the batch's memory).
const BATCH_ENTRIES: usize = 10_000;

/// True when the bucket prefix holds a pack or a manifest.
pub(crate) fn holds_data(remote: &Remote) -> Result<bool, StoreError> {
    Ok(remote
        .list("manifests")?
        .iter()
        .any(|(n, _)| manifest::dump_of_file_name(n).is_some())
        || remote
            .list("packs")?
            .iter()
            .any(|(n, _)| PackId::from_sealed_name(n).is_some()))
}

/// Makes `dir` hold exactly the bucket's manifests: downloads the missing
/// ones (tmp + fsync + rename) and removes local ones the bucket no longer
/// has (a dump deleted in the bucket; deletion removes the object first).
/// Returns how many were downloaded.
pub(crate) fn sync_manifests(remote: &Remote, dir: &Path) -> Result<u64, StoreError> {
    let listed: HashSet<String> = remote
        .list("manifests")?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| manifest::dump_of_file_name(n).is_some())
        .collect();
    let mut downloaded = 0;
    for name in &listed {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        // Gone meanwhile (deleted in the bucket): nothing to copy.
        if let Some(bytes) = remote.get_object("manifests", name)? {
            crate::durable::write_atomic(&path, &bytes)?;
            downloaded += 1;
        }
    }
    for entry in fs::read_dir(dir).map_err(StoreError::io(format!("list {}", dir.display())))? {
        let entry = entry.map_err(StoreError::io(format!("list {}", dir.display())))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if manifest::dump_of_file_name(&name).is_some() && !listed.contains(&name) {
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("remove {}", path.display()))(e)),
            }
        }
    }
    crate::durable::fsync_dir(dir)?;
    Ok(downloaded)
}

/// Brings `inner.index` in line with the bucket's packs: entries of packs
/// that are no longer in the bucket (deleted or repacked by the owner's gc)
/// are dropped, then every pack not in `known` is fetched and its records
/// indexed, oldest pack first; a chunk already indexed keeps its entry (the
/// first record wins, as when the packs were written). `known` is updated:
/// pack → whether some of its records were skipped as already indexed.
///
/// Why those are rescanned when a pack goes: the owner's repack 1. uploads
/// a new pack holding live records of an old one, 2. deletes the old one.
/// A refresh between 1 and 2 skips the new pack's records (the old pack's
/// entries exist); the refresh after 2 drops the old entries and must then
/// index the new pack's records, or those chunks would read as missing.
pub(crate) fn index_bucket_packs(
    inner: &Inner,
    known: &mut HashMap<PackId, bool>,
    report: &mut RebuildReport,
) -> Result<(), StoreError> {
    let listed: Vec<PackId> = inner.list_packs()?.into_iter().map(|(id, _)| id).collect();
    let present: HashSet<PackId> = listed.iter().copied().collect();
    let gone: HashSet<PackId> = known
        .keys()
        .filter(|p| !present.contains(p))
        .copied()
        .collect();
    if !gone.is_empty() {
        let mut stale: Vec<ChunkId> = Vec::new();
        inner.index.for_each(|id, e| {
            if gone.contains(&e.pack) {
                stale.push(id);
            }
            Ok(())
        })?;
        for batch in stale.chunks(BATCH_ENTRIES) {
            inner.index.delete_all(batch)?;
        }
        // Gone packs are forgotten; packs that skipped records are scanned
        // again (their records fill in what the gone packs held).
        known.retain(|p, skipped| present.contains(p) && !*skipped);
    }
    let mut batch: Vec<(ChunkId, IndexEntry)> = Vec::with_capacity(BATCH_ENTRIES);
    for pack_id in listed {
        if known.contains_key(&pack_id) {
            continue;
        }
        let duplicates_before = report.duplicate_records;
        report.packs += 1;
        let file = inner.open_pack(pack_id).map_err(StoreError::io(format!(
            "fetch pack {pack_id} from {}",
            inner
                .remote
                .as_ref()
                .map_or_else(String::new, |r| r.config().location())
        )))?;
        let path = inner.pack_path(pack_id);
        let mut seen: HashSet<ChunkId> = HashSet::new();
        let scanned = pack::scan_pack_file(&file, &path, |offset, header, _stored| {
            // `seen`: a duplicate within this pack; the index: in an older one.
            if !seen.insert(header.chunk) || inner.index.get(&header.chunk)?.is_some() {
                report.duplicate_records += 1;
                return Ok(());
            }
            batch.push(crate::rebuild::first_record(
                report, pack_id, offset, header,
            ));
            Ok(())
        });
        if let Err(e) = scanned {
            tracing::warn!(pack_id = %pack_id, "pack damaged; its intact records are indexed: {e}");
            report.damaged_packs.push((pack_id, e.to_string()));
        }
        // One pack's entries at a time: the next pack's duplicate check
        // then sees them in the index.
        inner.index.put_all(&batch)?;
        batch.clear();
        known.insert(pack_id, report.duplicate_records > duplicates_before);
    }
    Ok(())
}

/// The packs the index names (what a read-only open indexed before); not
/// knowing whether they skipped records, each counts as if it did.
pub(crate) fn indexed_packs(index: &Index) -> Result<HashMap<PackId, bool>, StoreError> {
    let mut out = HashMap::new();
    index.for_each(|_, e| {
        out.insert(e.pack, true);
        Ok(())
    })?;
    Ok(out)
}

impl crate::store::Store {
    /// Opens another worker's store in its bucket for reading only (a
    /// restore of that worker's dump): `cache_root` is this process's own
    /// directory for it — `manifests/` (copies of the bucket's), `packs/`
    /// (a cache bounded by `cfg.cache_size`) and `index/` (built here from
    /// the bucket's packs, never the owner's). No object is ever written or
    /// deleted; dumps, gc and deletions fail. The open indexes every pack
    /// not indexed before, so the first open downloads the whole prefix.
    /// `key`: the owner's store key when its store is encrypted (records and
    /// manifests are opened with it; a wrong or missing key fails the first
    /// read of a manifest in one line naming the key id it needs).
    pub fn open_bucket_read_only(
        cache_root: &Path,
        cfg: super::S3Config,
        key: Option<&crate::crypto::StoreKey>,
    ) -> Result<crate::store::Store, StoreError> {
        let remote = std::sync::Arc::new(Remote::new_read_only(cfg)?);
        let packs_dir = cache_root.join("packs");
        let manifests_dir = cache_root.join("manifests");
        for dir in [cache_root, packs_dir.as_path(), manifests_dir.as_path()] {
            fs::create_dir_all(dir).map_err(StoreError::io(format!("create {}", dir.display())))?;
        }
        crate::store::remove_leftovers(&packs_dir, PackId::is_open_name)?;
        crate::store::remove_leftovers(&manifests_dir, |n| {
            n.ends_with(crate::durable::TMP_SUFFIX)
        })?;
        let d = crate::options::StoreOptions::default();
        let (index, kept) = Index::open(
            &cache_root.join("index"),
            crate::index::StoreParams {
                chunking: d.chunking,
                features: d.features,
            },
        )?;
        let opts = crate::options::StoreOptions {
            chunking: kept.chunking,
            features: kept.features,
            ..d
        };
        let known = indexed_packs(&index)?;
        let crypto = key.map(|k| std::sync::Arc::new(crate::crypto::Crypto::new(k)));
        let inner =
            Inner::new(cache_root, opts, index, true, false, Some(remote)).with_crypto(crypto);
        *inner.bucket_packs.lock().unwrap_or_else(|p| p.into_inner()) = known;
        let store = crate::store::Store {
            inner: std::sync::Arc::new(inner),
        };
        store.refresh_from_bucket()?;
        Ok(store)
    }

    /// A read-only bucket open catches up with the bucket: new manifests
    /// are copied, deleted ones dropped, new packs indexed, entries of
    /// deleted packs dropped. A no-op on other stores. One refresh at a
    /// time; reads may run meanwhile.
    pub fn refresh_from_bucket(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let Some(remote) = inner.remote.as_ref().filter(|_| inner.read_only) else {
            return Ok(());
        };
        let mut known = inner.bucket_packs.lock().unwrap_or_else(|p| p.into_inner());
        sync_manifests(remote, &inner.manifests_dir)?;
        index_bucket_packs(inner, &mut known, &mut RebuildReport::default())
    }
}

impl crate::store::Store {
    /// The bucket of an S3 store (`None`: local backend).
    pub fn bucket_config(&self) -> Option<&super::S3Config> {
        self.inner.remote.as_ref().map(|r| r.config())
    }
}
