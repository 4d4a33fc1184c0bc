//! `Ingest`: storing one dump. Cuts each file into content-defined chunks,
//! stores the chunks the store does not have yet (as a zstd delta against a
//! similar stored chunk when one is found, else whole; into this ingest's own
//! pack), and on `finish` seals, indexes and writes the manifest — in that
//! order. Dropping an unfinished ingest aborts it.

use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;

use fastcdc::v2020::StreamCDC;
use uuid::Uuid;

use crate::chunk::ChunkId;
use crate::delta::{self, MAX_DELTA_DEPTH};
use crate::error::StoreError;
use crate::index::{IndexEntry, SealedEntries};
use crate::manifest::{self, ChunkRef, FileEntry, MANIFEST_FORMAT_VERSION, Manifest, ManifestMeta};
use crate::pack::{ChunkKind, PackWriter, RECORD_HEADER_LEN, RecordHeader};
use crate::reader::{ChunkReader, FileReader, GcLock};
use crate::resemblance::{self, Sketch};
use crate::store::Inner;

/// A delta at most 1/16 of the raw chunk is kept without compressing the
/// chunk whole to compare; why: a good base gives ~1/100 on dump data, and
/// the comparison would cost a second compression per chunk.
const DELTA_SURE_WIN_RATIO: usize = 16;
/// Otherwise a delta is kept when it is at most 4/5 of the chunk compressed
/// whole; why: measured on the churn benchmark (1/2 cost 10–35% more on
/// days 2–4, 4/5 and 1/1 were equal), and a delta that saves less than a
/// fifth is not worth a base read on every restore.
const DELTA_MAX_SHARE_OF_WHOLE: (usize, usize) = (4, 5);
/// A delta against the root of a full chain is kept only when it is at most
/// 1/4 of the chunk compressed whole; why: such a delta carries every change
/// since the root was stored and grows with its age, so past this point a
/// new root (the chunk stored whole) is cheaper for the chains that follow.
const REBASE_MAX_SHARE_OF_WHOLE: (usize, usize) = (1, 4);

/// The base chosen for a new chunk.
struct Base {
    id: ChunkId,
    /// The candidate's chain was full, so this is the chain's root.
    rebased: bool,
}

/// How a new chunk is stored.
enum Encoded {
    Full(Vec<u8>),
    Delta { base: ChunkId, stored: Vec<u8> },
}

/// Longest accepted file name (bytes); pg_dump's names are short.
const MAX_FILE_NAME_BYTES: usize = 255;

/// Rejects names that could escape a restore directory or clash with our own
/// files: empty, `.`/`..`, containing `/` or NUL, or too long.
pub(crate) fn validate_file_name(name: &str) -> Result<(), StoreError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > MAX_FILE_NAME_BYTES;
    if bad {
        return Err(StoreError::Invalid {
            what: "file name",
            detail: format!(
                "{name:?} (must be 1..={MAX_FILE_NAME_BYTES} bytes, no '/', NUL, '.' or '..')"
            ),
        });
    }
    Ok(())
}

/// One dump being stored. `Send`; not shared between threads.
///
/// Crash safety (kill -9 at any point):
/// 1. chunks are appended to `<pack>.pack.open`, which nothing references;
/// 2. a full pack is fsync'd and renamed to `.pack`, then its index entries
///    are written in one synced batch; a crash between leaves a sealed pack no
///    index entry points to, which gc deletes;
/// 3. only after every pack is sealed and indexed is the manifest written
///    (tmp + fsync + rename + fsync dir); a crash before the rename leaves no
///    manifest, so the dump does not exist.
pub struct Ingest {
    inner: Arc<Inner>,
    dump_uuid: Uuid,
    /// Key of this ingest in the store's registry of live chunk sets.
    registration: u64,
    files: Vec<FileEntry>,
    names: HashSet<String>,
    writer: Option<PackWriter>,
    /// Index entries of records in `writer`, written once it is sealed.
    pending: Vec<(ChunkId, IndexEntry)>,
    /// Feature entries `(slot, super-feature, chunk)` of records in `writer`.
    pending_features: Vec<(u8, u64, ChunkId)>,
    /// Reads delta bases.
    bases: ChunkReader,
    logical_bytes: u64,
    new_stored_bytes: u64,
    delta_chunks: u64,
    full_chunks: u64,
    poisoned: bool,
    /// A pack of this ingest was sealed (its chunks are garbage if the
    /// ingest is abandoned).
    sealed_any: bool,
    finished: bool,
}

