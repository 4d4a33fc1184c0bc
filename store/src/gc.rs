//! Garbage collection: mark chunks referenced by manifests and in-progress
//! ingests and the delta bases they need, drop every other index and feature
//! entry, delete packs without live chunks and repack packs whose live share
//! fell below a threshold (records are copied as they are: a delta stays a
//! delta against the same base). Locking: docs/store.md, "Concurrency and GC".

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use crate::chunk::ChunkId;
use crate::crash::{self, CrashPoint};
use crate::delta::MAX_DELTA_DEPTH;
use crate::durable;
use crate::error::StoreError;
use crate::index::{IndexEntry, LaterDelta};
use crate::ingest::LaterEncoder;
use crate::pack::{self, ChunkKind, PackId, PackWriter, RECORD_HEADER_LEN, RecordHeader};
use crate::rawframe;
use crate::reader::ChunkReader;
use crate::store::Store;

/// Index deletions per synced batch; why: bounds the batch's memory.
const DELETE_BATCH: usize = 10_000;

/// What a gc run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub manifests: u64,
    /// Chunks kept: referenced, in use by an ingest, or a base of one of those.
    pub live_chunks: u64,
    /// Of `live_chunks`, those kept only because a live delta is decoded
    /// against them (directly or further down its chain).
    pub bases_kept: u64,
    pub index_entries_removed: u64,
    pub feature_entries_removed: u64,
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    /// Packs that should have been repacked but hold a corrupt live chunk; they
    /// are kept as they are (run verify).
    pub packs_skipped_corrupt: u64,
    pub packs_written: u64,
    pub pack_bytes_before: u64,
    pub pack_bytes_after: u64,
    pub reclaimed_bytes: u64,
}

#[derive(Default)]
struct PackUse {
    live_bytes: u64,
    entries: Vec<(ChunkId, IndexEntry)>,
}

