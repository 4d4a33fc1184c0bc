//! The encoding end of an ingest: `Encoder` turns each new chunk into a
//! record (a delta against its chosen base when that pays, else compressed
//! whole; several encoder threads at once), and `PackSink` appends the
//! records in chunk order to the ingest's open pack, sealing and indexing
//! full packs, on the writer thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use crate::chunk::ChunkId;
use crate::crash::{self, CrashPoint};
use crate::delta;
use crate::error::StoreError;
use crate::index::{IndexEntry, LaterDelta, SealedEntries};
use crate::pack::{ChunkKind, PackWriter, RECORD_HEADER_LEN, RecordHeader};
use crate::reader::ChunkReader;
use crate::resemblance::Sketch;
use crate::shared::Inner;

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
pub(super) struct Base {
    pub(super) id: ChunkId,
    /// The candidate's chain was full, so this is the chain's root.
    pub(super) rebased: bool,
}

/// One new chunk for the encoder: its bytes, its sketch (`None` when deltas
/// are off or it has none) and the base chosen for it, already registered
/// as used by the ingest.
pub(super) struct Job {
    pub(super) id: ChunkId,
    pub(super) raw: Vec<u8>,
    pub(super) sketch: Option<Sketch>,
    /// The slots of `sketch` this chunk claimed for the dump (`claims.rs`):
    /// only these get feature entries.
    pub(super) claim: u8,
    pub(super) base: Option<Base>,
    /// A second base for when `base` gives no sure win (`fallback.rs`).
    pub(super) fallback: Option<Base>,
    /// Stored uncompressed, its delta against `base` (or `fallback`) left
    /// to `Store::compress_later` (`Cutter::defer_delta`).
    pub(super) defer: bool,
}

/// How a new chunk is stored.
pub(super) enum Encoded {
    Full(Vec<u8>),
    /// Whole, in a zstd frame of raw blocks, for `Store::compress_later`.
    Later(Vec<u8>),
    Delta {
        base: ChunkId,
        stored: Vec<u8>,
    },
}

/// One encoded chunk, ready to append.
pub(super) struct Record {
    header: RecordHeader,
    stored: Vec<u8>,
    sketch: Option<Sketch>,
    claim: u8,
    /// Stored uncompressed, for `Store::compress_later`.
    later: bool,
    /// ... with the delta bases the pass encodes it against.
    later_delta: Option<LaterDelta>,
}

/// Encodes new chunks; one per encoder thread (each reads bases on its own).
pub(super) struct Encoder {
    inner: Arc<Inner>,
    dump_uuid: Uuid,
    /// Reads delta bases.
    bases: ChunkReader,
    /// Raw bytes this ingest may still store uncompressed (shared by its
    /// encoders; `Ingest::new` sets it).
    later_budget: Arc<AtomicU64>,
}

impl Encoder {
    pub(super) fn new(inner: Arc<Inner>, dump_uuid: Uuid, later_budget: Arc<AtomicU64>) -> Encoder {
        Encoder {
            bases: ChunkReader::new(Arc::clone(&inner)),
            inner,
            dump_uuid,
            later_budget,
        }
    }