impl Ingest {
    pub(crate) fn new(inner: Arc<Inner>, dump_uuid: Uuid) -> Result<Ingest, StoreError> {
        let registration = inner.register(dump_uuid)?;
        Ok(Ingest {
            dump_uuid,
            registration,
            files: Vec::new(),
            names: HashSet::new(),
            writer: None,
            pending: Vec::new(),
            pending_features: Vec::new(),
            bases: ChunkReader::new(Arc::clone(&inner), GcLock::Take),
            inner,
            logical_bytes: 0,
            new_stored_bytes: 0,
            delta_chunks: 0,
            full_chunks: 0,
            poisoned: false,
            sealed_any: false,
            finished: false,
        })
    }

    /// The dump being stored.
    pub fn dump_uuid(&self) -> Uuid {
        self.dump_uuid
    }

    /// Logical bytes added so far.
    pub fn logical_bytes(&self) -> u64 {
        self.logical_bytes
    }

    /// Pack bytes written so far.
    pub fn new_stored_bytes(&self) -> u64 {
        self.new_stored_bytes
    }

    /// Stores one file, streaming from `r` (memory stays bounded by the
    /// chunker's max chunk size and the pack buffer). Names are unique per
    /// dump. After an error the ingest is unusable; drop it.
    pub fn add_file(&mut self, name: &str, r: impl Read) -> Result<FileEntry, StoreError> {
        if self.poisoned {
            return Err(StoreError::IngestPoisoned(self.dump_uuid));
        }
        validate_file_name(name)?;
        if self.names.contains(name) {
            return Err(StoreError::Invalid {
                what: "file name",
                detail: format!("{name:?} was already added to dump {}", self.dump_uuid),
            });
        }
        self.poisoned = true;
        let entry = self.chunk_file(name, r)?;
        self.poisoned = false;
        self.names.insert(name.to_string());
        self.files.push(entry.clone());
        Ok(entry)
    }

    fn chunk_file(&mut self, name: &str, r: impl Read) -> Result<FileEntry, StoreError> {
        let p = self.inner.opts.chunking;
        let mut entry = FileEntry {
            name: name.to_string(),
            size: 0,
            chunks: Vec::new(),
        };
        let level = p.fastcdc_level();
        for chunk in StreamCDC::with_level(r, p.min_bytes, p.avg_bytes, p.max_bytes, level) {
            let chunk = chunk.map_err(|e| StoreError::Io {
                context: format!("read {name} of dump {}", self.dump_uuid),
                error: match e {
                    fastcdc::v2020::Error::IoError(io) => io,
                    other => std::io::Error::other(other.to_string()),
                },
            })?;
            let data = chunk.data;
            let id = ChunkId::of(&data);
            // max chunk size is at most 16 MiB (validated), so this fits.
            let len = u32::try_from(data.len()).map_err(|_| StoreError::Invalid {
                what: "chunk length",
                detail: format!("{} bytes", data.len()),
            })?;
            entry.size += u64::from(len);
            self.logical_bytes += u64::from(len);
            entry.chunks.push(ChunkRef { id, len });
            if self.reference(id)? {
                continue;
            }
            self.store_new(id, &data)?;
        }
        Ok(entry)
    }

    /// Registers `id` as used by this ingest. Returns true when the store
    /// already has it (indexed, or written earlier by this ingest).
    fn reference(&mut self, id: ChunkId) -> Result<bool, StoreError> {
        // Under the gc read lock, so no gc can run between the index lookup
        // and the registration: a chunk found in the index stays there until
        // this ingest finishes or is dropped.
        let _gc = self.inner.gc_read();
        let already_mine = self.own_set_contains(&id);
        if already_mine {
            return Ok(true);
        }
        let indexed = self.inner.index.get(&id)?.is_some();
        let mut reg = self.inner.registry();
        if let Some((_, set)) = reg.ingests.get_mut(&self.registration) {
            set.insert(id);
        }
        Ok(indexed)
    }

    fn own_set_contains(&self, id: &ChunkId) -> bool {
        self.inner
            .registry()
            .ingests
            .get(&self.registration)
            .is_some_and(|(_, set)| set.contains(id))
    }

