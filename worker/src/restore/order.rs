//! Largest data first for a served `pg_restore -j`.
//!
//! pg_restore -j starts the ready items with the most data first: it takes
//! each entry's data length from the size of its file (directory format,
//! `_PrepParallelRestore`) or the gap between block offsets (custom format),
//! and breaks ties by the lower dump id. A served data file is a named pipe,
//! whose size is 0, so every entry ties and the order falls back to dump ids,
//! where the largest table may come last and run alone at the end.
//!
//! This module renumbers the entries of a directory-format toc.dat so that
//! dump-id order is the order pg_restore would have chosen from the files:
//! the entries outside the pre-data section (data, post-data, and the
//! comments and ACLs restored with them) are sorted by (data length
//! descending, dump id ascending) and given their own ids in that order.
//! Every dependency is rewritten to the new ids, so the dependency graph is
//! the same graph; pre-data entries, restored one by one in TOC order before
//! the parallel phase, keep their ids; data file names (in the entries'
//! extra field) do not change. Pure byte work, in memory (a toc.dat is a few
//! hundred bytes per entry).
use std::collections::{HashMap, HashSet};
use std::ops::Range;

// The archive versions read are those served (1.12 to 1.16).
use super::custom::{
    FORMAT_DIRECTORY, Fields, Refusal, check_head, entry_fields, header_fields, put_int,
};
use crate::rowcount::decode_int;

/// `SECTION_PRE_DATA` (pg_backup.h).
const SECTION_PRE_DATA: i64 = 2;
/// pg_restore counts a BLOBS entry's `blobs.toc` this many times its size.
const BLOBS_FACTOR: u64 = 1024;

/// One entry of the TOC, as far as renumbering needs it.
struct Entry {
    id: i64,
    /// The bytes of its id (sign byte and magnitude).
    id_at: Range<usize>,
    section: i64,
    blobs: bool,
    /// Its data file, when it has one.
    file: Option<String>,
    /// Each dependency string, length prefix included, and its id.
    deps: Vec<(Range<usize>, Option<i64>)>,
}

/// The toc.dat read.
struct Toc {
    int_size: usize,
    compressed: bool,
    entries: Vec<Entry>,
}

/// What `largest_first` did.
#[derive(Debug, PartialEq, Eq)]
pub struct Renumbered {
    /// The rewritten toc.dat.
    pub toc: Vec<u8>,
    /// Entries that have a new dump id.
    pub moved: usize,
}

/// Renumbers `toc` (a directory-format toc.dat) so that pg_restore -j, its
/// data files all of size 0, starts them in the order their sizes would
/// give: `size_of` is each data file's size by name. `Ok(None)` when the
/// order is already that one; `Err` when the TOC is not one this reads
/// (the caller serves it unchanged).
pub fn largest_first(
    toc: &[u8],
    size_of: impl Fn(&str) -> Option<u64>,
) -> Result<Option<Renumbered>, String> {
    let parsed = parse(toc)?;
    let mut seen = HashSet::new();
    for e in &parsed.entries {
        if e.id <= 0 || !seen.insert(e.id) {
            return Err(format!("dump id {} is not positive and unique", e.id));
        }
    }
    let length = |e: &Entry| -> u64 {
        let Some(file) = &e.file else { return 0 };
        let size = size_of(file).or_else(|| {
            parsed
                .compressed
                .then(|| {
                    [".gz", ".lz4", ".zst"]
                        .iter()
                        .find_map(|ext| size_of(&format!("{file}{ext}")))
                })
                .flatten()
        });
        let size = size.unwrap_or(0);
        if e.blobs {
            size.saturating_mul(BLOBS_FACTOR)
        } else {
            size
        }
    };
    // The entries renumbered, by position, in the order wanted.
    let mut order: Vec<usize> = (0..parsed.entries.len())
        .filter(|&i| parsed.entries[i].section != SECTION_PRE_DATA)
        .collect();
    let mut ids: Vec<i64> = order.iter().map(|&i| parsed.entries[i].id).collect();
    ids.sort_unstable();
    let lengths: Vec<u64> = parsed.entries.iter().map(length).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), parsed.entries[i].id));
    let new_id: HashMap<i64, i64> = order
        .iter()
        .zip(&ids)
        .map(|(&i, &id)| (parsed.entries[i].id, id))
        .filter(|(old, new)| old != new)
        .collect();
    if new_id.is_empty() {
        return Ok(None);
    }
    Ok(Some(Renumbered {
        toc: rewrite(toc, &parsed, &new_id),
        moved: new_id.len(),
    }))
}