    /// Encodes one new chunk: the same job always gives the same record.
    pub(super) fn encode(&mut self, job: Job) -> Result<Record, StoreError> {
        let Job {
            id,
            raw,
            sketch,
            claim,
            base,
            fallback,
            defer,
        } = job;
        let mut later_delta = None;
        let encoded = match base {
            Some(base) if defer => match crate::rawframe::encode(&raw) {
                Some(frame) => {
                    later_delta = Some(LaterDelta {
                        base: base.id,
                        rebased: base.rebased,
                        fallback: fallback.map(|f| (f.id, f.rebased)),
                    });
                    Encoded::Later(frame)
                }
                None => super::fallback::encode_best(self, id, &raw, base, fallback)?,
            },
            Some(base) => super::fallback::encode_best(self, id, &raw, base, fallback)?,
            None => self.whole(id, &raw)?,
        };
        let (kind, base, stored, later) = match encoded {
            Encoded::Full(stored) => (ChunkKind::Full, ChunkId::ZERO, stored, false),
            Encoded::Later(stored) => (ChunkKind::Full, ChunkId::ZERO, stored, true),
            Encoded::Delta { base, stored } => (ChunkKind::Delta, base, stored, false),
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
        let (header, stored) = seal(&self.inner, header, stored)?;
        Ok(Record {
            header,
            stored,
            sketch,
            claim,
            later,
            later_delta,
        })
    }

    /// A chunk stored whole: left uncompressed for `Store::compress_later`
    /// while this ingest's budget lasts, else compressed now.
    fn whole(&self, id: ChunkId, raw: &[u8]) -> Result<Encoded, StoreError> {
        let len = raw.len() as u64;
        let taken = self
            .later_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(len)
            })
            .is_ok();
        if taken && let Some(frame) = crate::rawframe::encode(raw) {
            return Ok(Encoded::Later(frame));
        }
        Ok(Encoded::Full(self.compress_full(id, raw)?))
    }

    pub(super) fn compress_full(&self, id: ChunkId, raw: &[u8]) -> Result<Vec<u8>, StoreError> {
        zstd::bulk::compress(raw, self.inner.opts.zstd_level)
            .map_err(StoreError::io(format!("compress chunk {id}")))
    }

    /// Stores `raw` as a delta against `base` when the delta is clearly
    /// smaller: at most 1/`DELTA_SURE_WIN_RATIO` of the raw bytes, or else
    /// at most `DELTA_MAX_SHARE_OF_WHOLE` of the chunk compressed whole
    /// (`REBASE_MAX_SHARE_OF_WHOLE` against a chain's root).
    pub(super) fn encode_against(
        &mut self,
        id: ChunkId,
        raw: &[u8],
        base: Base,
    ) -> Result<Encoded, StoreError> {
        let Some(stored) = self.delta(id, raw, base.id)? else {
            return self.whole(id, raw);
        };
        if sure_win(stored.len(), raw.len()) {
            return Ok(Encoded::Delta {
                base: base.id,
                stored,
            });
        }
        let full = self.compress_full(id, raw)?;
        if beats_whole(stored.len(), full.len(), base.rebased) {
            Ok(Encoded::Delta {
                base: base.id,
                stored,
            })
        } else {
            Ok(Encoded::Full(full))
        }
    }

    /// `raw` delta-coded against `base`; `None` (logged when it failed)
    /// when the base cannot be read, so the chunk is stored whole.
    pub(super) fn delta(
        &mut self,
        id: ChunkId,
        raw: &[u8],
        base: ChunkId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let base_raw = match self.bases.read(base) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::warn!(dump_id = %self.dump_uuid, chunk = %base, "cannot read a delta base, storing the chunk whole: {e}");
                return Ok(None);
            }
        };
        delta::encode(raw, &base_raw, self.inner.opts.delta_zstd_level)
            .map(Some)
            .map_err(|e| StoreError::Io {
                context: format!("delta-compress chunk {id} against {base}"),
                error: std::io::Error::other(e),
            })
    }
}

/// For `Store::compress_later`: encodes a chunk an ingest stored
/// uncompressed against the delta bases it chose (`LaterDelta`), as the
/// ingest would have: a delta when it wins, else the chunk compressed whole.
pub(crate) struct LaterEncoder {
    encoder: Encoder,
}

impl LaterEncoder {
    pub(crate) fn new(inner: Arc<Inner>) -> LaterEncoder {
        LaterEncoder {
            encoder: Encoder::new(inner, Uuid::nil(), Arc::new(AtomicU64::new(0))),
        }
    }

    /// The record's kind, base (`ChunkId::ZERO` when whole) and compressed
    /// bytes (not sealed). A base whose chain has no room left for one more
    /// delta (never so for bases an ingest chose, checked all the same) or
    /// that cannot be read is not used.
    pub(crate) fn encode(
        &mut self,
        id: ChunkId,
        raw: &[u8],
        plan: &LaterDelta,
    ) -> Result<(ChunkKind, ChunkId, Vec<u8>), StoreError> {
        let usable = |b: Base| -> Result<Option<Base>, StoreError> {
            let room = self
                .encoder
                .inner
                .index
                .chain_of(b.id)?
                .is_some_and(|(depth, _)| depth < self.encoder.inner.opts.max_delta_depth);
            Ok(room.then_some(b))
        };
        let first = usable(Base {
            id: plan.base,
            rebased: plan.rebased,
        })?;
        let second = match plan.fallback {
            Some((id, rebased)) => usable(Base { id, rebased })?,
            None => None,
        };
        let (base, fallback) = match (first, second) {
            (Some(b), f) => (b, f),
            (None, Some(f)) => (f, None),
            (None, None) => {
                let z = self.encoder.compress_full(id, raw)?;
                return Ok((ChunkKind::Full, ChunkId::ZERO, z));
            }
        };
        Ok(
            match super::fallback::encode_best(&mut self.encoder, id, raw, base, fallback)? {
                Encoded::Delta { base, stored } => (ChunkKind::Delta, base, stored),
                Encoded::Full(z) => (ChunkKind::Full, ChunkId::ZERO, z),
                // The budget is 0: only an empty chunk could take from it.
                Encoded::Later(_) => (
                    ChunkKind::Full,
                    ChunkId::ZERO,
                    self.encoder.compress_full(id, raw)?,
                ),
            },
        )
    }
}

/// Encrypted store: the compressed bytes are sealed, bound to the header
/// (docs/encryption.md), and the stored length includes nonce and tag.
/// Otherwise `header` and `stored` as they are.
pub(crate) fn seal(
    inner: &Inner,
    mut header: RecordHeader,
    stored: Vec<u8>,
) -> Result<(RecordHeader, Vec<u8>), StoreError> {
    let Some(c) = &inner.crypto else {
        return Ok((header, stored));
    };
    let sealed = c
        .seal_record(&header, &stored)
        .map_err(|detail| StoreError::Invalid {
            what: "chunk encryption",
            detail,
        })?;
    header.stored_len = u32::try_from(sealed.len()).map_err(|_| StoreError::Invalid {
        what: "sealed chunk length",
        detail: format!("{} bytes", sealed.len()),
    })?;
    Ok((header, sealed))
}

