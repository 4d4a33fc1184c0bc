//! The RocksDB chunk index: chunk id → where its record lives, plus the `meta/`
//! keys (format version, chunking parameters). Encodings in docs/store.md.
//! Writes are synced batches; callers decide when (after packs are sealed).

use std::path::{Path, PathBuf};

use rocksdb::{DB, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::chunk::{CHUNK_ID_LEN, ChunkId, ChunkParams};
use crate::error::StoreError;
use crate::pack::{ChunkKind, PackId, RecordHeader};

/// Layout of keys and values in docs/store.md. Bump on any incompatible change.
pub const INDEX_FORMAT_VERSION: u32 = 1;

const KEY_FORMAT_VERSION: &[u8] = b"meta/format_version";
const KEY_CHUNK_PARAMS: &[u8] = b"meta/chunk_params";
const CHUNK_PREFIX: u8 = b'c';
const DUMP_PREFIX: u8 = b'd';
const DUMP_KEY_LEN: usize = 1 + 16;
/// logical_bytes u64 | new_stored_bytes u64
const DUMP_SUMMARY_LEN: usize = 16;
const CHUNK_KEY_LEN: usize = 1 + CHUNK_ID_LEN;
/// pack 16 | offset u64 | stored_len u32 | raw_len u32 | kind u8 | base 32
const ENTRY_LEN: usize = 16 + 8 + 4 + 4 + 1 + CHUNK_ID_LEN;

/// Where a chunk's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub pack: PackId,
    /// Offset of the record header in the pack.
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub kind: ChunkKind,
    /// `ChunkId::ZERO` unless `kind` is `Delta`.
    pub base: ChunkId,
}

impl IndexEntry {
    /// The record header this entry promises to find at `offset`.
    pub fn record_header(&self, chunk: ChunkId) -> RecordHeader {
        RecordHeader {
            chunk,
            kind: self.kind,
            base: self.base,
            raw_len: self.raw_len,
            stored_len: self.stored_len,
        }
    }

    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..16].copy_from_slice(self.pack.0.as_bytes());
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b[24..28].copy_from_slice(&self.stored_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.raw_len.to_le_bytes());
        b[32] = self.kind.to_byte();
        b[33..65].copy_from_slice(&self.base.0);
        b
    }

    fn decode(b: &[u8]) -> Option<IndexEntry> {
        if b.len() != ENTRY_LEN {
            return None;
        }
        let pack = PackId(uuid::Uuid::from_slice(&b[0..16]).ok()?);
        let offset = u64::from_le_bytes(b[16..24].try_into().ok()?);
        let stored_len = u32::from_le_bytes(b[24..28].try_into().ok()?);
        let raw_len = u32::from_le_bytes(b[28..32].try_into().ok()?);
        let kind = ChunkKind::from_byte(b[32])?;
        let base = ChunkId(b[33..65].try_into().ok()?);
        Some(IndexEntry {
            pack,
            offset,
            stored_len,
            raw_len,
            kind,
            base,
        })
    }
}

/// The figures of one stored dump, kept beside the chunk entries so that
/// statistics never re-read every manifest. Derived from the manifest: the
/// store writes it after the manifest and repairs it at open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpSummary {
    pub logical_bytes: u64,
    pub new_stored_bytes: u64,
}

fn dump_key(dump: &uuid::Uuid) -> [u8; DUMP_KEY_LEN] {
    let mut k = [0u8; DUMP_KEY_LEN];
    k[0] = DUMP_PREFIX;
    k[1..].copy_from_slice(dump.as_bytes());
    k
}

fn chunk_key(id: &ChunkId) -> [u8; CHUNK_KEY_LEN] {
    let mut k = [0u8; CHUNK_KEY_LEN];
    k[0] = CHUNK_PREFIX;
    k[1..].copy_from_slice(&id.0);
    k
}

/// The open index. `Send + Sync`.
pub struct Index {
    db: DB,
    path: PathBuf,
}

