//! Compression after the dump: an ingest may store new whole chunks
//! uncompressed (a zstd frame of raw blocks, `rawframe`) so that a dump of
//! new data does not wait for zstd; each such pack is marked in the index in
//! the batch that indexes it, and `Store::compress_later` rewrites the
//! marked packs with those records compressed, the way gc repacks
//! (docs/store.md, "Compression after the dump").

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;

use crate::chunk::ChunkId;
use crate::crash::{self, CrashPoint};
use crate::error::StoreError;
use crate::gc::{Repacker, remove_packs};
use crate::index::{IndexEntry, LaterDelta};
use crate::pack::PackId;
use crate::store::Store;
use uuid::Uuid;

/// What a `compress_later` run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaterReport {
    /// Marked packs rewritten (their records now in new packs).
    pub packs_rewritten: u64,
    /// Marks dropped without work: the pack was gone (repacked or deleted by
    /// gc).
    pub marks_dropped: u64,
    /// Old packs deleted: those rewritten now, and marked packs no entry
    /// points into any more (rewritten by an earlier pass).
    pub packs_removed: u64,
    /// Old packs kept because a read-only open may still read them
    /// (`readers`); a later pass deletes them.
    pub packs_kept_for_readers: u64,
    /// Marked packs kept as they are because a record in them is corrupt
    /// (their mark too: run verify).
    pub packs_skipped_corrupt: u64,
    /// Marked packs left for the next run because a dump started.
    pub packs_left: u64,
    pub records_compressed: u64,
    /// Of `records_compressed`, those encoded as deltas against the bases
    /// their ingest chose (the rest compressed whole).
    pub deltas_encoded: u64,
    /// Stored bytes of the compressed records before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Per dump whose ingest wrote a rewritten pack (the mark names it), the
    /// stored bytes this run saved, in dump order.
    pub saved_by_dump: Vec<(Uuid, u64)>,
}

impl Store {
    /// Packs an ingest marked for compression (see the module doc), oldest
    /// first. Cheap when there are none (one index seek).
    pub fn later_packs(&self) -> Result<usize, StoreError> {
        Ok(self.inner.index.later_packs()?.len())
    }

    /// Chunks stored uncompressed whose delta, against the base their ingest
    /// chose, the next pass encodes (one index scan).
    pub fn later_deltas(&self) -> Result<usize, StoreError> {
        Ok(self.inner.index.later_deltas()?.len())
    }