    fn store_new(&mut self, id: ChunkId, raw: &[u8]) -> Result<(), StoreError> {
        let sketch = if self.inner.opts.max_delta_depth > 0 {
            resemblance::sketch(raw, &self.inner.opts.features)
        } else {
            None
        };
        let encoded = match &sketch {
            Some(sk) => self.encode(id, raw, sk)?,
            None => Encoded::Full(self.compress_full(id, raw)?),
        };
        let (kind, base, stored) = match encoded {
            Encoded::Full(stored) => (ChunkKind::Full, ChunkId::ZERO, stored),
            Encoded::Delta { base, stored } => (ChunkKind::Delta, base, stored),
        };
        let header = RecordHeader {
            chunk: id,
            kind,
            base,
            raw_len: u32::try_from(raw.len()).map_err(|_| StoreError::Invalid {
                what: "chunk length",
                detail: format!("{} bytes", raw.len()),
            })?,
            stored_len: u32::try_from(stored.len()).map_err(|_| StoreError::Invalid {
                what: "compressed chunk length",
                detail: format!("{} bytes", stored.len()),
            })?,
        };
        match kind {
            ChunkKind::Full => self.full_chunks += 1,
            ChunkKind::Delta => self.delta_chunks += 1,
        }
        if let Some(sk) = &sketch {
            self.pending_features
                .extend(sk.slots().map(|(slot, value)| (slot, value, id)));
        }
        if self.writer.is_none() {
            self.writer = Some(PackWriter::create(&self.inner.packs_dir)?);
        }
        let Some(writer) = self.writer.as_mut() else {
            return Err(StoreError::Invalid {
                what: "ingest state",
                detail: "no open pack".to_string(),
            });
        };
        let offset = writer.append(&header, &stored)?;
        self.pending.push((
            id,
            IndexEntry {
                pack: writer.id(),
                offset,
                stored_len: header.stored_len,
                raw_len: header.raw_len,
                kind: header.kind,
                base: header.base,
            },
        ));
        self.new_stored_bytes += (RECORD_HEADER_LEN + stored.len()) as u64;
        if writer.len() >= self.inner.opts.pack_target_bytes {
            self.seal_current()?;
        }
        Ok(())
    }

    fn compress_full(&self, id: ChunkId, raw: &[u8]) -> Result<Vec<u8>, StoreError> {
        zstd::bulk::compress(raw, self.inner.opts.zstd_level)
            .map_err(StoreError::io(format!("compress chunk {id}")))
    }

