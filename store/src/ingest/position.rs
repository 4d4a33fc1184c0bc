//! Positional bases: the chunk that held the same place in the job's
//! previous dump, a delta base the feature index cannot lose. On data full
//! of look-alikes (templated text, repeated JSON, a paragraph pool) a
//! changed chunk's own previous version has often lost its feature entries
//! to chunks that merely resemble it; its position has not moved. Duplicate
//! adjacency (DARE): when new chunk i-1 of a file was chunk j of the previous
//! dump (an exact duplicate, or a delta against it), chunk j+1 is the
//! candidate for new chunk i; after a run of new chunks the walk goes on
//! along the old manifest. Hints only: no write, no format change.

use std::collections::HashMap;
use std::ops::Range;

use uuid::Uuid;

use crate::chunk::ChunkId;
use crate::manifest;
use crate::shared::Inner;

/// Largest previous dump followed, in chunk references; why: the hint costs
/// ~56 bytes a reference in memory (a 32-byte id and a 4-byte length in
/// order, plus a 20-byte map entry), so 2^22 references (~1 TB of dump at
/// 256 KiB chunks) hold ~235 MB; a bigger previous dump gives no hint
/// (logged) and the ingest finds bases through the feature index alone.
pub(super) const MAX_PREVIOUS_CHUNKS: usize = 1 << 22;

/// The chunk lists of a previous dump, in order, with where each chunk first
/// appears.
pub(crate) struct Previous {
    dump: Uuid,
    /// Every file's chunk ids, one file after another.
    ids: Vec<ChunkId>,
    /// The length of each chunk of `ids`.
    lens: Vec<u32>,
    /// Each file's range in `ids`, by name.
    files: HashMap<String, Range<u32>>,
    /// The file ranges in order, to find the file of a position.
    ranges: Vec<Range<u32>>,
    /// First position of each chunk, keyed by the id's first 8 bytes (ids
    /// are hashes; a collision only loses a hint, `locate` checks the id).
    first_at: HashMap<u64, u32>,
}

fn key(id: &ChunkId) -> u64 {
    let mut k = [0u8; 8];
    k.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(k)
}

impl Previous {
    /// Loads the manifest of `dump` from the store; `None` (logged) when it
    /// is not there (deleted, never stored), unreadable or too big: the
    /// ingest then runs without positional bases, never fails for it.
    pub(crate) fn load(inner: &Inner, dump: Uuid) -> Option<Previous> {
        let Some(path) = manifest::existing_manifest(&inner.manifests_dir, dump) else {
            tracing::info!(dump_id = %dump, "the previous dump is not in the store: no positional bases");
            return None;
        };
        let m = match inner.read_manifest(&path) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(dump_id = %dump, "cannot read the previous dump's manifest, no positional bases: {e}");
                return None;
            }
        };
        let refs: usize = m.files.iter().map(|f| f.chunks.len()).sum();
        if refs > MAX_PREVIOUS_CHUNKS {
            tracing::info!(dump_id = %dump, chunks = refs, limit = MAX_PREVIOUS_CHUNKS, "the previous dump is too big to follow: no positional bases");
            return None;
        }
        Some(Previous::from_files(
            dump,
            m.files.iter().map(|f| (f.name.as_str(), &f.chunks[..])),
        ))
    }

    fn from_files<'a>(
        dump: Uuid,
        files: impl Iterator<Item = (&'a str, &'a [manifest::ChunkRef])>,
    ) -> Previous {
        let mut p = Previous {
            dump,
            ids: Vec::new(),
            lens: Vec::new(),
            files: HashMap::new(),
            ranges: Vec::new(),
            first_at: HashMap::new(),
        };
        for (name, chunks) in files {
            // At most MAX_PREVIOUS_CHUNKS (checked by `load`), so positions fit.
            let start = p.ids.len() as u32;
            for c in chunks {
                let at = p.ids.len() as u32;
                p.first_at.entry(key(&c.id)).or_insert(at);
                p.ids.push(c.id);
                p.lens.push(c.len);
            }
            let range = start..p.ids.len() as u32;
            p.files.insert(name.to_string(), range.clone());
            p.ranges.push(range);
        }
        p
    }

    /// The dump this hint comes from.
    pub(crate) fn dump(&self) -> Uuid {
        self.dump
    }

    /// Chunk references followed.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// A walk for the new dump's file `name`: it starts at the previous
    /// dump's file of that name (nowhere if there is none, until a chunk
    /// of the previous dump is met).
    pub(super) fn walk(&self, name: &str) -> Walk<'_> {
        let range = self.files.get(name).cloned().unwrap_or(0..0);
        Walk {
            prev: self,
            next: range.start,
            end: range.end,
        }
    }

    /// Where `id` first appears, and the end of its file.
    fn locate(&self, id: &ChunkId) -> Option<(u32, u32)> {
        let at = *self.first_at.get(&key(id))?;
        if self.ids.get(at as usize) != Some(id) {
            return None;
        }
        let i = self.ranges.partition_point(|r| r.end <= at);
        Some((at, self.ranges.get(i)?.end))
    }
}

