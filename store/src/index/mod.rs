//! The RocksDB chunk index: chunk id → where its record lives, per-dump
//! summaries, the feature index of delta bases, and the `meta/` keys.
//! Encodings in docs/store.md (and `entry.rs`). Writes are synced batches;
//! callers decide when (after packs are sealed).

mod entry;
mod feature;
mod meta;
mod size;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rocksdb::{
    BlockBasedOptions, Cache, DB, DBCompressionType, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

use crate::chunk::{CHUNK_ID_LEN, ChunkId};
use crate::error::StoreError;
use crate::pack::PackId;
use entry::{
    CHUNK_KEY_LEN, CHUNK_PREFIX, DUMP_PREFIX, ENTRY_LEN, FULL_ENTRY_LEN, LATER_DELTA_PREFIX,
    LATER_PREFIX, UUID_KEY_LEN, chunk_key, dump_key, feature_key, feature_value, later_delta_key,
    later_key,
};
pub use entry::{DumpSummary, IndexEntry, LaterDelta};
pub use meta::StoreParams;
pub use size::KindSize;

/// Layout of keys and values in docs/store.md. Bump on any incompatible
/// change. Version 2 added delta entries (kind 1, whose base must outlive
/// them), the `f` feature entries and `meta/feature_params`; a version 1
/// index is upgraded when opened for writing (`meta.rs`). Version 3 writes
/// FULL chunk entries without the base (33 bytes) and feature values as the
/// chunk id's first 8 bytes; every version 2 entry still reads, so a
/// version 2 index is upgraded by recording the new version only.
pub const INDEX_FORMAT_VERSION: u32 = 3;
/// The oldest index version this build opens.
pub const INDEX_FORMAT_VERSION_MIN: u32 = 1;

/// RocksDB block cache, shared by data, index and filter blocks; why: with
/// index and filter blocks in the cache the index's memory stays bounded
/// whatever the store's size (docs/store.md, "Memory bounds").
const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// Bloom filter bits per key; why: most lookups of a new chunk or feature
/// miss, and a filter answers a miss without reading a data block (~1%
/// false positives at 10 bits).
const BLOOM_BITS_PER_KEY: f64 = 10.0;

/// Compression of the index's blocks (RocksDB's default zstd level, 4 KiB
/// blocks); why: the chunk entries of one pack repeat its 16-byte id and
/// their offsets share high bytes, so a churn day's index blocks shrink by
/// about a quarter (docs/store.md, "Index format"). Keys are hashes and do
/// not compress. Blocks written uncompressed (before index compression)
/// still read; compaction rewrites them compressed.
const INDEX_COMPRESSION: DBCompressionType = DBCompressionType::Zstd;

/// RocksDB's own text logs (`LOG`, `LOG.old.*`) kept per database, and the
/// size at which `LOG` rolls over. RocksDB's defaults keep 1 000 of them, of
/// any size, and start a new one at every open: a worker restarted often
/// would fill its disk with them.
pub const INFO_LOGS_KEPT: usize = 4;
pub const INFO_LOG_MAX_BYTES: usize = 8 << 20;

/// Bounds RocksDB's text logs (see [`INFO_LOGS_KEPT`]); for every RocksDB
/// database the worker opens.
pub fn bound_info_logs(opts: &mut Options) {
    opts.set_keep_log_file_num(INFO_LOGS_KEPT);
    opts.set_max_log_file_size(INFO_LOG_MAX_BYTES);
}

fn db_options() -> Options {
    let mut opts = Options::default();
    bound_info_logs(&mut opts);
    // Bounded: the index holds small entries; keep file handles and memtables
    // modest on a worker that also runs pg_dump.
    opts.set_max_open_files(256);
    opts.set_write_buffer_size(16 << 20);
    opts.set_max_write_buffer_number(2);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&Cache::new_lru_cache(BLOCK_CACHE_BYTES));
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
    opts.set_block_based_table_factory(&table);
    opts.set_compression_type(INDEX_COMPRESSION);
    opts
}

