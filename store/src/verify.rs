//! Integrity check: every chunk a manifest references, and every base its
//! delta chain needs, is indexed, its pack exists, and its record decodes to
//! bytes with the right BLAKE3; every pack reads end to end with a matching
//! trailer. Problems name every dump hit, including through a delta's base.

use std::collections::{HashMap, HashSet};
use std::fs::File;

use uuid::Uuid;

use crate::chunk::ChunkId;
use crate::delta::MAX_DELTA_DEPTH;
use crate::error::StoreError;
use crate::index::{Index, IndexEntry};
use crate::manifest;
use crate::pack::{self, PackId, RecordHeader};
use crate::reader::{ChunkReader, GcLock};
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
    /// Checks the whole store; see the module doc. Runs under the gc read lock,
    /// so a gc waits for it. Errors only on failures to do the check itself
    /// (e.g. cannot list a directory); damage goes into the report.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let inner = &self.inner;
        let _gc = inner.gc_read();
        let mut report = VerifyReport::default();

        // Which dumps use which chunk.
        let mut users: HashMap<ChunkId, Vec<Uuid>> = HashMap::new();
        for (dump, path) in inner.list_manifest_paths()? {
            report.manifests += 1;
            match manifest::read_manifest(&path) {
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
        let mut reader = ChunkReader::new(std::sync::Arc::clone(inner), GcLock::Held);
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
        let present: HashSet<PackId> = packs.iter().map(|(id, _)| *id).collect();
        for (pack_id, _) in &packs {
            report.packs += 1;
            let path = inner.pack_path(*pack_id);
            let want = expected.remove(pack_id).unwrap_or_default();
            let mut checked: HashSet<u64> = HashSet::new();
            let mut chunk_problems = Vec::new();
            let scanned = pack::scan_pack(&path, |offset, header, stored| {
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
                let mut dumps: Vec<Uuid> = want.values().flat_map(|(id, _)| dumps_of(id)).collect();
                dumps.sort();
                dumps.dedup();
                report.problems.push(VerifyProblem {
                    kind: ProblemKind::CorruptPack,
                    chunk: None,
                    pack: Some(*pack_id),
                    detail: err.to_string(),
                    dumps,
                });
            }
            // Records the scan did not reach (it stops at broken framing):
            // check them one by one at their indexed offsets.
            let rest: Vec<&(ChunkId, IndexEntry)> = want
                .iter()
                .filter(|(o, _)| !checked.contains(*o))
                .map(|(_, v)| v)
                .collect();
            if !rest.is_empty() {
                match File::open(&path) {
                    Ok(file) => {
                        for (id, e) in rest {
                            let header = e.record_header(*id);
                            let r = pack::read_record(&file, &path, e.offset, &header)
                                .map_err(|err| err.to_string())
                                .and_then(|s| check(&header, &s, &path, e.offset));
                            if let Err(detail) = r {
                                chunk_problems.push((*id, detail));
                            }
                        }
                    }
                    Err(err) => {
                        for (id, _) in rest {
                            chunk_problems
                                .push((*id, format!("cannot open {}: {err}", path.display())));
                        }
                    }
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
        for (pack_id, want) in expected {
            debug_assert!(!present.contains(&pack_id));
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
        Ok(report)
    }
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
