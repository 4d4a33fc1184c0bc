//! Chunk identity (BLAKE3 of the raw bytes) and the content-defined chunking
//! parameters. Owns no I/O: the cutting itself is FastCDC's `StreamCDC`.

use std::fmt;

use fastcdc::v2020;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Length of a chunk id in bytes.
pub const CHUNK_ID_LEN: usize = 32;

/// BLAKE3 hash of a chunk's raw (uncompressed) bytes. Shown and serialized as
/// 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; CHUNK_ID_LEN]);

impl ChunkId {
    /// The all-zero id, used as "no base" in FULL records.
    pub const ZERO: ChunkId = ChunkId([0; CHUNK_ID_LEN]);

    /// Hashes raw chunk bytes.
    pub fn of(raw: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(raw).as_bytes())
    }

    /// Lowercase hex form (64 characters).
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(CHUNK_ID_LEN * 2);
        for b in self.0 {
            s.push(char::from(DIGITS[usize::from(b >> 4)]));
            s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
        s
    }

    /// Parses 64 hex digits; `None` for anything else.
    pub fn from_hex(s: &str) -> Option<ChunkId> {
        let bytes = s.as_bytes();
        if bytes.len() != CHUNK_ID_LEN * 2 {
            return None;
        }
        let mut out = [0u8; CHUNK_ID_LEN];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0])?;
            let lo = hex_value(pair[1])?;
            out[i] = (hi << 4) | lo;
        }
        Some(ChunkId(out))
    }
}

/// How a store names its chunks: BLAKE3 of the raw bytes, or, in an
/// encrypted store, BLAKE3 keyed with a subkey of the store's key, so that
/// an id reveals nothing about the content (docs/encryption.md).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    Plain,
    Keyed([u8; 32]),
}

impl Naming {
    /// The id of a chunk with these raw bytes.
    pub fn id(&self, raw: &[u8]) -> ChunkId {
        match self {
            Naming::Plain => ChunkId::of(raw),
            Naming::Keyed(key) => ChunkId(*blake3::keyed_hash(key, raw).as_bytes()),
        }
    }
}

impl fmt::Debug for Naming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Naming::Plain => "Plain",
            Naming::Keyed(_) => "Keyed(..)",
        })
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

impl Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ChunkId, D::Error> {
        let s = String::deserialize(d)?;
        ChunkId::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid chunk id {s:?}")))
    }
}

/// FastCDC (2020) size bounds in bytes and normalization level. Fixed when a
/// store is created and recorded in its index, so chunk boundaries stay
/// stable for its lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    pub min_bytes: u32,
    pub avg_bytes: u32,
    pub max_bytes: u32,
    /// FastCDC's normalization level, 0..=3: 0 cuts wherever the content
    /// says (past `min_bytes`), higher levels pull sizes towards
    /// `avg_bytes`. Added with index format 2; parameters recorded without
    /// it were cut at level 1, and read so.
    #[serde(default = "level_one")]
    pub normalization: u8,
}

fn level_one() -> u8 {
    1
}

impl Default for ChunkParams {
    /// Chosen by the churn benchmark; see docs/store.md.
    fn default() -> Self {
        ChunkParams {
            min_bytes: 64 * 1024,
            avg_bytes: 256 * 1024,
            max_bytes: 1024 * 1024,
            normalization: 0,
        }
    }
}

impl ChunkParams {
    /// FastCDC's normalization for `normalization` (validated to 0..=3).
    pub fn fastcdc_level(&self) -> v2020::Normalization {
        match self.normalization {
            0 => v2020::Normalization::Level0,
            1 => v2020::Normalization::Level1,
            2 => v2020::Normalization::Level2,
            _ => v2020::Normalization::Level3,
        }
    }

    /// Checks the bounds FastCDC accepts (it panics otherwise), min ≤ avg ≤
    /// max and the normalization level.
    pub fn validate(&self) -> Result<(), StoreError> {
        let ChunkParams {
            min_bytes: min,
            avg_bytes: avg,
            max_bytes: max,
            normalization,
        } = *self;
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(StoreError::Invalid {
                what: "chunk parameters",
                detail: format!(
                    "min/avg/max {min}/{avg}/{max} bytes, normalization {normalization}; need \
                     min in {}..={}, avg in {}..={}, max in {}..={}, min <= avg <= max and \
                     normalization in 0..=3",
                    v2020::MINIMUM_MIN,
                    v2020::MINIMUM_MAX,
                    v2020::AVERAGE_MIN,
                    v2020::AVERAGE_MAX,
                    v2020::MAXIMUM_MIN,
                    v2020::MAXIMUM_MAX
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
        assert_eq!(id.to_hex().len(), 64);
    }

    #[test]
    fn params_are_checked() {
        assert!(ChunkParams::default().validate().is_ok());
        let bad = ChunkParams {
            min_bytes: 1 << 20,
            avg_bytes: 1 << 10,
            max_bytes: 1 << 21,
            normalization: 0,
        };
        assert!(bad.validate().is_err());
        let bad = ChunkParams {
            normalization: 4,
            ..ChunkParams::default()
        };
        assert!(bad.validate().is_err());
        // Parameters recorded before the field existed mean level 1.
        let old: ChunkParams =
            serde_json::from_str(r#"{"min_bytes":1,"avg_bytes":2,"max_bytes":3}"#).unwrap();
        assert_eq!(old.normalization, 1);
    }
}
