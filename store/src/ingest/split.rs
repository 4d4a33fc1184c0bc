//! Splitting a merged chunk: when a change hits the bytes a content-defined
//! cut depended on, that cut vanishes and the new chunk spans two stored ones,
//! of which a delta can use only one as base (the other's bytes would be
//! stored again). Such a chunk is cut in two where its first candidate base
//! ends, so that each part finds its own base. Pure decision: no writes.

use crate::chunk::{ChunkId, Naming};
use crate::error::StoreError;
use crate::index::Index;
use crate::resemblance::{self, FeatureParams, Sketch};

/// Neither part of a split is shorter than this; why: a smaller part has too
/// few sampled positions to find a base of its own (one in 1 024 bytes with
/// the default features), and each part costs a record header and an index
/// entry.
pub(super) const SPLIT_MIN_PART: usize = 8 * 1024;

/// Where to cut a merged chunk, and the sketches of both parts.
pub(super) struct Split {
    pub(super) at: usize,
    pub(super) head: Sketch,
    pub(super) tail: Sketch,
}

/// Decides whether `raw` (a new chunk with sketch `sketch`) is two stored
/// chunks run together: its best candidate base `a` is shorter than `raw` by
/// at least `SPLIT_MIN_PART`, and cutting `raw` at `a`'s length from its
/// start (or from its end) leaves one part whose best candidate is `a` and
/// another whose best candidate is some other chunk. The candidates are
/// hints (bases are chosen, and registered, for each part afterwards).
///
/// A side that is `a` byte for byte wins over both tests: the store holds
/// the chunk split this way already (an earlier dump cut it so), and only
/// the same cut stores the same bytes once. Either side can be it, and the
/// feature test alone may accept the other side first: cutting a long `a`'s
/// length from the start of a chunk stored as a short part then `a` left a
/// tail that named a look-alike, so the same bytes were stored again as two
/// new chunks (`naming` gives the ids, as the store names its chunks).
pub(super) fn split_point(
    index: &Index,
    naming: &Naming,
    raw: &[u8],
    sketch: &Sketch,
    features: &FeatureParams,
) -> Result<Option<Split>, StoreError> {
    let Some(a) = best(index, sketch)? else {
        return Ok(None);
    };
    let Some(a_entry) = index.get(&a)? else {
        return Ok(None);
    };
    let a_len = a_entry.raw_len as usize;
    if a_len < SPLIT_MIN_PART || raw.len() < a_len.saturating_add(SPLIT_MIN_PART) {
        return Ok(None);
    }
    // `a` first (the cut after it vanished), then `a` last (the one before).
    let sides = [(a_len, true), (raw.len() - a_len, false)];
    for (at, a_first) in sides {
        let (head, tail) = raw.split_at(at);
        if naming.id(if a_first { head } else { tail }) != a {
            continue;
        }
        if let (Some(head), Some(tail)) = (
            resemblance::sketch(head, features),
            resemblance::sketch(tail, features),
        ) {
            return Ok(Some(Split { at, head, tail }));
        }
    }
    for (at, a_first) in sides {
        let (head, tail) = raw.split_at(at);
        let (Some(head), Some(tail)) = (
            resemblance::sketch(head, features),
            resemblance::sketch(tail, features),
        ) else {
            continue;
        };
        let (mine, other) = if a_first {
            (&head, &tail)
        } else {
            (&tail, &head)
        };
        if best(index, mine)? == Some(a) && best(index, other)?.is_some_and(|b| b != a) {
            return Ok(Some(Split { at, head, tail }));
        }
    }
    Ok(None)
}

/// The candidate base named by most of `sketch`'s super-features.
fn best(index: &Index, sketch: &Sketch) -> Result<Option<ChunkId>, StoreError> {
    Ok(index.candidates(sketch)?.first().map(|(id, _)| *id))
}
