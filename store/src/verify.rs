//! Integrity check: every chunk a manifest references, and every base its
//! delta chain needs, is indexed, its pack exists, and its record decodes to
//! bytes with the right BLAKE3; every pack reads end to end with a matching
//! trailer. Problems name every dump hit, including through a delta's base.
//! Runs beside ingests, reads and gc: it takes the gc lock only to open one
//! pack at a time, and re-checks what it found missing if a gc ran meanwhile.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use crate::chunk::ChunkId;
use crate::delta::MAX_DELTA_DEPTH;
use crate::error::StoreError;
use crate::index::{Index, IndexEntry};
use crate::manifest;
use crate::pack::{self, PackId, RecordHeader};
use crate::reader::ChunkReader;
use crate::store::Store;

/// What kind of damage a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A manifest file cannot be read or parsed.
    UnreadableManifest,
    /// A referenced chunk has no index entry.
    MissingChunk,
    /// A referenced chunk's pack file does not exist.
    MissingPack,
    /// A referenced chunk's record is unreadable or decodes to other bytes.
    CorruptChunk,
    /// A pack file is damaged (header, record framing or trailer checksum).
    CorruptPack,
}

impl ProblemKind {
    /// The repair that applies, for the operator (one line; the affected
    /// dumps are listed beside it).
    pub fn repair(self) -> &'static str {
        match self {
            ProblemKind::UnreadableManifest => {
                "the dump cannot be restored: delete it (pgsnap catalog delete, or remove its manifest file)"
            }
            ProblemKind::MissingChunk => {
                "the index lacks a chunk: run `pgsnapman-worker store rebuild-index` (worker stopped); \
                 if verify still reports it, the data is lost: delete the affected dumps"
            }
            ProblemKind::MissingPack => {
                "a pack file is gone: run `pgsnapman-worker store rebuild-index` (worker stopped) in \
                 case another pack holds the chunk; if verify still reports it, delete the affected dumps"
            }
            ProblemKind::CorruptChunk | ProblemKind::CorruptPack => {
                "the data is damaged on disk: delete the affected dumps (their other chunks stay shared), \
                 then let gc reclaim the pack"
            }
        }
    }
}

/// One problem found by `verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyProblem {
    pub kind: ProblemKind,
    pub chunk: Option<ChunkId>,
    pub pack: Option<PackId>,
    /// One line describing the damage.
    pub detail: String,
    /// Every dump whose manifest references the damaged data, sorted.
    pub dumps: Vec<Uuid>,
}

