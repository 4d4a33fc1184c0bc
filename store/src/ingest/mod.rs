//! `Ingest`: storing one dump. Cuts each file into content-defined chunks,
//! stores the chunks the store does not have yet (as a zstd delta against a
//! similar stored chunk when one is found, else whole; into this ingest's own
//! pack), and on `finish` seals, indexes and writes the manifest — in that
//! order. Dropping an unfinished ingest aborts it. The caller's thread only
//! reads (`feed.rs`); chunking, encoding and writing (`sink.rs`) run on
//! threads of lower priority, fed through bounded queues (`pipeline.rs`).

mod claims;
mod fallback;
pub(crate) mod feed;
mod pipeline;
mod position;
mod sink;
mod split;
mod window;

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;

use uuid::Uuid;

use crate::chunk::{ChunkId, Naming};
use crate::crash::{self, CrashPoint};
use crate::error::StoreError;
use crate::manifest::{self, ChunkRef, FileEntry, MANIFEST_FORMAT_VERSION, Manifest, ManifestMeta};
use crate::reader::FileReader;
use crate::resemblance::{self, Sketch};
use crate::shared::Inner;
use claims::Claims;
use pipeline::Jobs;
use position::{Previous, Walk};
use sink::{Base, Job, PackSink};
pub(crate) use sink::{LaterEncoder, seal};
use window::Window;

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

/// Raw bytes an ingest may store uncompressed for `Store::compress_later`:
/// see [`later_budget_for`]; reads the space free in `packs/` when it starts.
fn later_budget(inner: &Inner) -> u64 {
    let max = inner.opts.compress_later_max_bytes;
    let remote = inner.remote.is_some();
    let free = if max == 0 || remote {
        None
    } else {
        match nix::sys::statvfs::statvfs(&inner.packs_dir) {
            Ok(v) => Some(v.blocks_available().saturating_mul(v.fragment_size())),
            Err(e) => {
                tracing::debug!(
                    "cannot read the free space of the store, compressing every chunk now: {e}"
                );
                None
            }
        }
    };
    later_budget_for(max, remote, free)
}

/// The later budget from `StoreOptions::compress_later_max_bytes` (`max`,
/// 0 = off), whether the store has an object-storage remote and the bytes
/// free in `packs/` (`None`: unknown): at most a quarter of the free space
/// (the pass needs room for the compressed copy before it frees the raw
/// one), none on object storage (each pack would be uploaded twice), and
/// none when the free space is unknown.
fn later_budget_for(max: u64, remote: bool, free: Option<u64>) -> u64 {
    if max == 0 || remote {
        return 0;
    }
    free.map_or(0, |free| max.min(free / 4))
}

/// One dump being stored. `Send`; not shared between threads.
///
/// `add_file` runs a pipeline (`pipeline.rs`): the caller's thread reads the
/// source into a bounded read-ahead queue; a chunker thread cuts, hashes,
/// deduplicates, sketches and chooses bases (every index lookup and
/// registration happens there, in chunk order); encoder threads read bases
/// and compress; a writer thread appends the records in chunk order and
/// seals full packs. All but the caller's run at lower CPU priority; all end
/// before `add_file` returns.
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
    sink: PackSink,
    logical_bytes: u64,
    poisoned: bool,
    /// Super-features this dump's chunks claimed (`claims.rs`).
    claims: Claims,
    /// The job's previous dump, for positional bases (`position.rs`).
    previous: Option<Previous>,
    /// The manifest is durable (an abandoned ingest's sealed packs are
    /// garbage, `PackSink::sealed_any`).
    finished: bool,
}