/// `toc` with each entry's id and dependencies mapped through `new_id`.
fn rewrite(toc: &[u8], parsed: &Toc, new_id: &HashMap<i64, i64>) -> Vec<u8> {
    // Each piece replaced, in file order: its range and its new bytes.
    let mut pieces: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    for e in &parsed.entries {
        if let Some(&new) = new_id.get(&e.id) {
            let mut b = Vec::with_capacity(9);
            put_int(&mut b, parsed.int_size, new);
            pieces.push((e.id_at.clone(), b));
        }
        for (range, dep) in &e.deps {
            if let Some(&new) = dep.and_then(|d| new_id.get(&d)) {
                let text = new.to_string();
                let mut b = Vec::with_capacity(9 + text.len());
                put_int(&mut b, parsed.int_size, text.len() as i64);
                b.extend_from_slice(text.as_bytes());
                pieces.push((range.clone(), b));
            }
        }
    }
    let mut out = Vec::with_capacity(toc.len() + 64);
    let mut at = 0;
    for (range, bytes) in pieces {
        out.extend_from_slice(&toc[at..range.start]);
        out.extend_from_slice(&bytes);
        at = range.end;
    }
    out.extend_from_slice(&toc[at..]);
    out
}

/// Reads a toc.dat in memory.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    int_size: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refusal> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.b.len())
            .ok_or_else(|| {
                Refusal::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the table of contents ends early",
                ))
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

impl Fields for Reader<'_> {
    fn byte(&mut self) -> Result<u8, Refusal> {
        Ok(self.take(1)?[0])
    }

    fn int(&mut self) -> Result<i64, Refusal> {
        let n = 1 + self.int_size;
        Ok(decode_int(self.take(n)?))
    }

    fn string(&mut self, keep: u64) -> Result<Option<Vec<u8>>, Refusal> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        let s = self.take(n)?;
        Ok(Some(if len.unsigned_abs() <= keep {
            s.to_vec()
        } else {
            Vec::new()
        }))
    }

    fn pos(&self) -> u64 {
        self.pos as u64
    }
}

/// A position in the in-memory TOC.
fn at(pos: u64) -> usize {
    usize::try_from(pos).unwrap_or(usize::MAX)
}