    /// The dumps whose ingests wrote a pack still marked for compression.
    pub fn later_dumps(&self) -> Result<HashSet<Uuid>, StoreError> {
        Ok(self
            .inner
            .index
            .later_packs()?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    /// Rewrites every pack marked by an ingest that stored chunks
    /// uncompressed, compressing those records (`StoreOptions::zstd_level`)
    /// and copying the others as they are; then deletes the old packs and
    /// their marks. Runs as one gc does (one at a time with gc); ingests and
    /// reads go on meanwhile. Stops between packs when a dump starts storing
    /// (`packs_left`): call it again once the store is idle.
    ///
    /// Crash safety, as gc's repack: the new pack is sealed and indexed
    /// (synced) before the old one is deleted, and the mark goes last. A
    /// crash leaves either the old pack in use with its mark (done again),
    /// or a marked old pack nothing points to, which the next pass (or gc)
    /// deletes. While a read-only open may still read the old packs
    /// (`readers`) they stay, marked, for a later pass.
    pub fn compress_later(&self) -> Result<LaterReport, StoreError> {
        self.writable()?;
        let inner = &self.inner;
        let mut report = LaterReport::default();
        let marked = inner.index.later_packs()?;
        if marked.is_empty() {
            return Ok(report);
        }
        let _one_gc = inner.gc_running();
        // Under the gc lock no gc runs, and ingests only add entries for
        // chunks not indexed yet: the entries read here stay true until this
        // run switches them.
        let wanted: HashSet<PackId> = marked.iter().map(|(p, _)| *p).collect();
        let mut entries: HashMap<PackId, Vec<(ChunkId, IndexEntry)>> = HashMap::new();
        inner.index.for_each(|id, e| {
            if wanted.contains(&e.pack) {
                entries.entry(e.pack).or_default().push((id, e));
            }
            Ok(())
        })?;
        let existing: HashSet<PackId> = inner.list_packs()?.into_iter().map(|(p, _)| p).collect();
        // Planned deltas (`LaterDelta`) of chunks in marked packs; the others
        // are stale (the chunk is gone, or a gc repack compressed it whole)
        // and are forgotten with the marks.
        let in_marked: HashSet<ChunkId> = entries.values().flatten().map(|(id, _)| *id).collect();
        let (plans, mut stale_plans): (HashMap<ChunkId, LaterDelta>, Vec<ChunkId>) = {
            let mut live = HashMap::new();
            let mut stale = Vec::new();
            for (id, plan) in inner.index.later_deltas()? {
                if in_marked.contains(&id) {
                    live.insert(id, plan);
                } else {
                    stale.push(id);
                }
            }
            (live, stale)
        };
        let mut repack = Repacker::new(self, Some(inner.opts.zstd_level)).with_later_deltas(plans);
        // `done`: marks to forget; `unused`: marked packs no entry points
        // into (rewritten by an earlier pass and kept for a reader, or all
        // of whose chunks another ingest indexed first).
        let (mut rewritten, mut done, mut unused) = (Vec::new(), Vec::new(), Vec::new());
        let mut saved: BTreeMap<Uuid, u64> = BTreeMap::new();
        for (pack, dump) in &marked {
            if !existing.contains(pack) {
                report.marks_dropped += 1;
                done.push(*pack);
                continue;
            }
            let Some(mut es) = entries.remove(pack) else {
                unused.push(*pack);
                continue;
            };
            if inner.ingest_running() {
                report.packs_left += 1;
                continue;
            }
            // In the order they were written: the new pack reads like the old.
            es.sort_by_key(|(_, e)| e.offset);
            let (from, to) = (repack.compressed_from, repack.compressed_to);
            if repack.copy_pack(*pack, &es)? {
                let by = (repack.compressed_from - from).saturating_sub(repack.compressed_to - to);
                *saved.entry(*dump).or_default() += by;
                // Encoded now (or compressed whole): their plans go with the
                // pack's mark.
                stale_plans.extend(es.iter().map(|(id, _)| *id).filter(|id| repack.planned(id)));
                tracing::debug!(pack_id = %pack, dump_id = %dump, chunks = es.len(), "compressed a pack stored uncompressed");
                rewritten.push(*pack);
            } else {
                report.packs_skipped_corrupt += 1;
            }
        }
        repack.finish()?;
        let old: Vec<PackId> = rewritten.iter().chain(&unused).copied().collect();
        if !old.is_empty() {
            // As gc: a reader that looked a moved chunk up before the switch
            // has opened its old pack by now, and a verify re-checks. A
            // read-only open in another process may still look chunks up
            // where they were (`readers`): then the packs stay, marked.
            let _gc = inner.gc_write();
            inner.gc_generation.fetch_add(1, Ordering::SeqCst);
            match crate::readers::none_reading(&inner.root) {
                Some(_no_reader) => {
                    remove_packs(
                        self,
                        &old,
                        CrashPoint::LaterOldRemoved,
                        CrashPoint::LaterDirFsync,
                    )?;
                    report.packs_removed = old.len() as u64;
                    done.extend(old);
                }
                None => {
                    tracing::info!(
                        packs = old.len(),
                        "a read-only open of the store may still read the packs compressed into new ones: they stay until a later pass"
                    );
                    report.packs_kept_for_readers = old.len() as u64;
                }
            }
        }
        // A rewritten pack's plans go even while its old copy stays for a
        // reader: the chunks' entries already name the new records.
        inner.index.forget_later(&done, &stale_plans)?;
        if !done.is_empty() || !stale_plans.is_empty() {
            crash::at(CrashPoint::LaterMarksForgotten);
        }
        {
            let mut pending = inner.later_deltas();
            for id in &stale_plans {
                pending.remove(id);
            }
        }
        report.packs_rewritten = rewritten.len() as u64;
        report.records_compressed = repack.compressed;
        report.deltas_encoded = repack.deltas;
        report.bytes_before = repack.compressed_from;
        report.bytes_after = repack.compressed_to;
        report.saved_by_dump = saved.into_iter().filter(|(_, b)| *b > 0).collect();
        tracing::info!(?report, "compressed what dumps stored uncompressed");
        Ok(report)
    }
}
