//! Which super-features a dump has already claimed in the feature index.
//!
//! A feature entry names one chunk per `(slot, super-feature)`; a new chunk
//! used to overwrite every entry it shares. Between dumps that is right (the
//! newest version of a chunk is the best base for tomorrow's), but within one
//! dump it let later chunks that merely resemble an earlier one (a shared
//! paragraph, a repeated JSON shape) take its entries one by one, so the next
//! dump found that chunk's own new version under no entry at all and coded it
//! against a look-alike: on a 2 GB database of such documents, 1 900 of a
//! day's 3 500 new chunks were poor deltas or stored whole (docs/store.md,
//! "Feature claims"). Now the first chunk of a dump to carry a super-feature
//! claims its entry for the dump; later chunks of the same dump write only
//! the entries nobody in the dump claimed yet. Entries are hints: a lost claim
//! costs compression, never correctness.
//!
//! The set is a Bloom filter of fixed size, so memory does not grow with the
//! dump: a false positive only skips one entry.

use crate::resemblance::{Sketch, mix};

/// Bits of the filter: 2^25 (4 MiB, allocated on first use); why: below
/// 1/10 000 false positives up to ~500 000 claims (4 per new chunk: ~30 GB
/// of first-day dump at 256 KiB chunks), ~1/3 at 13 million (1 TB), where
/// claims fail open (an entry is not written, the older one stays).
const BITS_LOG: u32 = 25;
/// Probes per key.
const PROBES: u32 = 3;

/// The super-features claimed by one ingest (all its files).
#[derive(Default)]
pub(super) struct Claims {
    bits: Vec<u64>,
}

impl Claims {
    /// Claims every slot of `sketch` that this ingest has not claimed yet;
    /// returns them as a mask (bit `i` = slot `i`).
    pub(super) fn claim(&mut self, sketch: &Sketch) -> u8 {
        if self.bits.is_empty() {
            self.bits = vec![0; 1 << (BITS_LOG - 6)];
        }
        let mut mask = 0u8;
        for (slot, value) in sketch.slots() {
            let h = key_hash(slot, value);
            let mut seen = true;
            for p in 0..PROBES {
                let bit = (h.rotate_left(p * 21) & ((1 << BITS_LOG) - 1)) as usize;
                let (word, b) = (bit / 64, 1u64 << (bit % 64));
                seen &= self.bits[word] & b != 0;
                self.bits[word] |= b;
            }
            if !seen {
                mask |= 1 << slot;
            }
        }
        mask
    }
}

/// A 64-bit mix of `(slot, value)` (splitmix64's finalizer).
fn key_hash(slot: u8, value: u64) -> u64 {
    mix(value ^ (u64::from(slot) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resemblance::{FeatureParams, sketch};

    fn text(seed: u64, len: usize) -> Vec<u8> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                b"abcdefghij klmnop\n"[(s >> 59) as usize % 18]
            })
            .collect()
    }

    #[test]
    fn a_slot_is_claimed_once_per_ingest() {
        let p = FeatureParams::default();
        let a = sketch(&text(1, 200_000), &p).expect("a sketch");
        let b = sketch(&text(2, 200_000), &p).expect("a sketch");
        let all = (1u8 << a.slots().count()) - 1;
        let mut claims = Claims::default();
        assert_eq!(claims.claim(&a), all, "a new dump claims every slot");
        assert_eq!(
            claims.claim(&a),
            0,
            "the same super-features again claim nothing"
        );
        assert_eq!(
            claims.claim(&b),
            all,
            "unrelated bytes share no super-feature"
        );
        // A new ingest starts empty.
        assert_eq!(Claims::default().claim(&a), all);
    }

    #[test]
    fn a_chunk_sharing_some_super_features_claims_only_the_others() {
        let p = FeatureParams::default();
        let base = text(3, 262_144);
        let a = sketch(&base, &p).expect("a sketch");
        // Find an edit that changes some super-features but not all.
        let found = (0..64u64).find_map(|i| {
            let mut edited = base.clone();
            let at = (i as usize * 4099) % (base.len() - 2000);
            edited[at..at + 2000].copy_from_slice(&text(100 + i, 2000));
            let b = sketch(&edited, &p)?;
            let shared: Vec<bool> = a.slots().zip(b.slots()).map(|(x, y)| x.1 == y.1).collect();
            (shared.iter().any(|s| *s) && !shared.iter().all(|s| *s)).then_some((b, shared))
        });
        let (b, shared) = found.expect("an edit changing some super-features");
        let mut claims = Claims::default();
        claims.claim(&a);
        let mask = claims.claim(&b);
        for (i, same) in shared.iter().enumerate() {
            assert_eq!(mask & (1 << i) != 0, !same, "slot {i}");
        }
    }
}