    /// Stores `raw` as a delta when a similar stored chunk exists and the
    /// delta is clearly smaller: at most 1/`DELTA_SURE_WIN_RATIO` of the raw
    /// bytes, or else at most `DELTA_MAX_SHARE_OF_WHOLE` of the chunk
    /// compressed whole (`REBASE_MAX_SHARE_OF_WHOLE` against a chain's root).
    fn encode(&mut self, id: ChunkId, raw: &[u8], sketch: &Sketch) -> Result<Encoded, StoreError> {
        let Some(Base { id: base, rebased }) = self.choose_base(id, sketch)? else {
            return Ok(Encoded::Full(self.compress_full(id, raw)?));
        };
        let base_raw = match self.bases.read(base) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(Encoded::Full(self.compress_full(id, raw)?)),
            Err(e) => {
                tracing::warn!(dump_id = %self.dump_uuid, chunk = %base, "cannot read a delta base, storing the chunk whole: {e}");
                return Ok(Encoded::Full(self.compress_full(id, raw)?));
            }
        };
        let stored =
            delta::encode(raw, &base_raw, self.inner.opts.delta_zstd_level).map_err(|e| {
                StoreError::Io {
                    context: format!("delta-compress chunk {id} against {base}"),
                    error: std::io::Error::other(e),
                }
            })?;
        if stored.len().saturating_mul(DELTA_SURE_WIN_RATIO) <= raw.len() {
            return Ok(Encoded::Delta { base, stored });
        }
        let full = self.compress_full(id, raw)?;
        let (num, den) = if rebased {
            REBASE_MAX_SHARE_OF_WHOLE
        } else {
            DELTA_MAX_SHARE_OF_WHOLE
        };
        if stored.len().saturating_mul(den) <= full.len().saturating_mul(num) {
            Ok(Encoded::Delta { base, stored })
        } else {
            Ok(Encoded::Full(full))
        }
    }

    /// Picks the base for a new chunk: the indexed chunk its super-features
    /// name most often, if its chain leaves room for one more delta (depth
    /// below `max_delta_depth`), else the FULL root of that chain. The base
    /// is registered as used by this ingest under the gc read lock, so gc
    /// keeps it (and, through it, its chain) until the ingest ends.
    fn choose_base(&mut self, id: ChunkId, sketch: &Sketch) -> Result<Option<Base>, StoreError> {
        let inner = Arc::clone(&self.inner);
        let _gc = inner.gc_read();
        for (candidate, _votes) in inner.index.candidates(sketch)? {
            if candidate == id {
                continue;
            }
            let Some((depth, root)) = self.chain_of(candidate)? else {
                continue;
            };
            let base = if depth < inner.opts.max_delta_depth {
                Base {
                    id: candidate,
                    rebased: false,
                }
            } else {
                Base {
                    id: root,
                    rebased: true,
                }
            };
            let mut reg = inner.registry();
            if let Some((_, set)) = reg.ingests.get_mut(&self.registration) {
                set.insert(base.id);
            }
            return Ok(Some(base));
        }
        Ok(None)
    }

    /// The number of delta records from `id` to its FULL root, and the root;
    /// `None` if a link is missing or the chain is too long (then it is not
    /// used as a base; verify reports the damage).
    fn chain_of(&self, id: ChunkId) -> Result<Option<(u8, ChunkId)>, StoreError> {
        let mut next = id;
        for depth in 0..=MAX_DELTA_DEPTH {
            let Some(entry) = self.inner.index.get(&next)? else {
                return Ok(None);
            };
            match entry.delta_base() {
                None => return Ok(Some((depth, next))),
                Some(base) => next = base,
            }
        }
        Ok(None)
    }

    /// Seals the open pack (if it holds records) and indexes its chunks.
    fn seal_current(&mut self) -> Result<(), StoreError> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        if writer.records() == 0 {
            return Ok(()); // dropping it removes the empty .open file
        }
        // Under the gc read lock: a gc must never see this pack sealed but not
        // yet indexed, or it would take it for a crash orphan and delete it.
        let _gc = self.inner.gc_read();
        // From here on something may be on disk that only gc removes.
        self.sealed_any = true;
        let sealed = writer.seal()?;
        self.inner.index.insert_sealed(SealedEntries {
            chunks: &self.pending,
            features: &self.pending_features,
        })?;
        tracing::debug!(pack_id = %sealed.id, bytes = sealed.bytes, chunks = self.pending.len(), "sealed pack");
        self.pending.clear();
        self.pending_features.clear();
        Ok(())
    }

    /// Reads back a file this ingest already stored, hash-checking every
    /// chunk, before the dump is finished: the caller can check what was
    /// stored (e.g. let `pg_restore --list` read the archive) and only then
    /// make the dump exist. Seals the open pack first, so that every chunk is
    /// indexed; this ingest's registration keeps them from gc while it lives,
    /// so read before `finish` or drop.
    pub fn read_back(&mut self, name: &str) -> Result<FileReader, StoreError> {
        if self.poisoned {
            return Err(StoreError::IngestPoisoned(self.dump_uuid));
        }
        let Some(entry) = self.files.iter().find(|f| f.name == name) else {
            return Err(StoreError::FileNotFound {
                dump: self.dump_uuid,
                name: name.to_string(),
            });
        };
        let chunks = entry.chunks.clone();
        self.seal_current()?;
        Ok(FileReader::new(
            Arc::clone(&self.inner),
            self.dump_uuid,
            name,
            chunks,
        ))
    }

    /// The files stored so far, in the order they were added.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Seals and indexes everything written, then writes the manifest. When
    /// this returns the dump is durable and complete.
    pub fn finish(mut self, meta: ManifestMeta) -> Result<Manifest, StoreError> {
        if self.poisoned {
            return Err(StoreError::IngestPoisoned(self.dump_uuid));
        }
        self.seal_current()?;
        let m = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            dump_uuid: self.dump_uuid,
            meta,
            logical_bytes: self.logical_bytes,
            new_stored_bytes: self.new_stored_bytes,
            files: std::mem::take(&mut self.files),
        };
        // The registration (dropped with `self`) keeps gc off these chunks
        // until the manifest, which then keeps them live, is durable.
        manifest::write_manifest(&self.inner.manifests_dir, &m)?;
        self.finished = true;
        // Derived data: if this fails the dump still exists, and the next
        // `Store::open` writes the summary from the manifest.
        if let Err(e) = self
            .inner
            .index
            .put_dump(&m.dump_uuid, crate::store::summary_of(&m))
        {
            tracing::warn!(dump_id = %m.dump_uuid, "cannot record the dump summary: {e}");
        }
        tracing::info!(dump_id = %m.dump_uuid, logical_bytes = m.logical_bytes, new_stored_bytes = m.new_stored_bytes, full_chunks = self.full_chunks, delta_chunks = self.delta_chunks, "dump stored");
        Ok(m)
    }
}

impl Drop for Ingest {
    /// Unregisters; an unsealed pack is removed by `PackWriter`'s drop. Chunks
    /// of packs already sealed stay unreferenced until gc.
    fn drop(&mut self) {
        self.writer = None;
        if self.sealed_any && !self.finished {
            self.inner
                .garbage
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.unregister(self.registration);
    }
}