/// The position in the previous dump that the next chunk of one new file
/// probably corresponds to.
pub(super) struct Walk<'a> {
    prev: &'a Previous,
    /// Position predicted for the next chunk.
    next: u32,
    /// End of the previous dump's file `next` walks in.
    end: u32,
}

impl Walk<'_> {
    /// The chunk at the predicted position, if it is inside its file.
    pub(super) fn candidate(&self) -> Option<ChunkId> {
        if self.next < self.end {
            self.prev.ids.get(self.next as usize).copied()
        } else {
            None
        }
    }

    /// The chunk at the predicted position and its length, when it and the
    /// chunk after it (in the same file) are `len` bytes together: the
    /// previous dump may have split there a chunk of `len` bytes (`split.rs`),
    /// and the new chunk may be that chunk again. The caller checks the
    /// bytes; the feature index alone may cut the same bytes elsewhere.
    pub(super) fn split_pair(&self, len: usize) -> Option<(ChunkId, usize)> {
        let (i, j) = (self.next as usize, self.next as usize + 1);
        if j >= self.end as usize {
            return None;
        }
        let first = *self.prev.lens.get(i)? as usize;
        let second = *self.prev.lens.get(j)? as usize;
        let id = *self.prev.ids.get(i)?;
        (first.checked_add(second) == Some(len)).then_some((id, first))
    }

    /// Moves past one chunk of the new file. `anchor` is the chunk it was
    /// found to be (itself when stored already, its chosen base when new):
    /// if that is a chunk of the previous dump, the walk continues after it
    /// (after the predicted position when that holds the same chunk, else
    /// after its first appearance); otherwise one position on.
    pub(super) fn step(&mut self, anchor: Option<&ChunkId>) {
        if let Some(a) = anchor {
            if self.candidate().as_ref() == Some(a) {
                self.next += 1;
                return;
            }
            if let Some((at, end)) = self.prev.locate(a) {
                self.next = at + 1;
                self.end = end;
                return;
            }
        }
        self.next = self.next.saturating_add(1);
    }
}

/// A feature candidate named by at least this many super-features goes
/// before the positional one; why: on the churn benchmark a changed chunk's
/// own previous version is named by 2–4 of its 4, while look-alikes (a
/// shared paragraph) are named by one each; and a walk put off by one place
/// (a content-defined cut that vanished, so one new chunk spans two old
/// ones) is set right only by such a candidate: preferring the walk's over
/// 2- and 3-vote candidates cost 39% more on days 2–7 of `churn --mb 100`.
const FEATURES_FIRST_VOTES: u32 = 2;