impl Store {
    /// Collects garbage; see the module doc. `repack_below_live_fraction` is in
    /// 0.0..=1.0 (0 never repacks). Refuses to run if any manifest is
    /// unreadable, since its chunks could not be marked. One gc runs at a
    /// time; ingests and reads wait only while it sweeps the index and
    /// deletes packs (never while it reads manifests or copies records).
    ///
    /// Crash safety: dead index entries are deleted (synced) before any pack
    /// file; repacked chunks are sealed in a new pack and re-indexed (synced)
    /// before their old pack is deleted. A crash in between leaves packs that
    /// no index entry points to, which the next gc deletes.
    pub fn gc(&self, repack_below_live_fraction: f64) -> Result<GcReport, StoreError> {
        if !(0.0..=1.0).contains(&repack_below_live_fraction) {
            return Err(StoreError::Invalid {
                what: "repack threshold",
                detail: format!("{repack_below_live_fraction} is outside 0.0..=1.0"),
            });
        }
        self.writable()?;
        let inner = &self.inner;
        let _one_gc = inner.gc_running();
        // What is abandoned from here on is for the next gc.
        inner.garbage.store(false, Ordering::SeqCst);
        let mut report = GcReport::default();

        // Mark, without the gc lock: one manifest in memory at a time. An
        // ingest that finishes from here on leaves its chunk set for this gc
        // (`Inner::unregister`), so a manifest renamed after the directory
        // listing started, which the listing may miss, is covered.
        inner.start_marking();
        let marked = (|| {
            let mut live: HashSet<ChunkId> = HashSet::new();
            for m in self.each_manifest()? {
                let m = m?;
                report.manifests += 1;
                live.extend(m.chunk_refs().map(|c| c.id));
            }
            Ok::<_, StoreError>(live)
        })();
        let gc_lock = inner.gc_write();
        let registered = inner.stop_marking();
        let mut live = marked?;
        crash::at(CrashPoint::GcMarked);
        live.extend(registered);
        inner.gc_generation.fetch_add(1, Ordering::SeqCst);
        report.bases_kept = mark_bases(&inner.index, &mut live)?;
        report.live_chunks = live.len() as u64;

        // Sweep the index.
        let mut dead = Vec::new();
        let mut uses: HashMap<PackId, PackUse> = HashMap::new();
        inner.index.for_each(|id, e| {
            if live.contains(&id) {
                let u = uses.entry(e.pack).or_default();
                u.live_bytes += RECORD_HEADER_LEN as u64 + u64::from(e.stored_len);
                u.entries.push((id, e));
            } else {
                dead.push(id);
            }
            Ok(())
        })?;
        for batch in dead.chunks(DELETE_BATCH) {
            inner.index.delete_all(batch)?;
            crash::at(CrashPoint::GcIndexBatch);
        }
        report.index_entries_removed = dead.len() as u64;
        drop(dead);
        report.feature_entries_removed = inner.index.retain_features(|id| live.contains(id))?;
        drop(live);
        crash::at(CrashPoint::GcFeaturesSwept);

        // Packs: delete the empty ones now, under the lock (every pack
        // sealed so far is indexed), and pick the sparse ones.
        let packs = inner.list_packs()?;
        report.pack_bytes_before = packs.iter().map(|(_, len)| len).sum();
        let mut sparse = Vec::new();
        let mut empty = Vec::new();
        for (id, len) in packs {
            match uses.remove(&id) {
                None => empty.push(id),
                Some(u) if (u.live_bytes as f64) < repack_below_live_fraction * len as f64 => {
                    sparse.push((id, u.entries));
                }
                Some(_) => {}
            }
        }
        drop(uses);
        remove_packs(
            self,
            &empty,
            CrashPoint::GcPackRemoved,
            CrashPoint::GcPacksDirFsync,
        )?;
        report.packs_deleted = empty.len() as u64;
        drop(gc_lock);

        // Repack, without the lock: only gc changes or removes an index
        // entry that exists, and only this gc runs, so the entries read
        // above stay true until this gc switches them.
        // Records left uncompressed are compressed on the way: they are not
        // left for `compress_later` in a pack it no longer knows.
        let mut repack = Repacker::new(self, Some(inner.opts.zstd_level));
        let mut repacked = Vec::new();
        for (id, entries) in sparse {
            if repack.copy_pack(id, &entries)? {
                report.packs_repacked += 1;
                repacked.push(id);
            } else {
                report.packs_skipped_corrupt += 1;
            }
        }
        report.packs_written = repack.finish()?;
        // Under the lock: a reader that looked a moved chunk up before the
        // switch has opened its old pack by now (lookup and open are one
        // hold of the read lock), and every later lookup finds the new one.
        if !repacked.is_empty() {
            let _gc = inner.gc_write();
            // A verify that collected an old location before the switch
            // finds the pack gone: it re-checks.
            inner.gc_generation.fetch_add(1, Ordering::SeqCst);
            remove_packs(
                self,
                &repacked,
                CrashPoint::RepackOldRemoved,
                CrashPoint::RepackDirFsync,
            )?;
        }
        report.packs_deleted += repacked.len() as u64;
        report.pack_bytes_after = inner.list_packs()?.iter().map(|(_, len)| len).sum();
        report.reclaimed_bytes = report
            .pack_bytes_before
            .saturating_sub(report.pack_bytes_after);
        // Deleted entries stay in the index's files as tombstones until a
        // compaction; one now gives their space back (docs/store.md). A
        // failure only leaves the space for RocksDB's own compactions.
        if report.index_entries_removed + report.feature_entries_removed > 0
            && let Err(e) = inner.index.compact()
        {
            tracing::warn!("cannot compact the index after gc: {e}");
        }
        tracing::info!(?report, "gc finished");
        Ok(report)
    }
}

/// Deletes pack files no index entry points to, then fsyncs `packs/`
/// (gc's dead and repacked packs, `compress_later`'s rewritten ones).
pub(crate) fn remove_packs(
    store: &Store,
    ids: &[PackId],
    removed: CrashPoint,
    synced: CrashPoint,
) -> Result<(), StoreError> {
    let inner = &store.inner;
    for id in ids {
        inner.remove_pack(*id)?;
        tracing::debug!(pack_id = %id, "deleted pack");
        crash::at(removed);
    }
    if !ids.is_empty() {
        durable::fsync_dir(&inner.packs_dir)?;
        crash::at(synced);
    }
    Ok(())
}