impl Index {
    /// Opens (creating if needed) the index at `path`. A new index records
    /// `INDEX_FORMAT_VERSION` and `params`; an existing one must carry the
    /// same version and returns the parameters it was created with.
    pub fn open(path: &Path, params: ChunkParams) -> Result<(Index, ChunkParams), StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Bounded: the index holds one small entry per chunk; keep file handles
        // and memtables modest on a worker that also runs pg_dump.
        opts.set_max_open_files(256);
        opts.set_write_buffer_size(16 << 20);
        let db =
            DB::open(&opts, path).map_err(StoreError::index(format!("open {}", path.display())))?;
        let index = Index {
            db,
            path: path.to_path_buf(),
        };
        let params = index.check_meta(params)?;
        Ok((index, params))
    }

    /// Opens an existing index for reading only, beside a process that has
    /// it open for writing (RocksDB's read-only mode takes no lock; it sees
    /// the index as it was when opened).
    pub fn open_read_only(path: &Path) -> Result<(Index, ChunkParams), StoreError> {
        if !path.join("CURRENT").is_file() {
            return Err(StoreError::Invalid {
                what: "store",
                detail: format!("{} holds no chunk index", path.display()),
            });
        }
        let mut opts = Options::default();
        opts.set_max_open_files(256);
        let db = DB::open_for_read_only(&opts, path, false).map_err(StoreError::index(format!(
            "open {} read-only",
            path.display()
        )))?;
        let index = Index {
            db,
            path: path.to_path_buf(),
        };
        if index
            .db
            .get(KEY_FORMAT_VERSION)
            .map_err(StoreError::index(format!(
                "read meta of {}",
                path.display()
            )))?
            .is_none()
        {
            return Err(StoreError::Invalid {
                what: "store",
                detail: format!("{} has no format version", path.display()),
            });
        }
        // With a version present, check_meta only reads.
        let params = index.check_meta(ChunkParams::default())?;
        Ok((index, params))
    }

    fn check_meta(&self, params: ChunkParams) -> Result<ChunkParams, StoreError> {
        let ctx = format!("read meta of {}", self.path.display());
        match self
            .db
            .get(KEY_FORMAT_VERSION)
            .map_err(StoreError::index(ctx.clone()))?
        {
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_slice())
                    .map(u32::from_le_bytes)
                    .map_err(|_| StoreError::FormatVersion {
                        what: "chunk index",
                        path: self.path.clone(),
                        found: u64::MAX,
                        expected: u64::from(INDEX_FORMAT_VERSION),
                    })?;
                if found != INDEX_FORMAT_VERSION {
                    return Err(StoreError::FormatVersion {
                        what: "chunk index",
                        path: self.path.clone(),
                        found: u64::from(found),
                        expected: u64::from(INDEX_FORMAT_VERSION),
                    });
                }
                let raw = self
                    .db
                    .get(KEY_CHUNK_PARAMS)
                    .map_err(StoreError::index(ctx))?
                    .ok_or_else(|| StoreError::Invalid {
                        what: "chunk index",
                        detail: format!("{} has no chunk parameters", self.path.display()),
                    })?;
                let stored: ChunkParams =
                    serde_json::from_slice(&raw).map_err(|e| StoreError::Invalid {
                        what: "chunk index",
                        detail: format!("{}: bad chunk parameters: {e}", self.path.display()),
                    })?;
                Ok(stored)
            }
            None => {
                let mut batch = WriteBatch::default();
                batch.put(KEY_FORMAT_VERSION, INDEX_FORMAT_VERSION.to_le_bytes());
                let json = serde_json::to_vec(&params).map_err(|e| StoreError::Invalid {
                    what: "chunk parameters",
                    detail: e.to_string(),
                })?;
                batch.put(KEY_CHUNK_PARAMS, json);
                self.write(batch, "initialise meta")?;
                Ok(params)
            }
        }
    }

    /// Overwrites the format version (tests use it to simulate a newer store).
    #[doc(hidden)]
    pub fn set_format_version_for_test(&self, v: u32) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_FORMAT_VERSION, v.to_le_bytes());
        self.write(batch, "set format version")
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
                    detail: format!("chunk {id}: {} bytes, expected {ENTRY_LEN}", v.len()),
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
        let mut v = [0u8; DUMP_SUMMARY_LEN];
        v[0..8].copy_from_slice(&s.logical_bytes.to_le_bytes());
        v[8..16].copy_from_slice(&s.new_stored_bytes.to_le_bytes());
        let mut batch = WriteBatch::default();
        batch.put(dump_key(dump), v);
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
        let start = [DUMP_PREFIX];
        let iter = self
            .db
            .iterator(IteratorMode::From(&start, rocksdb::Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(StoreError::index("scan dump summaries"))?;
            if k.first() != Some(&DUMP_PREFIX) {
                break;
            }
            let bad = || StoreError::Invalid {
                what: "dump summary",
                detail: format!("key of {} bytes, value of {} bytes", k.len(), v.len()),
            };
            if k.len() != DUMP_KEY_LEN || v.len() != DUMP_SUMMARY_LEN {
                return Err(bad());
            }
            let dump = uuid::Uuid::from_slice(&k[1..]).map_err(|_| bad())?;
            let logical_bytes = u64::from_le_bytes(v[0..8].try_into().map_err(|_| bad())?);
            let new_stored_bytes = u64::from_le_bytes(v[8..16].try_into().map_err(|_| bad())?);
            out.push((
                dump,
                DumpSummary {
                    logical_bytes,
                    new_stored_bytes,
                },
            ));
        }
        Ok(out)
    }

    /// Calls `visit` for every chunk entry, in id order.
    pub fn for_each(
        &self,
        mut visit: impl FnMut(ChunkId, IndexEntry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let start = [CHUNK_PREFIX];
        let iter = self
            .db
            .iterator(IteratorMode::From(&start, rocksdb::Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(StoreError::index("scan chunks"))?;
            if k.first() != Some(&CHUNK_PREFIX) {
                break;
            }
            let id = <[u8; CHUNK_ID_LEN]>::try_from(&k[1..])
                .map(ChunkId)
                .map_err(|_| StoreError::Invalid {
                    what: "index key",
                    detail: format!("{} bytes, expected {CHUNK_KEY_LEN}", k.len()),
                })?;
            let e = IndexEntry::decode(&v).ok_or_else(|| StoreError::Invalid {
                what: "index entry",
                detail: format!("chunk {id}: {} bytes, expected {ENTRY_LEN}", v.len()),
            })?;
            visit(id, e)?;
        }
        Ok(())
    }
}