/// Orders the base candidates of a new chunk: `features` (the feature
/// index's, most votes first) and `positional` (the walk's). A candidate
/// named by `FEATURES_FIRST_VOTES` super-features or more stays first;
/// otherwise the positional one goes first, since single votes spread over
/// look-alikes say little. Then the rest in feature order, without repeats.
/// Each comes with whether, once chosen, it tells the walk where the chunk
/// is (`Walk::step`): the first two do; a look-alike elsewhere in the
/// previous dump must not move the walk there.
pub(super) fn ordered(
    features: Vec<(ChunkId, u32)>,
    positional: Option<ChunkId>,
) -> Vec<(ChunkId, bool)> {
    let mut out: Vec<(ChunkId, bool)> = Vec::with_capacity(features.len() + 1);
    let sure = features.first().filter(|(_, v)| *v >= FEATURES_FIRST_VOTES);
    if let Some((id, _)) = sure {
        out.push((*id, true));
    }
    if let Some(p) = positional
        && !out.iter().any(|(id, _)| *id == p)
    {
        out.push((p, true));
    }
    for (id, _) in features {
        if !out.iter().any(|(c, _)| *c == id) {
            out.push((id, false));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ChunkRef;

    fn id(n: u8) -> ChunkId {
        let mut b = [0u8; 32];
        b[0] = n;
        b[31] = n;
        ChunkId(b)
    }

    fn refs(ns: &[u8]) -> Vec<ChunkRef> {
        ns.iter().map(|n| ChunkRef { id: id(*n), len: 1 }).collect()
    }

    fn previous() -> Previous {
        let a = refs(&[1, 2, 3, 4, 5]);
        let b = refs(&[10, 11, 3, 12]);
        Previous::from_files(Uuid::nil(), [("a", &a[..]), ("b", &b[..])].into_iter())
    }

    #[test]
    fn a_split_pair_is_two_chunks_of_one_file_adding_up_to_the_length() {
        let a: Vec<ChunkRef> = [(1, 100), (2, 30), (3, 70)]
            .map(|(n, len)| ChunkRef { id: id(n), len })
            .to_vec();
        let b = [ChunkRef { id: id(4), len: 5 }];
        let p = Previous::from_files(Uuid::nil(), [("a", &a[..]), ("b", &b[..])].into_iter());
        let mut w = p.walk("a");
        assert_eq!(w.split_pair(130), Some((id(1), 100)));
        assert_eq!(w.split_pair(129), None, "not the two lengths");
        assert_eq!(w.split_pair(100), None, "one chunk is no pair");
        w.step(Some(&id(1)));
        assert_eq!(w.split_pair(100), Some((id(2), 30)));
        w.step(Some(&id(2)));
        assert_eq!(w.split_pair(75), None, "the next file's chunk is no part");
        assert_eq!(p.walk("none").split_pair(0), None, "no such file");
    }

    #[test]
    fn a_walk_follows_duplicates_and_continues_over_new_chunks() {
        let p = previous();
        let mut w = p.walk("a");
        assert_eq!(w.candidate(), Some(id(1)), "starts at the same file");
        w.step(Some(&id(1)));
        assert_eq!(w.candidate(), Some(id(2)));
        // Two new chunks without a base of the previous dump: one on each.
        w.step(None);
        w.step(Some(&id(99)));
        assert_eq!(w.candidate(), Some(id(4)));
        // A delta against 4 (or 4 itself): next is 5, then the file ends.
        w.step(Some(&id(4)));
        assert_eq!(w.candidate(), Some(id(5)));
        w.step(None);
        assert_eq!(w.candidate(), None, "never past the file's end");
        w.step(None);
        assert_eq!(w.candidate(), None);
    }

    #[test]
    fn a_walk_jumps_to_a_chunk_met_elsewhere_and_prefers_its_own_position() {
        let p = previous();
        let mut w = p.walk("b");
        assert_eq!(w.candidate(), Some(id(10)));
        // Chunk 2 of file a: the walk moves into file a, after it.
        w.step(Some(&id(2)));
        assert_eq!(w.candidate(), Some(id(3)));
        w.step(Some(&id(3)));
        assert_eq!(w.candidate(), Some(id(4)));
        // In file b, chunk 3 also appears at position 2 (after 11): the
        // walk takes that one, not 3's first appearance in file a.
        let mut w = p.walk("b");
        w.step(Some(&id(10)));
        w.step(Some(&id(11)));
        w.step(Some(&id(3)));
        assert_eq!(w.candidate(), Some(id(12)));
        w.step(None);
        assert_eq!(w.candidate(), None, "file b ends; file a is not entered");
    }

    #[test]
    fn a_file_the_previous_dump_lacks_starts_nowhere() {
        let p = previous();
        let mut w = p.walk("c");
        assert_eq!(w.candidate(), None);
        w.step(None);
        assert_eq!(w.candidate(), None);
        w.step(Some(&id(11)));
        assert_eq!(w.candidate(), Some(id(3)));
        assert_eq!(p.len(), 9);
        assert!(p.locate(&id(77)).is_none());
    }

    #[test]
    fn a_feature_candidate_with_two_votes_stays_first_else_the_positional_one_leads() {
        let f = vec![(id(1), 2), (id(2), 1)];
        assert_eq!(
            ordered(f, Some(id(3))),
            vec![(id(1), true), (id(3), true), (id(2), false)]
        );
        let f = vec![(id(1), 1), (id(2), 1)];
        assert_eq!(
            ordered(f, Some(id(3))),
            vec![(id(3), true), (id(1), false), (id(2), false)]
        );
        let f = vec![(id(1), 1), (id(2), 1)];
        assert_eq!(
            ordered(f.clone(), Some(id(2))),
            vec![(id(2), true), (id(1), false)],
            "no repeats"
        );
        assert_eq!(
            ordered(f, None),
            vec![(id(1), false), (id(2), false)],
            "no hint: as today"
        );
    }
}