/// A new sealed pack's chunk entries and the feature entries of its chunks.
pub struct SealedEntries<'a> {
    pub chunks: &'a [(ChunkId, IndexEntry)],
    /// `(slot, super-feature, chunk)`
    pub features: &'a [(u8, u64, ChunkId)],
    /// The pack holds chunks left uncompressed by this dump: marked for
    /// `Store::compress_later` in the same batch.
    pub compress_later: Option<(crate::pack::PackId, uuid::Uuid)>,
    /// Chunks of the pack left uncompressed with the delta bases chosen
    /// for them (`LaterDelta`), written in the same batch.
    pub later_deltas: &'a [(ChunkId, LaterDelta)],
}

/// The open index. `Send + Sync`.
pub struct Index {
    db: DB,
    path: PathBuf,
    /// Makes `insert_sealed`'s "is the chunk indexed already?" check and its
    /// write one step for concurrent ingests.
    insert_lock: Mutex<()>,
}

impl Index {
    /// Opens (creating if needed) the index at `path`. A new index records
    /// `INDEX_FORMAT_VERSION` and `params`; an existing one must carry a
    /// version this build reads (version 1 is upgraded) and returns the
    /// parameters it was created with.
    pub fn open(path: &Path, params: StoreParams) -> Result<(Index, StoreParams), StoreError> {
        let mut opts = db_options();
        opts.create_if_missing(true);
        let db =
            DB::open(&opts, path).map_err(StoreError::index(format!("open {}", path.display())))?;
        let index = Index::new(db, path);
        let params = index.check_meta(params, true)?;
        Ok((index, params))
    }

    /// Opens an existing index for reading only, beside a process that has
    /// it open for writing (RocksDB's read-only mode takes no lock; it sees
    /// the index as it was when opened).
    pub fn open_read_only(path: &Path) -> Result<(Index, StoreParams), StoreError> {
        if !path.join("CURRENT").is_file() {
            return Err(StoreError::Invalid {
                what: "store",
                detail: format!("{} holds no chunk index", path.display()),
            });
        }
        let db = DB::open_for_read_only(&db_options(), path, false).map_err(StoreError::index(
            format!("open {} read-only", path.display()),
        ))?;
        let index = Index::new(db, path);
        let params = index.check_meta(StoreParams::default(), false)?;
        Ok((index, params))
    }

    fn new(db: DB, path: &Path) -> Index {
        Index {
            db,
            path: path.to_path_buf(),
            insert_lock: Mutex::new(()),
        }
    }