/// The outcome of `verify`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub manifests: u64,
    /// Every dump whose manifest was read, sorted.
    pub dumps: Vec<Uuid>,
    pub packs: u64,
    /// Referenced chunks and the bases they need that were decoded and
    /// hash-checked.
    pub chunks_checked: u64,
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Every dump named by any problem, sorted and unique.
    pub fn affected_dumps(&self) -> Vec<Uuid> {
        let mut v: Vec<Uuid> = self
            .problems
            .iter()
            .flat_map(|p| p.dumps.iter().copied())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

impl Store {
    /// Checks the whole store; see the module doc. Never blocks ingests,
    /// reads or gc for longer than the opening of one pack file. Errors
    /// only on failures to do the check itself (e.g. cannot list a
    /// directory); damage goes into the report.
    ///
    /// What it reads may change under it: a gc may delete the chunks of a
    /// dump deleted meanwhile (and their packs), or move live chunks to a
    /// new pack (repack). So when a gc swept during the run, every problem
    /// found is checked again as the store is now: dropped if no dump that
    /// needs the data is left, or if the chunk now reads back intact.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let inner = &self.inner;
        let generation = inner.gc_generation.load(Ordering::SeqCst);
        let mut report = VerifyReport::default();

        // Which dumps use which chunk.
        let mut users: HashMap<ChunkId, Vec<Uuid>> = HashMap::new();
        for (dump, path) in inner.list_manifest_paths()? {
            report.manifests += 1;
            match inner.read_manifest(&path) {
                Ok(m) => {
                    report.dumps.push(dump);
                    for c in m.chunk_refs() {
                        let u = users.entry(c.id).or_default();
                        if u.last() != Some(&dump) {
                            u.push(dump);
                        }
                    }
                }
                // Deleted between the listing and the read (a deletion may
                // run beside verify): not a problem.
                Err(StoreError::Io { error, .. })
                    if error.kind() == std::io::ErrorKind::NotFound =>
                {
                    report.manifests -= 1;
                }
                Err(err) => report.problems.push(VerifyProblem {
                    kind: ProblemKind::UnreadableManifest,
                    chunk: None,
                    pack: None,
                    detail: err.to_string(),
                    dumps: vec![dump],
                }),
            }
        }
        let needed = Needed::collect(&inner.index, &users, &mut report)?;
        let users = needed.users;
        let dumps_of = |id: &ChunkId| users.get(id).cloned().unwrap_or_default();
        let based_on = needed.based_on;
        let mut expected = needed.expected;
        let mut reader = ChunkReader::new(std::sync::Arc::clone(inner));
        let mut check =
            |header: &RecordHeader, stored: &[u8], path: &std::path::Path, offset: u64| {
                match reader.decode(header, stored, path, offset) {
                    Ok(_) => Ok(()),
                    // The base failed: it is checked (and reported, naming this
                    // delta's dumps too) on its own.
                    Err(StoreError::CorruptChunk { chunk, .. }) if chunk != header.chunk => Ok(()),
                    Err(err) => Err(err.to_string()),
                }
            };

        // Scan every pack; check the referenced records on the way.
        let packs = inner.list_packs()?;
        let mut vanished = Vec::new();
        for (pack_id, _) in &packs {
            inner.hook("verify.pack");
            let path = inner.pack_path(*pack_id);
            let want = expected.remove(pack_id).unwrap_or_default();
            // Opened under the gc read lock, then read without it: the open
            // handle keeps reading if a gc unlinks the file (packs are
            // immutable).
            let opened = if inner.remote.is_some() {
                // S3: check the bucket's bytes, not the cache's copy.
                let _gc = inner.gc_read();
                match inner.fetch_pack(*pack_id, false) {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                }
            } else {
                let _gc = inner.gc_read();
                File::open(&path)
            };
            let file = match opened {
                Ok(f) => f,
                // Deleted by a gc since the listing: its records are
                // reported missing below, and re-checked.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    vanished.push((*pack_id, want));
                    continue;
                }
                Err(e) => {
                    report.packs += 1;
                    report.problems.push(VerifyProblem {
                        kind: ProblemKind::CorruptPack,
                        chunk: None,
                        pack: Some(*pack_id),
                        detail: format!("cannot open {}: {e}", path.display()),
                        dumps: dumps_of_all(&want, &dumps_of),
                    });
                    continue;
                }
            };
            report.packs += 1;
            let mut checked: HashSet<u64> = HashSet::new();
            let mut chunk_problems = Vec::new();
            let scanned = pack::scan_pack_file(&file, &path, |offset, header, stored| {
                let Some((id, e)) = want.get(&offset) else {
                    return Ok(());
                };
                checked.insert(offset);
                let result = if *header != e.record_header(*id) {
                    Err(format!(
                        "record at offset {offset} is chunk {} ({} stored bytes), index expects {id} ({})",
                        header.chunk, header.stored_len, e.stored_len
                    ))
                } else {
                    check(header, stored, &path, offset)
                };
                if let Err(detail) = result {
                    chunk_problems.push((*id, detail));
                }
                Ok(())
            });
            if let Err(err) = scanned {
                report.problems.push(VerifyProblem {
                    kind: ProblemKind::CorruptPack,
                    chunk: None,
                    pack: Some(*pack_id),
                    detail: err.to_string(),
                    dumps: dumps_of_all(&want, &dumps_of),
                });
            }
            // Records the scan did not reach (it stops at broken framing):
            // check them one by one at their indexed offsets.
            let rest: Vec<&(ChunkId, IndexEntry)> = want
                .iter()
                .filter(|(o, _)| !checked.contains(*o))
                .map(|(_, v)| v)
                .collect();
            for (id, e) in rest {
                let header = e.record_header(*id);
                let r = pack::read_record(&file, &path, e.offset, &header)
                    .map_err(|err| err.to_string())
                    .and_then(|s| check(&header, &s, &path, e.offset));
                if let Err(detail) = r {
                    chunk_problems.push((*id, detail));
                }
            }
            report.chunks_checked += want.len() as u64;
            for (id, detail) in chunk_problems {
                report.problems.push(VerifyProblem {
                    kind: ProblemKind::CorruptChunk,
                    chunk: Some(id),
                    pack: Some(*pack_id),
                    detail: with_deltas(detail, based_on.get(&id)),
                    dumps: dumps_of(&id),
                });
            }
        }

        // Index entries of referenced chunks pointing at packs that are gone.
        for (pack_id, want) in expected.into_iter().chain(vanished) {
            for (id, _) in want.values() {
                report.problems.push(VerifyProblem {
                    kind: ProblemKind::MissingPack,
                    chunk: Some(*id),
                    pack: Some(pack_id),
                    detail: with_deltas(
                        format!("chunk {id} is indexed in pack {pack_id}, which does not exist"),
                        based_on.get(id),
                    ),
                    dumps: dumps_of(id),
                });
            }
        }
        if inner.gc_generation.load(Ordering::SeqCst) != generation {
            let found = std::mem::take(&mut report.problems);
            for p in found {
                match self.recheck(p, &mut reader) {
                    Recheck::Gone => {}
                    Recheck::ReadsBack => report.chunks_checked += 1,
                    Recheck::Still(p) => report.problems.push(p),
                }
            }
        }
        Ok(report)
    }

    /// Checks a problem again after a gc ran during verify, against the
    /// store as it is now (a pack removed or a chunk moved by the gc).
    fn recheck(&self, mut p: VerifyProblem, reader: &mut ChunkReader) -> Recheck {
        let dir = &self.inner.manifests_dir;
        let had_dumps = !p.dumps.is_empty();
        p.dumps
            .retain(|d| manifest::existing_manifest(dir, *d).is_some());
        if had_dumps && p.dumps.is_empty() {
            return Recheck::Gone;
        }
        match (p.kind, p.chunk, p.pack) {
            (ProblemKind::UnreadableManifest, _, _) => {
                let readable = p.dumps.first().is_some_and(|d| {
                    manifest::existing_manifest(dir, *d)
                        .is_some_and(|p| self.inner.read_manifest(&p).is_ok())
                });
                if readable {
                    Recheck::Gone
                } else {
                    Recheck::Still(p)
                }
            }
            (ProblemKind::CorruptPack, None, Some(pack)) => {
                if self.inner.pack_path(pack).exists()
                    || self
                        .inner
                        .list_packs()
                        .is_ok_and(|l| l.iter().any(|(id, _)| *id == pack))
                {
                    Recheck::Still(p)
                } else {
                    Recheck::Gone
                }
            }
            (_, Some(chunk), _) => match reader.read(chunk) {
                Ok(Some(_)) => Recheck::ReadsBack,
                _ => Recheck::Still(p),
            },
            _ => Recheck::Still(p),
        }
    }
}

