//! A second delta base, tried only when the first gives no sure win: with a
//! previous-dump hint a new chunk has two candidates that often disagree
//! (its place in the previous dump, `position.rs`, and the feature index's
//! best), and the better one is not known before encoding. Without a hint
//! there is no fallback, so an ingest costs what it did.

use super::sink::{Base, DELTA_SURE_WIN_RATIO, Encoded, Encoder};
use crate::chunk::ChunkId;
use crate::error::StoreError;

impl Encoded {
    fn stored_len(&self) -> usize {
        match self {
            Encoded::Full(stored) => stored.len(),
            Encoded::Delta { stored, .. } => stored.len(),
        }
    }

    /// A delta at most 1/`DELTA_SURE_WIN_RATIO` of the raw chunk.
    fn sure_win(&self, raw_len: usize) -> bool {
        matches!(self, Encoded::Delta { stored, .. }
            if stored.len().saturating_mul(DELTA_SURE_WIN_RATIO) <= raw_len)
    }
}

/// Encodes `raw` against `base`, and, unless that is a sure win, against
/// `fallback` too, keeping the smaller record (the first on a tie, so the
/// same job always gives the same record).
pub(super) fn encode_best(
    encoder: &mut Encoder,
    id: ChunkId,
    raw: &[u8],
    base: Base,
    fallback: Option<Base>,
) -> Result<Encoded, StoreError> {
    let first = encoder.encode_against(id, raw, base)?;
    let Some(fallback) = fallback else {
        return Ok(first);
    };
    if first.sure_win(raw.len()) {
        return Ok(first);
    }
    let second = encoder.encode_against(id, raw, fallback)?;
    Ok(if second.stored_len() < first.stored_len() {
        second
    } else {
        first
    })
}
