//! Integrity check: every chunk a manifest references is indexed, its pack
//! exists, and its record decompresses to bytes with the right BLAKE3; every
//! pack reads end to end with a matching trailer. Problems name the dumps hit.

use std::collections::{HashMap, HashSet};
use std::fs::File;

use uuid::Uuid;

use crate::chunk::ChunkId;
use crate::error::StoreError;
use crate::index::IndexEntry;
use crate::manifest;
use crate::pack::{self, PackId};
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
    /// Referenced chunks that were decompressed and hash-checked.
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
                Err(err) => report.problems.push(VerifyProblem {
                    kind: ProblemKind::UnreadableManifest,
                    chunk: None,
                    pack: None,
                    detail: err.to_string(),
                    dumps: vec![dump],
                }),
            }
        }
        for u in users.values_mut() {
            u.sort();
            u.dedup();
        }
        let dumps_of = |id: &ChunkId| users.get(id).cloned().unwrap_or_default();

        // Where each referenced chunk should be.
        let mut expected: HashMap<PackId, HashMap<u64, (ChunkId, IndexEntry)>> = HashMap::new();
        let mut referenced: Vec<&ChunkId> = users.keys().collect();
        referenced.sort();
        for id in referenced {
            match inner.index.get(id)? {
                Some(e) => {
                    expected
                        .entry(e.pack)
                        .or_default()
                        .insert(e.offset, (*id, e));
                }
                None => report.problems.push(VerifyProblem {
                    kind: ProblemKind::MissingChunk,
                    chunk: Some(*id),
                    pack: None,
                    detail: format!("chunk {id} is not in the index"),
                    dumps: dumps_of(id),
                }),
            }
        }

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
                    pack::decode_chunk(header, stored, &path, offset)
                        .map(|_| ())
                        .map_err(|err| err.to_string())
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
                                .and_then(|s| pack::decode_chunk(&header, &s, &path, e.offset));
                            if let Err(err) = r {
                                chunk_problems.push((*id, err.to_string()));
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
                    detail,
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
                    detail: format!(
                        "chunk {id} is indexed in pack {pack_id}, which does not exist"
                    ),
                    dumps: dumps_of(id),
                });
            }
        }
        Ok(report)
    }
}