    fn write(&self, batch: WriteBatch, what: &str) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db
            .write_opt(batch, &wo)
            .map_err(StoreError::index(format!(
                "{what} in {}",
                self.path.display()
            )))
    }

    /// Looks a chunk up.
    pub fn get(&self, id: &ChunkId) -> Result<Option<IndexEntry>, StoreError> {
        let v = self
            .db
            .get_pinned(chunk_key(id))
            .map_err(StoreError::index(format!("look up chunk {id}")))?;
        match v {
            None => Ok(None),
            Some(v) => IndexEntry::decode(&v)
                .map(Some)
                .ok_or_else(|| StoreError::Invalid {
                    what: "index entry",
                    detail: format!(
                        "chunk {id}: {} bytes, expected {FULL_ENTRY_LEN} or {ENTRY_LEN}",
                        v.len()
                    ),
                }),
        }
    }

    /// Inserts or replaces entries in one synced batch.
    pub fn put_all(&self, entries: &[(ChunkId, IndexEntry)]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (id, e) in entries {
            batch.put(chunk_key(id), e.encode());
        }
        self.write(batch, "index chunks")
    }

    /// Indexes a sealed pack in one synced batch: chunk entries for ids not
    /// indexed yet (the first writer wins: a chunk that two ingests stored
    /// at once keeps the entry other deltas may already use as base; the
    /// other copy is garbage for gc's repack) and every feature entry (the
    /// newest chunk wins). Returns how many chunk entries were written.
    pub fn insert_sealed(&self, sealed: SealedEntries<'_>) -> Result<usize, StoreError> {
        let _one_at_a_time = self.insert_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        let mut written = 0;
        for (id, e) in sealed.chunks {
            if self.get(id)?.is_none() {
                batch.put(chunk_key(id), e.encode());
                written += 1;
            }
        }
        for (slot, value, id) in sealed.features {
            batch.put(feature_key(*slot, *value), feature_value(id));
        }
        if let Some((pack, dump)) = sealed.compress_later {
            batch.put(later_key(&pack), dump.as_bytes());
        }
        for (id, plan) in sealed.later_deltas {
            batch.put(later_delta_key(id), plan.encode());
        }
        if !batch.is_empty() {
            self.write(batch, "index a sealed pack")?;
        }
        Ok(written)
    }

    /// Deletes entries in one synced batch.
    pub fn delete_all(&self, ids: &[ChunkId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for id in ids {
            batch.delete(chunk_key(id));
        }
        self.write(batch, "delete chunks")
    }

    /// Records a stored dump's figures (synced).
    pub fn put_dump(&self, dump: &uuid::Uuid, s: DumpSummary) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(dump_key(dump), s.encode());
        self.write(batch, "record dump summary")
    }

    /// Forgets a dump's figures (synced); absent is fine.
    pub fn delete_dump(&self, dump: &uuid::Uuid) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete(dump_key(dump));
        self.write(batch, "delete dump summary")
    }

    /// Every dump summary, in uuid order.
    pub fn dumps(&self) -> Result<Vec<(uuid::Uuid, DumpSummary)>, StoreError> {
        self.scan_uuid_keys(
            DUMP_PREFIX,
            "dump summary",
            "scan dump summaries",
            DumpSummary::decode,
        )
    }

    /// The packs marked for `Store::compress_later`, with the dump that
    /// wrote each (a hint for the log), in pack id (so creation) order.
    pub(crate) fn later_packs(&self) -> Result<Vec<(PackId, uuid::Uuid)>, StoreError> {
        let marks =
            self.scan_uuid_keys(LATER_PREFIX, "pack mark", "scan packs to compress", |v| {
                uuid::Uuid::from_slice(v).ok()
            })?;
        Ok(marks.into_iter().map(|(p, d)| (PackId(p), d)).collect())
    }

    /// Every key of `prefix` followed by a 16-byte uuid, with its value
    /// decoded by `decode` (`None`: malformed, an error naming `what`).
    fn scan_uuid_keys<T>(
        &self,
        prefix: u8,
        what: &'static str,
        scan: &str,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<(uuid::Uuid, T)>, StoreError> {
        let mut out = Vec::new();
        self.scan_prefix(prefix, scan, |k, v| {
            let bad = || StoreError::Invalid {
                what,
                detail: format!("key of {} bytes, value of {} bytes", k.len(), v.len()),
            };
            if k.len() != UUID_KEY_LEN {
                return Err(bad());
            }
            let id = uuid::Uuid::from_slice(&k[1..]).map_err(|_| bad())?;
            out.push((id, decode(v).ok_or_else(bad)?));
            Ok(())
        })?;
        Ok(out)
    }

    /// Removes the marks of `packs` and the planned deltas of `chunks`, in
    /// one synced batch.
    pub(crate) fn forget_later(
        &self,
        packs: &[PackId],
        chunks: &[ChunkId],
    ) -> Result<(), StoreError> {
        if packs.is_empty() && chunks.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for p in packs {
            batch.delete(later_key(p));
        }
        for id in chunks {
            batch.delete(later_delta_key(id));
        }
        self.write(batch, "unmark compressed packs")
    }

    /// The chunks left uncompressed with a planned delta (`LaterDelta`).
    pub(crate) fn later_deltas(&self) -> Result<Vec<(ChunkId, LaterDelta)>, StoreError> {
        let mut out = Vec::new();
        self.scan_prefix(LATER_DELTA_PREFIX, "scan planned deltas", |k, v| {
            let bad = || StoreError::Invalid {
                what: "planned delta",
                detail: format!("key of {} bytes, value of {} bytes", k.len(), v.len()),
            };
            let id = <[u8; CHUNK_ID_LEN]>::try_from(&k[1..])
                .map(ChunkId)
                .map_err(|_| bad())?;
            out.push((id, LaterDelta::decode(v).ok_or_else(bad)?));
            Ok(())
        })?;
        Ok(out)
    }

    /// The number of delta records from `id` to its FULL root, and the root;
    /// `None` if a link is missing or the chain is longer than
    /// `MAX_DELTA_DEPTH`.
    pub(crate) fn chain_of(&self, id: ChunkId) -> Result<Option<(u8, ChunkId)>, StoreError> {
        let mut next = id;
        for depth in 0..=crate::delta::MAX_DELTA_DEPTH {
            let Some(entry) = self.get(&next)? else {
                return Ok(None);
            };
            match entry.delta_base() {
                None => return Ok(Some((depth, next))),
                Some(base) => next = base,
            }
        }
        Ok(None)
    }

    /// Calls `visit` for every chunk entry, in id order.
    pub fn for_each(
        &self,
        mut visit: impl FnMut(ChunkId, IndexEntry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.scan_prefix(CHUNK_PREFIX, "scan chunks", |k, v| {
            let id = <[u8; CHUNK_ID_LEN]>::try_from(&k[1..])
                .map(ChunkId)
                .map_err(|_| StoreError::Invalid {
                    what: "index key",
                    detail: format!("{} bytes, expected {CHUNK_KEY_LEN}", k.len()),
                })?;
            let e = IndexEntry::decode(v).ok_or_else(|| StoreError::Invalid {
                what: "index entry",
                detail: format!(
                    "chunk {id}: {} bytes, expected {FULL_ENTRY_LEN} or {ENTRY_LEN}",
                    v.len()
                ),
            })?;
            visit(id, e)
        })
    }

    /// True when the index holds a chunk entry (one seek).
    pub(crate) fn has_chunks(&self) -> Result<bool, StoreError> {
        Ok(self.chunk_with_prefix(&[])?.is_some())
    }

    /// The indexed chunk whose id starts with `prefix` (the first in id
    /// order if several do), by one seek: a feature entry's target.
    fn chunk_with_prefix(&self, prefix: &[u8]) -> Result<Option<ChunkId>, StoreError> {
        let mut start = Vec::with_capacity(1 + prefix.len());
        start.push(CHUNK_PREFIX);
        start.extend_from_slice(prefix);
        let mut iter = self
            .db
            .iterator(IteratorMode::From(&start, rocksdb::Direction::Forward));
        let Some(item) = iter.next() else {
            return Ok(None);
        };
        let (k, _) = item.map_err(StoreError::index("seek a chunk by prefix"))?;
        if !k.starts_with(&start) {
            return Ok(None);
        }
        Ok(<[u8; CHUNK_ID_LEN]>::try_from(&k[1..]).ok().map(ChunkId))
    }

    /// Calls `visit` with every key (prefix included) and value under the
    /// one-byte `prefix`, in key order. `what` names the scan in errors.
    fn scan_prefix(
        &self,
        prefix: u8,
        what: &str,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let start = [prefix];
        let iter = self
            .db
            .iterator(IteratorMode::From(&start, rocksdb::Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(StoreError::index(what))?;
            if k.first() != Some(&prefix) {
                break;
            }
            visit(&k, &v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{ChunkKind, PackId};

    fn sst_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .expect("read the index dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
            .map(|e| e.metadata().expect("stat a table file").len())
            .sum()
    }

    /// A pack's chunk entries, as `insert_sealed` writes them, take less
    /// room in the table files than their keys and values: the blocks are
    /// compressed (uncompressed, RocksDB's own framing makes them larger).
    #[test]
    fn table_files_are_compressed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (index, _) = Index::open(dir.path(), StoreParams::default()).expect("open");
        let pack = PackId::new();
        let mut offset = 0u64;
        let chunks: Vec<(ChunkId, IndexEntry)> = (0u32..20_000)
            .map(|i| {
                let id = ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes());
                let e = IndexEntry {
                    pack,
                    offset,
                    stored_len: 9_000 + i % 4_000,
                    raw_len: 65_536,
                    kind: ChunkKind::Full,
                    base: ChunkId::ZERO,
                };
                offset += u64::from(e.stored_len) + 80;
                (id, e)
            })
            .collect();
        let written = index
            .insert_sealed(SealedEntries {
                compress_later: None,
                later_deltas: &[],
                chunks: &chunks,
                features: &[],
            })
            .expect("insert");
        assert_eq!(written, chunks.len());
        index.flush().expect("flush");
        let raw: u64 = index
            .sizes()
            .expect("sizes")
            .iter()
            .map(|s| s.key_bytes + s.value_bytes)
            .sum();
        let tables = sst_bytes(dir.path());
        assert!(tables > 0, "the flush wrote no table file");
        assert!(
            tables * 10 < raw * 9,
            "table files {tables} B for {raw} B of keys and values: not compressed"
        );
        assert_eq!(index.get(&chunks[7].0).expect("get"), Some(chunks[7].1));
    }
}