/// What a problem is once checked again.
enum Recheck {
    /// No dump needs the data any more (or the file is gone for good).
    Gone,
    /// The chunk reads back intact now, hash-checked (it was moved).
    ReadsBack,
    /// Still damaged, naming the dumps that are left.
    Still(VerifyProblem),
}

/// Every dump that needs one of a pack's expected records, sorted.
fn dumps_of_all(
    want: &HashMap<u64, (ChunkId, IndexEntry)>,
    dumps_of: &impl Fn(&ChunkId) -> Vec<Uuid>,
) -> Vec<Uuid> {
    let mut dumps: Vec<Uuid> = want.values().flat_map(|(id, _)| dumps_of(id)).collect();
    dumps.sort();
    dumps.dedup();
    dumps
}

/// What verify must check: the referenced chunks and their delta chains.
struct Needed {
    /// Every dump that needs a chunk, directly or as (part of) a base; sorted.
    users: HashMap<ChunkId, Vec<Uuid>>,
    /// How many needed delta chunks are decoded directly against a base.
    based_on: HashMap<ChunkId, u64>,
    /// pack → offset → the chunk indexed there.
    expected: HashMap<PackId, HashMap<u64, (ChunkId, IndexEntry)>>,
}

impl Needed {
    /// Looks up every referenced chunk and walks its delta chain, so that a
    /// base is checked once and its problems name the dumps of every delta
    /// decoded against it. Missing entries and over-long chains go into
    /// `report`.
    fn collect(
        index: &Index,
        direct: &HashMap<ChunkId, Vec<Uuid>>,
        report: &mut VerifyReport,
    ) -> Result<Needed, StoreError> {
        let mut entries: HashMap<ChunkId, Option<IndexEntry>> = HashMap::new();
        let mut users = direct.clone();
        let mut based_on: HashMap<ChunkId, u64> = HashMap::new();
        let mut referenced: Vec<&ChunkId> = direct.keys().collect();
        referenced.sort();
        for id in referenced {
            let dumps = &direct[id];
            let mut cur = *id;
            for depth in 0..=usize::from(MAX_DELTA_DEPTH) + 1 {
                let entry = match entries.get(&cur) {
                    Some(e) => *e,
                    None => {
                        let e = index.get(&cur)?;
                        entries.insert(cur, e);
                        e
                    }
                };
                if cur != *id {
                    users.entry(cur).or_default().extend(dumps);
                }
                let Some(entry) = entry else { break };
                let Some(base) = entry.delta_base() else {
                    break;
                };
                if depth == usize::from(MAX_DELTA_DEPTH) {
                    report.problems.push(VerifyProblem {
                        kind: ProblemKind::CorruptChunk,
                        chunk: Some(*id),
                        pack: Some(entry.pack),
                        detail: format!("delta chain longer than {MAX_DELTA_DEPTH} records"),
                        dumps: dumps.clone(),
                    });
                    break;
                }
                cur = base;
            }
        }
        for u in users.values_mut() {
            u.sort();
            u.dedup();
        }
        let mut expected: HashMap<PackId, HashMap<u64, (ChunkId, IndexEntry)>> = HashMap::new();
        let mut ids: Vec<(&ChunkId, &Option<IndexEntry>)> = entries.iter().collect();
        ids.sort_by_key(|(id, _)| **id);
        for (id, e) in ids {
            match e {
                Some(e) => {
                    if let Some(base) = e.delta_base() {
                        *based_on.entry(base).or_default() += 1;
                    }
                    expected
                        .entry(e.pack)
                        .or_default()
                        .insert(e.offset, (*id, *e));
                }
                None => report.problems.push(VerifyProblem {
                    kind: ProblemKind::MissingChunk,
                    chunk: Some(*id),
                    pack: None,
                    detail: with_deltas(
                        format!("chunk {id} is not in the index"),
                        based_on.get(id),
                    ),
                    dumps: users.get(id).cloned().unwrap_or_default(),
                }),
            }
        }
        based_on.retain(|_, n| *n > 0);
        Ok(Needed {
            users,
            based_on,
            expected,
        })
    }
}