impl Ingest {
    /// `previous`: the dump stored before this one by the same job, if any
    /// (a hint: a dump that is not there, or cannot be read, is ignored).
    pub(crate) fn new(
        inner: Arc<Inner>,
        dump_uuid: Uuid,
        previous: Option<Uuid>,
    ) -> Result<Ingest, StoreError> {
        let registration = inner.register(dump_uuid)?;
        let previous = previous.and_then(|p| Previous::load(&inner, p));
        if let Some(p) = &previous {
            tracing::info!(dump_id = %dump_uuid, previous = %p.dump(), chunks = p.len(), "storing after the job's previous dump");
        }
        Ok(Ingest {
            sink: PackSink::new(Arc::clone(&inner), dump_uuid, later_budget(&inner)),
            inner,
            dump_uuid,
            registration,
            files: Vec::new(),
            names: HashSet::new(),
            logical_bytes: 0,
            poisoned: false,
            claims: Claims::default(),
            previous,
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
        self.sink.new_stored_bytes
    }

    /// Stores one file, streaming from `r` (memory stays bounded by the
    /// chunker's max chunk size, the encoder queue and the pack buffer).
    /// Names are unique per dump. After an error the ingest is unusable;
    /// drop it.
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

    /// Runs the pipeline of `pipeline.rs` for one file.
    fn chunk_file(&mut self, name: &str, r: impl Read) -> Result<FileEntry, StoreError> {
        let cutter = Cutter {
            inner: &self.inner,
            registration: self.registration,
            dump_uuid: self.dump_uuid,
            claims: RefCell::new(&mut self.claims),
            walk: RefCell::new(self.previous.as_ref().map(|p| p.walk(name))),
            later_budget: Arc::clone(&self.sink.later_budget),
        };
        pipeline::store_file(
            &self.inner,
            self.dump_uuid,
            cutter,
            &mut self.sink,
            &mut self.logical_bytes,
            name,
            r,
        )
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
        let chunks: Arc<[_]> = entry.chunks.as_slice().into();
        self.sink.seal_current()?;
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
    /// this returns the dump is durable and complete (and the index flushed).
    pub fn finish(self, meta: ManifestMeta) -> Result<Manifest, StoreError> {
        let (m, flush) = self.finish_deferring_flush(meta)?;
        flush.run();
        Ok(m)
    }

    /// `finish`, leaving the index flush (which moves synced entries from
    /// the write-ahead log to a table file: space, not durability) to the
    /// caller, who can run it once the dump is reported.
    pub fn finish_deferring_flush(
        mut self,
        meta: ManifestMeta,
    ) -> Result<(Manifest, IndexFlush), StoreError> {
        if self.poisoned {
            return Err(StoreError::IngestPoisoned(self.dump_uuid));
        }
        let t0 = std::time::Instant::now();
        self.sink.seal_current()?;
        crash::at(CrashPoint::IngestSealed);
        let t_sealed = t0.elapsed();
        let m = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            dump_uuid: self.dump_uuid,
            meta,
            logical_bytes: self.logical_bytes,
            new_stored_bytes: self.sink.new_stored_bytes,
            files: std::mem::take(&mut self.files),
        };
        // The registration (dropped with `self`) keeps gc off these chunks
        // until the manifest, which then keeps them live, is durable.
        // S3: every pack is in the bucket already; the manifest follows, and
        // only then is it written locally (the dump exists for this store).
        let bytes = manifest::encode_with(&m, self.inner.crypto.as_deref())?;
        let name = manifest::file_name(&m);
        if self.inner.remote.is_some() {
            self.inner.upload_manifest(&name, &bytes)?;
        }
        crate::durable::write_atomic(&self.inner.manifests_dir.join(&name), &bytes)?;
        self.finished = true;
        let t_manifest = t0.elapsed();
        // Derived data: if this fails the dump still exists, and the next
        // `Store::open` writes the summary from the manifest.
        if let Err(e) = self
            .inner
            .index
            .put_dump(&m.dump_uuid, crate::shared::summary_of(&m))
        {
            tracing::warn!(dump_id = %m.dump_uuid, "cannot record the dump summary: {e}");
        }
        crash::at(CrashPoint::IngestSummary);
        tracing::debug!(dump_id = %m.dump_uuid, sealed_ms = t_sealed.as_secs_f64() * 1e3, manifest_ms = t_manifest.as_secs_f64() * 1e3, total_ms = t0.elapsed().as_secs_f64() * 1e3, "finish steps");
        tracing::info!(dump_id = %m.dump_uuid, logical_bytes = m.logical_bytes, new_stored_bytes = m.new_stored_bytes, full_chunks = self.sink.full_chunks, delta_chunks = self.sink.delta_chunks, later_chunks = self.sink.later_chunks, later_bytes = self.sink.later_bytes, "dump stored");
        let flush = IndexFlush {
            inner: Arc::clone(&self.inner),
            dump_uuid: m.dump_uuid,
        };
        Ok((m, flush))
    }
}

/// The index flush a finished ingest still owes (`finish_deferring_flush`).
#[must_use = "run it: without it a small store's write-ahead log keeps every entry"]
pub struct IndexFlush {
    inner: Arc<Inner>,
    dump_uuid: Uuid,
}

impl IndexFlush {
    /// The dump's entries leave the write-ahead log for a table file, where
    /// a feature entry overwritten within the dump takes no space
    /// (docs/store.md); a failure leaves them in the log, still valid.
    pub fn run(self) {
        if let Err(e) = self.inner.index.flush() {
            tracing::warn!(dump_id = %self.dump_uuid, "cannot flush the index: {e}");
        }
    }
}

/// The bases chosen for a new chunk (`Cutter::choose_base`).
struct Chosen {
    base: Base,
    /// The chunk of the previous dump the new chunk is taken to be.
    anchor: Option<ChunkId>,
    /// Tried when `base` gives no sure win (`fallback.rs`).
    fallback: Option<Base>,
}

/// The chunking side of an ingest: cuts, hashes, deduplicates, sketches and
/// chooses bases, registering every chunk it refers to.
struct Cutter<'a> {
    inner: &'a Inner,
    registration: u64,
    dump_uuid: Uuid,
    /// The ingest's claims; only the chunker's thread uses them.
    claims: RefCell<&'a mut Claims>,
    /// Where this file is in the previous dump (`position.rs`), if known.
    walk: RefCell<Option<Walk<'a>>>,
    /// Raw bytes the ingest may still store uncompressed (shared with the
    /// encoders): a chunk with a delta base takes from it here, in chunk
    /// order, so that no later chunk chooses it as a base.
    later_budget: Arc<std::sync::atomic::AtomicU64>,
}

impl Cutter<'_> {
    fn cut_file(
        &self,
        name: &str,
        window: &mut Window,
        logical_bytes: &mut u64,
        jobs: &mut Jobs<'_>,
    ) -> Result<FileEntry, StoreError> {
        let mut entry = FileEntry {
            name: name.to_string(),
            size: 0,
            chunks: Vec::new(),
        };
        let naming = self.inner.naming();
        let read_error = |error| StoreError::Io {
            context: format!("read {name} of dump {}", self.dump_uuid),
            error,
        };
        while let Some(raw) = window.next_chunk().map_err(read_error)? {
            // Nothing may be handed over for long (stored chunks, a batch
            // filling): a failed encoder or writer must still stop the read.
            jobs.check()?;
            let id = naming.id(raw);
            let new = self.inner.opts.max_delta_depth > 0 && !self.peek(id)?;
            if new && let Some(at) = self.split_as_before(&naming, raw) {
                for part in [&raw[..at], &raw[at..]] {
                    self.add(naming.id(part), part, None, &mut entry, logical_bytes, jobs)?;
                }
                continue;
            }
            let sketch = new.then(|| resemblance::sketch(raw, &self.inner.opts.features));
            if let Some(Some(sk)) = &sketch
                && let Some(split) = split::split_point(
                    &self.inner.index,
                    &naming,
                    raw,
                    sk,
                    &self.inner.opts.features,
                )?
            {
                let (head, tail) = raw.split_at(split.at);
                for (part, sketch) in [(head, split.head), (tail, split.tail)] {
                    let id = naming.id(part);
                    self.add(
                        id,
                        part,
                        Some(Some(sketch)),
                        &mut entry,
                        logical_bytes,
                        jobs,
                    )?;
                }
                continue;
            }
            self.add(id, raw, sketch, &mut entry, logical_bytes, jobs)?;
        }
        Ok(entry)
    }

