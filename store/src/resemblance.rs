//! Resemblance sketches: sampled "super-features" of a chunk's content that
//! come out equal for chunks sharing most of their bytes, so a new chunk can
//! find a similar stored chunk to delta against. Pure computation, no I/O;
//! the scheme is part of the store format (docs/store.md, "Feature scheme 1").

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Version of the feature scheme below (gear table, transforms, folding).
/// Recorded in the index with the parameters; a store keeps the scheme and
/// parameters it was created with.
pub const FEATURE_SCHEME: u32 = 1;

/// Bound on super-features per chunk (each costs one index lookup per new
/// chunk and one index entry per stored chunk).
pub const MAX_SUPER_FEATURES: usize = 8;
/// Bound on features folded into one super-feature.
pub const MAX_FEATURES_PER_SUPER: usize = 8;
const MAX_FEATURES: usize = MAX_SUPER_FEATURES * MAX_FEATURES_PER_SUPER;

/// How chunks are sketched. Fixed when a store is created and recorded in
/// its index: sketches are only comparable under the same parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureParams {
    /// Must equal `FEATURE_SCHEME`.
    pub scheme: u32,
    /// A position is sampled when the top `sample_bits` bits of the rolling
    /// gear hash are zero: one position in 2^sample_bits on average.
    pub sample_bits: u8,
    /// Super-features per chunk (index entries per stored chunk).
    pub super_features: u8,
    /// Features folded into each super-feature.
    pub features_per_super: u8,
}

impl Default for FeatureParams {
    /// Chosen by the churn benchmark; see docs/store.md.
    fn default() -> Self {
        FeatureParams {
            scheme: FEATURE_SCHEME,
            sample_bits: 10,
            super_features: 4,
            features_per_super: 1,
        }
    }
}

impl FeatureParams {
    /// Checks the bounds above.
    pub fn validate(&self) -> Result<(), StoreError> {
        let ok = self.scheme == FEATURE_SCHEME
            && (1..=16).contains(&self.sample_bits)
            && (1..=MAX_SUPER_FEATURES).contains(&usize::from(self.super_features))
            && (1..=MAX_FEATURES_PER_SUPER).contains(&usize::from(self.features_per_super));
        if ok {
            return Ok(());
        }
        Err(StoreError::Invalid {
            what: "feature parameters",
            detail: format!(
                "{self:?}; need scheme {FEATURE_SCHEME}, sample_bits in 1..=16, super_features in \
                 1..={MAX_SUPER_FEATURES}, features_per_super in 1..={MAX_FEATURES_PER_SUPER}"
            ),
        })
    }

    fn features(&self) -> usize {
        usize::from(self.super_features) * usize::from(self.features_per_super)
    }
}

/// The super-features of one chunk; slot `i` of two sketches is compared
/// with slot `i` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sketch {
    values: [u64; MAX_SUPER_FEATURES],
    len: usize,
}

impl Sketch {
    /// `(slot, super-feature)` pairs.
    pub fn slots(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        (0u8..).zip(self.values[..self.len].iter().copied())
    }
}

/// splitmix64: the fixed generator of the scheme's constants.
const fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mix(*state)
}

/// splitmix64's finalizer; also folds features into super-features.
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The scheme's constants: a gear table, then one odd multiplier and one
/// addend per feature, drawn in that order from splitmix64 seeded with the
/// bytes "pgsnapmn" (big-endian).
struct Constants {
    gear: [u64; 256],
    /// `gear[i] << 1`, for the two-bytes-per-step loop.
    gear_ls: [u64; 256],
    mul: [u64; MAX_FEATURES],
    add: [u64; MAX_FEATURES],
}

const SEED: u64 = u64::from_be_bytes(*b"pgsnapmn");

const fn constants() -> Constants {
    let mut state = SEED;
    let mut c = Constants {
        gear: [0; 256],
        gear_ls: [0; 256],
        mul: [0; MAX_FEATURES],
        add: [0; MAX_FEATURES],
    };
    let mut i = 0;
    while i < 256 {
        c.gear[i] = splitmix64(&mut state);
        c.gear_ls[i] = c.gear[i] << 1;
        i += 1;
    }
    let mut f = 0;
    while f < MAX_FEATURES {
        c.mul[f] = splitmix64(&mut state) | 1;
        c.add[f] = splitmix64(&mut state);
        f += 1;
    }
    c
}

static CONSTANTS: Constants = constants();

