//! A second delta base, tried only when the first gives no sure win: with a
//! previous-dump hint a new chunk has two candidates that often disagree
//! (its place in the previous dump, `position.rs`, and the feature index's
//! best), and the better one is not known before encoding. Without a hint
//! there is no fallback, so an ingest costs what it did.

use super::sink::{Base, Encoded, Encoder, beats_whole, sure_win};
use crate::chunk::ChunkId;
use crate::error::StoreError;

/// Encodes `raw` against `base`, and, unless that is a sure win, against
/// `fallback` too, keeping the smaller record (the first on a tie, so the
/// same job always gives the same record). Each base is judged as
/// `Encoder::encode_against` would judge it alone, but the chunk is
/// compressed whole once for both.
pub(super) fn encode_best(
    encoder: &mut Encoder,
    id: ChunkId,
    raw: &[u8],
    base: Base,
    fallback: Option<Base>,
) -> Result<Encoded, StoreError> {
    let Some(fallback) = fallback else {
        return encoder.encode_against(id, raw, base);
    };
    let mut first = encoder.delta(id, raw, base.id)?;
    if let Some(stored) = first.take_if(|d| sure_win(d.len(), raw.len())) {
        return Ok(Encoded::Delta {
            base: base.id,
            stored,
        });
    }
    let second = encoder.delta(id, raw, fallback.id)?;
    let full = encoder.compress_full(id, raw)?;
    // What each base alone gives: its delta if kept, else `None` (whole).
    let first = first.filter(|d| beats_whole(d.len(), full.len(), base.rebased));
    let second = second.filter(|d| {
        sure_win(d.len(), raw.len()) || beats_whole(d.len(), full.len(), fallback.rebased)
    });
    let len = |d: &Option<Vec<u8>>| d.as_ref().map_or(full.len(), Vec::len);
    let (chosen, stored) = if len(&second) < len(&first) {
        (fallback.id, second)
    } else {
        (base.id, first)
    };
    Ok(match stored {
        Some(stored) => Encoded::Delta {
            base: chosen,
            stored,
        },
        None => Encoded::Full(full),
    })
}