    /// References chunk `id` (bytes `raw`) in `entry` and, unless the store
    /// has it, sends a copy to the encoders with its base. `sketched`: its
    /// sketch if already computed (`Some(None)`: it has none).
    fn add(
        &self,
        id: ChunkId,
        raw: &[u8],
        sketched: Option<Option<Sketch>>,
        entry: &mut FileEntry,
        logical_bytes: &mut u64,
        jobs: &mut Jobs<'_>,
    ) -> Result<(), StoreError> {
        // max chunk size is at most 16 MiB (validated), so this fits.
        let len = u32::try_from(raw.len()).map_err(|_| StoreError::Invalid {
            what: "chunk length",
            detail: format!("{} bytes", raw.len()),
        })?;
        entry.size += u64::from(len);
        *logical_bytes += u64::from(len);
        entry.chunks.push(ChunkRef { id, len });
        if self.reference(id)? {
            self.step(Some(&id));
            return Ok(());
        }
        let sketch = match sketched {
            Some(s) => s,
            None if self.inner.opts.max_delta_depth > 0 => {
                resemblance::sketch(raw, &self.inner.opts.features)
            }
            None => None,
        };
        let chosen = match &sketch {
            Some(sk) => self.choose_base(id, sk)?,
            None => None,
        };
        self.step(chosen.as_ref().and_then(|c| c.anchor.as_ref()));
        let (base, fallback) = chosen.map_or((None, None), |c| (Some(c.base), c.fallback));
        let claim = sketch
            .as_ref()
            .map_or(0, |sk| self.claims.borrow_mut().claim(sk));
        let defer = base.is_some() && self.defer_delta(id, raw.len());
        jobs.send(Job {
            id,
            raw: raw.to_vec(),
            sketch,
            claim,
            base,
            fallback,
            defer,
        })
    }