/// Sketches `data`: a rolling gear hash runs over every byte; at sampled
/// positions (top `sample_bits` bits zero) each feature `i` keeps the maximum
/// of `mul[i] * hash + add[i]` (mod 2^64); each super-feature folds its group
/// of features with splitmix64's finalizer. `None` when no position was
/// sampled (tiny or degenerate chunks): such chunks are stored without
/// looking for a base.
pub fn sketch(data: &[u8], p: &FeatureParams) -> Option<Sketch> {
    let n = p.features().min(MAX_FEATURES);
    let c = &CONSTANTS;
    let mask = u64::MAX << (64 - u32::from(p.sample_bits.clamp(1, 16)));
    let mut features = [0u64; MAX_FEATURES];
    let mut sampled = false;
    let mut h = 0u64;
    let mut sample = |h: u64| {
        sampled = true;
        let transforms = c.mul[..n].iter().zip(&c.add[..n]);
        for (f, (mul, add)) in features[..n].iter_mut().zip(transforms) {
            let t = h.wrapping_mul(*mul).wrapping_add(*add);
            if t > *f {
                *f = t;
            }
        }
    };
    // Two bytes per step, every position tested: the hash after the pair,
    // `(h << 2) + (gear_ls[a] + gear[b])`, and the one between,
    // `(h << 1) + gear[a]`, both come straight from `h`, so the loop-carried
    // chain is one shift and one add per two bytes (FastCDC's trick; testing
    // only every second position would make features depend on the parity
    // of the content's offset in the chunk).
    let mut pairs = data.chunks_exact(2);
    for pair in &mut pairs {
        let (a, b) = (usize::from(pair[0]), usize::from(pair[1]));
        let mid = (h << 1).wrapping_add(c.gear[a]);
        h = (h << 2).wrapping_add(c.gear_ls[a].wrapping_add(c.gear[b]));
        if mid & mask == 0 {
            sample(mid);
        }
        if h & mask == 0 {
            sample(h);
        }
    }
    if let [last] = pairs.remainder() {
        h = (h << 1).wrapping_add(c.gear[usize::from(*last)]);
        if h & mask == 0 {
            sample(h);
        }
    }
    if !sampled {
        return None;
    }
    let per = usize::from(p.features_per_super);
    let len = usize::from(p.super_features).min(MAX_SUPER_FEATURES);
    let mut values = [0u64; MAX_SUPER_FEATURES];
    for (slot, v) in values[..len].iter_mut().enumerate() {
        let mut s = slot as u64;
        for f in &features[slot * per..(slot + 1) * per] {
            s = mix(s ^ *f);
        }
        *v = s;
    }
    Some(Sketch { values, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_text(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed;
        let words = [
            &b"alpha "[..],
            b"bravo ",
            b"charlie ",
            b"delta\t",
            b"echo\n",
            b"12345 ",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            let r = splitmix64(&mut state);
            out.extend_from_slice(words[(r % 6) as usize]);
            out.extend_from_slice(format!("{} ", r % 100_000).as_bytes());
        }
        out.truncate(len);
        out
    }

    /// The scheme's constants are part of the format: pin a few.
    #[test]
    fn scheme_constants_are_fixed() {
        // splitmix64's first output for seed 0x7067736e61706d6e ("pgsnapmn"),
        // computed independently.
        assert_eq!(CONSTANTS.gear[0], 0x4762_b918_9059_6b0f);
        assert_eq!(CONSTANTS.gear[255], 0x5f96_da48_025a_2198);
        assert_eq!(CONSTANTS.mul[0], 0x4cad_dc1c_b6a7_e339);
        assert_eq!(CONSTANTS.add[63], 0xaf6a_48d0_5ede_cc13);
    }

    #[test]
    fn similar_chunks_share_super_features_and_different_ones_do_not() {
        let p = FeatureParams::default();
        let a = pseudo_text(1, 256 * 1024);
        let mut b = a.clone();
        // A few scattered edits.
        for at in [1000, 70_000, 150_000, 220_000] {
            b[at..at + 40].copy_from_slice(&[b'x'; 40]);
        }
        let c = pseudo_text(2, 256 * 1024);
        let sa = sketch(&a, &p).unwrap();
        let sb = sketch(&b, &p).unwrap();
        let sc = sketch(&c, &p).unwrap();
        let same =
            |x: &Sketch, y: &Sketch| x.slots().zip(y.slots()).filter(|(u, v)| u == v).count();
        assert!(same(&sa, &sb) >= 2, "{sa:?} {sb:?}");
        assert_eq!(same(&sa, &sc), 0);
        assert_eq!(sa.slots().count(), usize::from(p.super_features));
        assert_eq!(sketch(&a, &p), Some(sa), "deterministic");
    }

    #[test]
    fn degenerate_input_has_no_sketch_and_params_are_checked() {
        let p = FeatureParams::default();
        assert_eq!(sketch(&[], &p), None);
        assert!(p.validate().is_ok());
        let bad = FeatureParams {
            super_features: 0,
            ..p
        };
        assert!(bad.validate().is_err());
        let bad = FeatureParams { scheme: 9, ..p };
        assert!(bad.validate().is_err());
    }
}