/// A delta at most 1/`DELTA_SURE_WIN_RATIO` of the raw chunk: kept without
/// compressing the chunk whole to compare.
pub(super) fn sure_win(stored_len: usize, raw_len: usize) -> bool {
    stored_len.saturating_mul(DELTA_SURE_WIN_RATIO) <= raw_len
}

/// A delta at most `DELTA_MAX_SHARE_OF_WHOLE` of the chunk compressed whole
/// (`REBASE_MAX_SHARE_OF_WHOLE` against a chain's root).
pub(super) fn beats_whole(stored_len: usize, whole_len: usize, rebased: bool) -> bool {
    let (num, den) = if rebased {
        REBASE_MAX_SHARE_OF_WHOLE
    } else {
        DELTA_MAX_SHARE_OF_WHOLE
    };
    stored_len.saturating_mul(den) <= whole_len.saturating_mul(num)
}

/// The open pack of one ingest and what it has written.
pub(super) struct PackSink {
    inner: Arc<Inner>,
    writer: Option<PackWriter>,
    /// Index entries of records in `writer`, written once it is sealed.
    pending: Vec<(ChunkId, IndexEntry)>,
    /// Feature entries `(slot, super-feature, chunk)` of records in `writer`.
    pending_features: Vec<(u8, u64, ChunkId)>,
    /// Planned deltas of records in `writer` (`LaterDelta`).
    pending_later_deltas: Vec<(ChunkId, LaterDelta)>,
    pub(super) new_stored_bytes: u64,
    pub(super) delta_chunks: u64,
    pub(super) full_chunks: u64,
    /// Chunks stored uncompressed for `Store::compress_later`, and their bytes.
    pub(super) later_chunks: u64,
    pub(super) later_bytes: u64,
    /// The open pack holds such a chunk: its seal marks it for the pass.
    later_in_pack: bool,
    /// The dump, named by the pack's mark.
    dump_uuid: Uuid,
    /// Raw bytes this ingest may still store uncompressed (`later_budget`
    /// in `ingest/mod.rs`), shared with its encoders.
    pub(super) later_budget: Arc<AtomicU64>,
    /// A pack was sealed (its chunks are garbage if the ingest is abandoned).
    pub(super) sealed_any: bool,
}

impl PackSink {
    pub(super) fn new(inner: Arc<Inner>, dump_uuid: Uuid, later_budget: u64) -> PackSink {
        PackSink {
            inner,
            writer: None,
            pending: Vec::new(),
            pending_features: Vec::new(),
            pending_later_deltas: Vec::new(),
            new_stored_bytes: 0,
            delta_chunks: 0,
            full_chunks: 0,
            later_chunks: 0,
            later_bytes: 0,
            later_in_pack: false,
            dump_uuid,
            later_budget: Arc::new(AtomicU64::new(later_budget)),
            sealed_any: false,
        }
    }

    /// Appends one encoded chunk; seals the pack when it reaches the target
    /// size. Records must come in chunk order (the pack's content, and so
    /// the stored bytes, are then the same on every run).
    pub(super) fn append(&mut self, record: Record) -> Result<(), StoreError> {
        let Record {
            header,
            stored,
            sketch,
            claim,
            later,
            later_delta,
        } = record;
        let id = header.chunk;
        if let Some(plan) = later_delta {
            self.pending_later_deltas.push((id, plan));
        }
        if later {
            self.later_chunks += 1;
            self.later_bytes += u64::from(header.raw_len);
            self.later_in_pack = true;
        }
        match header.kind {
            ChunkKind::Full => self.full_chunks += 1,
            ChunkKind::Delta => self.delta_chunks += 1,
        }
        if let Some(sk) = &sketch {
            self.pending_features.extend(
                sk.slots()
                    .filter(|(slot, _)| claim & (1 << slot) != 0)
                    .map(|(slot, value)| (slot, value, id)),
            );
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

    /// Seals the open pack (if it holds records) and indexes its chunks.
    pub(super) fn seal_current(&mut self) -> Result<(), StoreError> {
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
        // S3: the pack is in the bucket (size confirmed) before any index
        // entry names it; an unindexed object is an orphan gc removes.
        self.inner.upload_pack(sealed.id, sealed.bytes)?;
        self.inner.index.insert_sealed(SealedEntries {
            chunks: &self.pending,
            features: &self.pending_features,
            compress_later: self.later_in_pack.then_some((sealed.id, self.dump_uuid)),
            later_deltas: &self.pending_later_deltas,
        })?;
        self.later_in_pack = false;
        self.pending_later_deltas.clear();
        crash::at(CrashPoint::IndexSealedBatch);
        tracing::debug!(pack_id = %sealed.id, bytes = sealed.bytes, chunks = self.pending.len(), "sealed pack");
        self.pending.clear();
        self.pending_features.clear();
        drop(_gc);
        self.inner.trim_cache(None)
    }
}