    /// Whether the chunk `id` with a delta base is stored uncompressed, its
    /// delta left to `Store::compress_later` (while the budget lasts). It
    /// is then never chosen as a base until the pass has encoded it
    /// (`Inner::later_deltas`): before, its depth is not known.
    fn defer_delta(&self, id: ChunkId, len: usize) -> bool {
        let taken = self
            .later_budget
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |left| left.checked_sub(len as u64),
            )
            .is_ok();
        if taken {
            self.inner.later_deltas().insert(id);
        }
        taken
    }

    /// Whether the store has `id` (indexed, or written by this ingest),
    /// without registering it: a hint for whether to sketch it now.
    fn peek(&self, id: ChunkId) -> Result<bool, StoreError> {
        let mine = self
            .inner
            .registry()
            .ingests
            .get(&self.registration)
            .is_some_and(|(_, set)| set.contains(&id));
        Ok(mine || self.inner.index.get(&id)?.is_some())
    }

    /// Registers `id` as used by this ingest. Returns true when the store
    /// already has it (indexed, or written earlier by this ingest).
    fn reference(&self, id: ChunkId) -> Result<bool, StoreError> {
        // Under the gc read lock, so no gc can run between the index lookup
        // and the registration: a chunk found in the index stays there until
        // this ingest finishes or is dropped.
        let _gc = self.inner.gc_read();
        let already_mine = self
            .inner
            .registry()
            .ingests
            .get(&self.registration)
            .is_some_and(|(_, set)| set.contains(&id));
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

    /// Where to cut the new chunk `raw` so that it is the two chunks at its
    /// place in the previous dump, when it is exactly them: that dump split
    /// the same bytes (`split.rs`), and cutting them the same way stores
    /// nothing again. One hash of the first part, only for a new chunk
    /// whose two positional chunks add up to its length.
    fn split_as_before(&self, naming: &Naming, raw: &[u8]) -> Option<usize> {
        let (first, at) = self.walk.borrow().as_ref()?.split_pair(raw.len())?;
        (at > 0 && at < raw.len() && naming.id(&raw[..at]) == first).then_some(at)
    }

    /// Moves the walk in the previous dump past one chunk (`Walk::step`).
    fn step(&self, anchor: Option<&ChunkId>) {
        if let Some(w) = self.walk.borrow_mut().as_mut() {
            w.step(anchor);
        }
    }

    /// Picks the base for a new chunk: the first usable candidate of
    /// `position::ordered` (the indexed chunk its super-features name most
    /// often, or the chunk at its place in the previous dump), if its chain
    /// leaves room for one more delta (depth below `max_delta_depth`), else
    /// the FULL root of that chain; with the candidate if it anchors the
    /// walk in the previous dump (`position::ordered`). With a positional
    /// candidate, the next usable one is chosen too, as fallback
    /// (`fallback.rs`). The bases are registered as used by this ingest
    /// under the gc read lock, so gc keeps them (and, through them, their
    /// chains) until the ingest ends.
    fn choose_base(&self, id: ChunkId, sketch: &Sketch) -> Result<Option<Chosen>, StoreError> {
        let inner = self.inner;
        let _gc = inner.gc_read();
        let positional = self.walk.borrow().as_ref().and_then(Walk::candidate);
        let wanted = if positional.is_some() { 2 } else { 1 };
        let candidates = position::ordered(inner.index.candidates(sketch)?, positional);
        let mut chosen: Vec<(Base, Option<ChunkId>)> = Vec::with_capacity(wanted);
        for (candidate, anchors) in candidates {
            if candidate == id || inner.later_deltas().contains(&candidate) {
                continue;
            }
            // A chain with a missing link or too long is not used as a base
            // (verify reports the damage).
            let Some((depth, root)) = inner.index.chain_of(candidate)? else {
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
            if chosen.iter().any(|(b, _)| b.id == base.id) {
                continue;
            }
            let mut reg = inner.registry();
            if let Some((_, set)) = reg.ingests.get_mut(&self.registration) {
                set.insert(base.id);
            }
            chosen.push((base, anchors.then_some(candidate)));
            if chosen.len() == wanted {
                break;
            }
        }
        let mut chosen = chosen.into_iter();
        Ok(chosen.next().map(|(base, anchor)| Chosen {
            base,
            anchor,
            fallback: chosen.next().map(|(b, _)| b),
        }))
    }
}

impl Drop for Ingest {
    /// Unregisters; an unsealed pack is removed by `PackWriter`'s drop (with
    /// the sink). Chunks of packs already sealed stay unreferenced until gc,
    /// and the store's garbage flag says so.
    fn drop(&mut self) {
        if self.sink.sealed_any && !self.finished {
            self.inner
                .garbage
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.unregister(self.registration);
    }
}

#[cfg(test)]
mod tests {
    use super::later_budget_for;

    const GIB: u64 = 1 << 30;

    #[test]
    fn later_budget_is_off_at_zero() {
        assert_eq!(later_budget_for(0, false, Some(100 * GIB)), 0);
        assert_eq!(later_budget_for(0, false, Some(u64::MAX)), 0);
    }

    #[test]
    fn later_budget_is_the_max_when_free_space_is_large() {
        assert_eq!(later_budget_for(GIB, false, Some(100 * GIB)), GIB);
        assert_eq!(later_budget_for(GIB, false, Some(4 * GIB)), GIB);
    }

    #[test]
    fn later_budget_is_a_quarter_of_free_space_when_small() {
        assert_eq!(later_budget_for(GIB, false, Some(2 * GIB)), GIB / 2);
        assert_eq!(later_budget_for(u64::MAX, false, Some(1000)), 250);
        assert_eq!(later_budget_for(GIB, false, Some(3)), 0);
        assert_eq!(later_budget_for(GIB, false, Some(0)), 0);
    }

    #[test]
    fn later_budget_is_zero_with_a_remote() {
        assert_eq!(later_budget_for(GIB, true, Some(100 * GIB)), 0);
        assert_eq!(later_budget_for(u64::MAX, true, Some(u64::MAX)), 0);
    }

    #[test]
    fn later_budget_is_zero_when_free_space_is_unknown() {
        assert_eq!(later_budget_for(GIB, false, None), 0);
    }

    #[test]
    fn later_budget_does_not_overflow_at_max_free_space() {
        assert_eq!(
            later_budget_for(u64::MAX, false, Some(u64::MAX)),
            u64::MAX / 4
        );
        assert_eq!(later_budget_for(GIB, false, Some(u64::MAX)), GIB);
    }
}