/// Adds to `live` every base a live delta is decoded against, down each
/// chain to its FULL root (at most `MAX_DELTA_DEPTH` links); returns how many
/// chunks that added. Memory: one map entry per delta chunk in the index.
fn mark_bases(index: &crate::index::Index, live: &mut HashSet<ChunkId>) -> Result<u64, StoreError> {
    let mut links: HashMap<ChunkId, ChunkId> = HashMap::new();
    index.for_each(|id, e| {
        if let Some(base) = e.delta_base() {
            links.insert(id, base);
        }
        Ok(())
    })?;
    let mut added = 0u64;
    let mut frontier: Vec<ChunkId> = live
        .iter()
        .filter(|id| links.contains_key(id))
        .copied()
        .collect();
    for _ in 0..MAX_DELTA_DEPTH {
        let mut next = Vec::new();
        for id in frontier {
            let Some(base) = links.get(&id) else {
                continue;
            };
            if live.insert(*base) {
                added += 1;
                next.push(*base);
            }
        }
        frontier = next;
    }
    Ok(added)
}

/// Copies live records into fresh packs; index entries are rewritten when each
/// new pack is sealed. With `compress`, a record an ingest left uncompressed
/// (`rawframe`) is compressed on the way (`Store::compress_later`).
pub(crate) struct Repacker<'a> {
    store: &'a Store,
    /// Reads the bases of delta records to check them.
    bases: ChunkReader,
    writer: Option<PackWriter>,
    pending: Vec<(ChunkId, IndexEntry)>,
    written: u64,
    /// zstd level for records left uncompressed; `None` copies every record.
    compress: Option<i32>,
    /// Records compressed, and their stored bytes before and after.
    pub(crate) compressed: u64,
    pub(crate) compressed_from: u64,
    pub(crate) compressed_to: u64,
    /// `Store::compress_later`: the planned deltas of uncompressed records,
    /// and the encoder that makes them (`None`: compress them whole).
    later: Option<(LaterEncoder, HashMap<ChunkId, LaterDelta>)>,
    /// Of the records compressed, those written as deltas.
    pub(crate) deltas: u64,
}