fn parse(toc: &[u8]) -> Result<Toc, String> {
    let mut r = Reader {
        b: toc,
        pos: 0,
        int_size: 4,
    };
    let text = |e: Refusal| e.to_string();
    let mut head = [0u8; 11];
    head.copy_from_slice(r.take(11).map_err(text)?);
    let (version, int_size) = check_head(&head, FORMAT_DIRECTORY, "directory")?;
    r.int_size = int_size;
    let (compression, count) = header_fields(&mut r, version).map_err(text)?;
    let count = usize::try_from(count).map_err(|_| format!("a TOC of {count} entries"))?;
    let mut entries = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let e = entry_fields(&mut r, version).map_err(text)?;
        // The directory format's extra TOC: the data file's name.
        let file = r
            .string(u64::MAX)
            .map_err(text)?
            .filter(|f| !f.is_empty())
            .map(|f| String::from_utf8_lossy(&f).into_owned());
        entries.push(Entry {
            id: e.id,
            id_at: at(e.id_at.start)..at(e.id_at.end),
            section: e.section,
            blobs: e.desc.as_deref() == Some(b"BLOBS".as_slice()),
            file,
            deps: e
                .deps
                .into_iter()
                .map(|(r, id)| (at(r.start)..at(r.end), id))
                .collect(),
        });
    }
    Ok(Toc {
        int_size: r.int_size,
        compressed: compression != 0,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn golden(major: u32) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/custom/pg{major}/dir/toc.dat"));
        std::fs::read(path).unwrap()
    }

    /// An entry's id, dependencies, data file and section.
    type Seen = (i64, Vec<Option<i64>>, Option<String>, i64);

    /// Each entry, in TOC order.
    fn entries(toc: &[u8]) -> Vec<Seen> {
        parse(toc)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| {
                let deps = e.deps.iter().map(|(_, d)| *d).collect();
                (e.id, deps, e.file, e.section)
            })
            .collect()
    }

    /// pg_dump 15, 16 and 18's toc.dat of one database (three tables with
    /// data, a constraint, a materialized view, comments): with the data
    /// sizes reversed, the largest table gets the lowest id of the entries
    /// renumbered, every dependency follows its entry, pre-data entries
    /// keep their ids, and everything but the numbers is pg_dump's.
    #[test]
    fn golden_tocs_are_renumbered_largest_first_with_every_dependency_followed() {
        for major in [15, 16, 18] {
            let toc = golden(major);
            let before = entries(&toc);
            // 3362 is the largest file in the dump; make it the smallest.
            let sizes: HashMap<&str, u64> =
                HashMap::from([("3362.dat", 5), ("3363.dat", 900), ("3364.dat", 7000)]);
            let done = largest_first(&toc, |f| sizes.get(f).copied())
                .unwrap()
                .unwrap();
            let after = entries(&done.toc);
            assert_eq!(before.len(), after.len(), "pg{major}");
            let map: HashMap<i64, i64> =
                before.iter().zip(&after).map(|(b, a)| (b.0, a.0)).collect();
            assert_eq!(done.moved, map.iter().filter(|(b, a)| b != a).count());
            assert!(done.moved >= 3, "pg{major}: {map:?}");
            let ids: HashSet<i64> = after.iter().map(|e| e.0).collect();
            assert_eq!(ids.len(), after.len(), "pg{major}: ids stay unique");
            for (b, a) in before.iter().zip(&after) {
                // Same file, same section; each dependency mapped.
                assert_eq!((&b.2, b.3), (&a.2, a.3), "pg{major}");
                let deps: Vec<Option<i64>> =
                    b.1.iter()
                        .map(|d| d.map(|d| map.get(&d).copied().unwrap_or(d)))
                        .collect();
                assert_eq!(deps, a.1, "pg{major} entry {}", b.0);
                if b.3 == SECTION_PRE_DATA {
                    assert_eq!(b.0, a.0, "pg{major}: pre-data keeps its id");
                }
            }
            // The data entries, by new id: largest first, before every
            // other entry renumbered (their files have no size).
            let by_new_id = |file: &str| {
                after
                    .iter()
                    .find(|e| e.2.as_deref() == Some(file))
                    .unwrap()
                    .0
            };
            let (big, mid, small) = (
                by_new_id("3364.dat"),
                by_new_id("3363.dat"),
                by_new_id("3362.dat"),
            );
            assert!(big < mid && mid < small, "pg{major}: {big} {mid} {small}");
            let others = after
                .iter()
                .filter(|e| e.3 != SECTION_PRE_DATA && e.2.is_none())
                .map(|e| e.0);
            assert!(others.clone().all(|id| id > small), "pg{major}");
            // The order among the others is kept.
            let old_others: Vec<i64> = before
                .iter()
                .filter(|e| e.3 != SECTION_PRE_DATA && e.2.is_none())
                .map(|e| e.0)
                .collect();
            let mut sorted = old_others.clone();
            sorted.sort_unstable();
            let new_of: Vec<i64> = sorted.iter().map(|id| map[id]).collect();
            assert!(new_of.windows(2).all(|w| w[0] < w[1]), "pg{major}");

            // Renumbering the result again by the same sizes changes nothing.
            assert_eq!(
                largest_first(&done.toc, |f| sizes.get(f).copied()),
                Ok(None)
            );
        }
    }

    /// A TOC already in the order wanted is left alone (a second pass
    /// changes nothing, whatever the sizes); a TOC cut short anywhere, or
    /// of another format, is an error and not a panic.
    #[test]
    fn already_ordered_and_unreadable_tocs() {
        let toc = golden(16);
        let once = largest_first(&toc, |_| Some(1)).unwrap();
        let again = once.as_ref().map_or(&toc, |r| &r.toc);
        assert_eq!(largest_first(again, |_| Some(1)), Ok(None));
        for cut in 0..toc.len() {
            let e = largest_first(&toc[..cut], |_| Some(1));
            assert!(e.is_err(), "cut at {cut}");
        }
        let mut custom = toc.clone();
        custom[10] = 1;
        assert!(
            largest_first(&custom, |_| None)
                .unwrap_err()
                .contains("format 1")
        );
    }
}