/// Adds "N delta chunks are decoded against it" to a problem's detail.
fn with_deltas(detail: String, deltas: Option<&u64>) -> String {
    match deltas {
        Some(n) if *n > 0 => format!("{detail}; the base of {n} delta chunk(s)"),
        _ => detail,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Cursor;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex, mpsc};
    use std::time::Duration;

    use rand::rngs::StdRng;
    use rand::{RngCore, SeedableRng};

    use super::*;
    use crate::{ChunkParams, ManifestMeta, StoreOptions};

    /// Deadlock guard, not a timing assertion: a step that waits forever
    /// (as gc behind a whole-run verify did) fails the test instead of
    /// hanging it; passing steps take well under a second.
    const STUCK: Duration = Duration::from_secs(60);

    pub(crate) fn opts() -> StoreOptions {
        StoreOptions {
            pack_target_bytes: 1 << 20,
            chunking: ChunkParams {
                min_bytes: 4 * 1024,
                avg_bytes: 16 * 1024,
                max_bytes: 64 * 1024,
                normalization: 0,
            },
            ..StoreOptions::default()
        }
    }

    pub(crate) fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    pub(crate) fn store_dump(store: &Store, data: &[u8]) -> Uuid {
        let dump = Uuid::now_v7();
        let mut ingest = store.begin(dump).unwrap();
        ingest.add_file("data", Cursor::new(data)).unwrap();
        let meta: ManifestMeta = serde_json::from_value(serde_json::json!({
            "job_id": 1, "task_id": 0, "host": "h", "port": 5432, "database": "d",
            "schema": "", "dump_type": "FULL", "format": "CUSTOM",
            "server_version": "15", "client_version": "15",
            "started_at": "2026-11-24T01:00:00Z", "finished_at": "2026-11-24T01:05:00Z",
            "restore_metadata": null
        }))
        .unwrap();
        ingest.finish(meta).unwrap();
        dump
    }

    /// Runs `f` on its own thread; fails the test if it does not return.
    fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(STUCK)
            .unwrap_or_else(|_| panic!("{what} did not complete: blocked behind verify?"))
    }

    /// Issue 12, item 7: verify held the gc read lock for its whole run, so
    /// a gc waited for all of it and, waiting, blocked every new reader.
    /// Now, with a verify stopped half-way (before its first pack), a gc
    /// deletes and repacks the packs it is about to read, and an ingest and
    /// a read complete; the verify then finishes clean, having re-checked
    /// what the gc moved or removed.
    #[test]
    fn verify_in_progress_blocks_neither_gc_nor_ingest_nor_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        let a_data = bytes(1, 600_000);
        let mut b_data = a_data[..400_000].to_vec();
        b_data.extend(bytes(2, 200_000));
        let a = store_dump(&store, &a_data);
        let b = store_dump(&store, &b_data);

        let (reached_tx, reached_rx) = mpsc::channel();
        let (resume_tx, resume_rx) = mpsc::channel::<()>();
        let resume_rx = Mutex::new(resume_rx);
        let first = AtomicBool::new(true);
        *store.inner.hook.lock().unwrap() = Some(Arc::new(move |at| {
            if at == "verify.pack" && first.swap(false, Ordering::SeqCst) {
                let _ = reached_tx.send(());
                let _ = resume_rx.lock().unwrap().recv();
            }
        }));
        let verifier = {
            let s = store.clone();
            std::thread::spawn(move || s.verify())
        };
        reached_rx
            .recv_timeout(STUCK)
            .expect("verify reaches its first pack");

        store.delete_dump(a).unwrap();
        let s = store.clone();
        let gc = bounded("gc", move || s.gc(1.0)).unwrap();
        assert!(gc.index_entries_removed > 0, "{gc:?}");
        assert!(gc.packs_repacked > 0, "{gc:?}");
        let s = store.clone();
        let c_data = bytes(3, 300_000);
        let c = bounded("ingest", move || store_dump(&s, &c_data));
        let s = store.clone();
        let read = bounded("read", move || {
            let mut out = Vec::new();
            s.read_file(b, "data", &mut out).map(|_| out)
        })
        .unwrap();
        assert!(read == b_data, "dump b reads back changed");

        resume_tx.send(()).unwrap();
        let report = verifier.join().unwrap().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert!(report.dumps.contains(&b), "{:?}", report.dumps);
        // Every chunk b needs was re-read where the repack moved it.
        assert!(report.chunks_checked > 0);

        let mut now = vec![b, c];
        now.sort();
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.dumps, now);
    }

    /// A problem verify found stays reported after a gc ran meanwhile when
    /// the damage is still there and a dump still needs it.
    #[test]
    fn recheck_keeps_real_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts()).unwrap();
        let a = store_dump(&store, &bytes(4, 200_000));
        let (id, entry) = {
            let m = store.manifest(a).unwrap();
            let id = m.files[0].chunks[0].id;
            (id, store.inner.index.get(&id).unwrap().unwrap())
        };
        store.inner.index.delete_all(&[id]).unwrap();
        let mut reader = ChunkReader::new(Arc::clone(&store.inner));
        let missing = VerifyProblem {
            kind: ProblemKind::MissingChunk,
            chunk: Some(id),
            pack: Some(entry.pack),
            detail: "gone".to_string(),
            dumps: vec![a],
        };
        assert!(matches!(
            store.recheck(missing.clone(), &mut reader),
            Recheck::Still(p) if p == missing
        ));
        store.delete_dump(a).unwrap();
        assert!(matches!(store.recheck(missing, &mut reader), Recheck::Gone));
    }
}