impl<'a> Repacker<'a> {
    pub(crate) fn new(store: &'a Store, compress: Option<i32>) -> Repacker<'a> {
        Repacker {
            store,
            bases: ChunkReader::new(std::sync::Arc::clone(&store.inner)),
            writer: None,
            pending: Vec::new(),
            written: 0,
            compress,
            compressed: 0,
            compressed_from: 0,
            compressed_to: 0,
            later: None,
            deltas: 0,
        }
    }

    /// Whether `with_later_deltas` gave chunk `id` a planned delta.
    pub(crate) fn planned(&self, id: &ChunkId) -> bool {
        self.later
            .as_ref()
            .is_some_and(|(_, plans)| plans.contains_key(id))
    }

    /// Encodes the uncompressed records of `plans` against their planned
    /// bases (`Store::compress_later`).
    pub(crate) fn with_later_deltas(mut self, plans: HashMap<ChunkId, LaterDelta>) -> Self {
        let encoder = LaterEncoder::new(std::sync::Arc::clone(&self.store.inner));
        self.later = Some((encoder, plans));
        self
    }

    /// The record to write for one that decoded to `raw`: compressed when it
    /// was left uncompressed and compressing saves bytes, else as it was.
    fn recode(
        &mut self,
        header: RecordHeader,
        stored: Vec<u8>,
        raw: &[u8],
    ) -> Result<(RecordHeader, Vec<u8>), StoreError> {
        let Some(level) = self.compress else {
            return Ok((header, stored));
        };
        let inner = &self.store.inner;
        let plain_len = match inner.crypto {
            None => stored.len(),
            Some(_) => stored.len().saturating_sub(crate::crypto::OVERHEAD),
        };
        if header.kind != ChunkKind::Full
            || plain_len != rawframe::frame_len(raw.len())
            || !self.is_raw_frame(&header, &stored, raw.len())
        {
            return Ok((header, stored));
        }
        let planned = match &mut self.later {
            Some((encoder, plans)) => match plans.get(&header.chunk) {
                Some(plan) => Some(encoder.encode(header.chunk, raw, plan)?),
                None => None,
            },
            None => None,
        };
        let (kind, base, z) = match planned {
            Some(p) => p,
            None => (
                ChunkKind::Full,
                ChunkId::ZERO,
                zstd::bulk::compress(raw, level)
                    .map_err(StoreError::io(format!("compress chunk {}", header.chunk)))?,
            ),
        };
        if z.len() >= plain_len {
            return Ok((header, stored));
        }
        let new_header = RecordHeader {
            kind,
            base,
            stored_len: u32::try_from(z.len()).map_err(|_| StoreError::Invalid {
                what: "compressed chunk length",
                detail: format!("{} bytes", z.len()),
            })?,
            ..header
        };
        if kind == ChunkKind::Delta {
            self.deltas += 1;
        }
        let (new_header, sealed) = crate::ingest::seal(inner, new_header, z)?;
        self.compressed += 1;
        self.compressed_from += stored.len() as u64;
        self.compressed_to += sealed.len() as u64;
        Ok((new_header, sealed))
    }

    /// The record's compressed bytes (decrypted) are a `rawframe`.
    fn is_raw_frame(&self, header: &RecordHeader, stored: &[u8], raw_len: usize) -> bool {
        match &self.store.inner.crypto {
            None => rawframe::is_raw(stored, raw_len),
            Some(c) => c
                .open_record(header, stored)
                .is_ok_and(|plain| rawframe::is_raw(&plain, raw_len)),
        }
    }

    /// Copies every live record of `pack`, checking each decodes to its id.
    /// Returns false (copying nothing that will be indexed) if one is corrupt.
    pub(crate) fn copy_pack(
        &mut self,
        pack: PackId,
        entries: &[(ChunkId, IndexEntry)],
    ) -> Result<bool, StoreError> {
        let inner = &self.store.inner;
        let path = inner.pack_path(pack);
        let file = inner
            .open_pack(pack)
            .map_err(StoreError::io(format!("open pack {}", path.display())))?;
        let mut moved = Vec::with_capacity(entries.len());
        for (id, e) in entries {
            let header = e.record_header(*id);
            let checked = pack::read_record(&file, &path, e.offset, &header).and_then(|stored| {
                self.bases
                    .decode(&header, &stored, &path, e.offset)
                    .map(|raw| (stored, raw))
            });
            let (stored, raw) = match checked {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(pack_id = %pack, error = %err, "not repacking pack with a corrupt chunk");
                    return Ok(false);
                }
            };
            let (header, stored) = self.recode(header, stored, &raw)?;
            drop(raw);
            if self.writer.is_none() {
                self.writer = Some(PackWriter::create(&inner.packs_dir)?);
            }
            let Some(w) = self.writer.as_mut() else {
                return Ok(false);
            };
            let offset = w.append(&header, &stored)?;
            crash::at(CrashPoint::RepackCopied);
            moved.push((
                *id,
                IndexEntry {
                    pack: w.id(),
                    offset,
                    stored_len: header.stored_len,
                    // A planned delta changes both (`recode`).
                    kind: header.kind,
                    base: header.base,
                    ..*e
                },
            ));
            if w.len() >= inner.opts.pack_target_bytes {
                self.pending.append(&mut moved);
                self.seal()?;
            }
        }
        self.pending.append(&mut moved);
        Ok(true)
    }

    fn seal(&mut self) -> Result<(), StoreError> {
        if let Some(w) = self.writer.take()
            && w.records() > 0
        {
            let sealed = w.seal()?;
            // S3: in the bucket before the index switches to it.
            self.store.inner.upload_pack(sealed.id, sealed.bytes)?;
            self.written += 1;
            crash::at(CrashPoint::RepackSealed);
        }
        // The switch: from here on lookups find the new pack. The old one
        // stays until every record it holds is switched (`gc`).
        if !self.pending.is_empty() {
            self.store.inner.index.put_all(&self.pending)?;
            crash::at(CrashPoint::RepackIndexed);
        }
        self.pending.clear();
        Ok(())
    }

    /// Seals the last pack; returns how many packs were written.
    pub(crate) fn finish(&mut self) -> Result<u64, StoreError> {
        self.seal()?;
        Ok(self.written)
    }
}
