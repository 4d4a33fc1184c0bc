//! Byte encodings of the index's keys and values (docs/store.md, "Index
//! format"): chunk entries, dump summaries and feature entries. No RocksDB
//! calls here.

use uuid::Uuid;

use crate::chunk::{CHUNK_ID_LEN, ChunkId};
use crate::pack::{ChunkKind, PackId, RecordHeader};

pub(super) const CHUNK_PREFIX: u8 = b'c';
pub(super) const DUMP_PREFIX: u8 = b'd';
pub(super) const FEATURE_PREFIX: u8 = b'f';
/// A pack holding chunks an ingest left uncompressed (`Store::compress_later`).
pub(super) const LATER_PREFIX: u8 = b'l';
/// A chunk an ingest left uncompressed although it chose a delta base for
/// it: `Store::compress_later` encodes it against that base.
pub(super) const LATER_DELTA_PREFIX: u8 = b'b';
pub(super) const CHUNK_KEY_LEN: usize = 1 + CHUNK_ID_LEN;
/// A prefix byte and a 16-byte uuid: dump summaries and pack marks.
pub(super) const UUID_KEY_LEN: usize = 1 + 16;
/// 'f' | slot u8 | super-feature u64 BE
pub(super) const FEATURE_KEY_LEN: usize = 1 + 1 + 8;
/// logical_bytes u64 | new_stored_bytes u64
pub(super) const DUMP_SUMMARY_LEN: usize = 16;
/// pack 16 | offset u64 | stored_len u32 | raw_len u32 | kind u8: a FULL
/// chunk's entry since index format 3 (it has no base to name).
pub(super) const FULL_ENTRY_LEN: usize = 16 + 8 + 4 + 4 + 1;
/// The same followed by base 32: a delta chunk's entry, and every entry of
/// index formats 1 and 2 (FULL ones with an all-zero base).
pub(super) const ENTRY_LEN: usize = FULL_ENTRY_LEN + CHUNK_ID_LEN;
/// A feature entry's value since index format 3: the first 8 bytes of the
/// chunk id (formats 1–2: the whole id). A hint: resolved by a prefix seek
/// of the chunk keys; a collision only proposes a worse base.
pub(super) const FEATURE_PREFIX_LEN: usize = 8;

/// Where a chunk's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub pack: PackId,
    /// Offset of the record header in the pack.
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub kind: ChunkKind,
    /// `ChunkId::ZERO` unless `kind` is `Delta`.
    pub base: ChunkId,
}

impl IndexEntry {
    /// The record header this entry promises to find at `offset`.
    pub fn record_header(&self, chunk: ChunkId) -> RecordHeader {
        RecordHeader {
            chunk,
            kind: self.kind,
            base: self.base,
            raw_len: self.raw_len,
            stored_len: self.stored_len,
        }
    }

    /// The base this chunk's record is decoded against, if it is a delta.
    pub fn delta_base(&self) -> Option<ChunkId> {
        (self.kind == ChunkKind::Delta).then_some(self.base)
    }

    /// `FULL_ENTRY_LEN` bytes for a FULL chunk, `ENTRY_LEN` for a delta.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ENTRY_LEN);
        b.extend_from_slice(self.pack.0.as_bytes());
        b.extend_from_slice(&self.offset.to_le_bytes());
        b.extend_from_slice(&self.stored_len.to_le_bytes());
        b.extend_from_slice(&self.raw_len.to_le_bytes());
        b.push(self.kind.to_byte());
        if self.kind != ChunkKind::Full {
            b.extend_from_slice(&self.base.0);
        }
        b
    }

    /// Reads either length: a `FULL_ENTRY_LEN` entry must be FULL; an
    /// `ENTRY_LEN` one is any kind (index formats 1–2 wrote FULL ones so).
    pub(super) fn decode(b: &[u8]) -> Option<IndexEntry> {
        if b.len() == FULL_ENTRY_LEN {
            let mut long = [0u8; ENTRY_LEN];
            long[..FULL_ENTRY_LEN].copy_from_slice(b);
            return IndexEntry::decode(&long).filter(|e| e.kind == ChunkKind::Full);
        }
        if b.len() != ENTRY_LEN {
            return None;
        }
        let pack = PackId(Uuid::from_slice(&b[0..16]).ok()?);
        let offset = u64::from_le_bytes(b[16..24].try_into().ok()?);
        let stored_len = u32::from_le_bytes(b[24..28].try_into().ok()?);
        let raw_len = u32::from_le_bytes(b[28..32].try_into().ok()?);
        let kind = ChunkKind::from_byte(b[32])?;
        let base = ChunkId(b[33..65].try_into().ok()?);
        Some(IndexEntry {
            pack,
            offset,
            stored_len,
            raw_len,
            kind,
            base,
        })
    }
}

/// The figures of one stored dump, kept beside the chunk entries so that
/// statistics never re-read every manifest. Derived from the manifest: the
/// store writes it after the manifest and repairs it at open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpSummary {
    pub logical_bytes: u64,
    pub new_stored_bytes: u64,
}

impl DumpSummary {
    pub(super) fn encode(&self) -> [u8; DUMP_SUMMARY_LEN] {
        let mut v = [0u8; DUMP_SUMMARY_LEN];
        v[0..8].copy_from_slice(&self.logical_bytes.to_le_bytes());
        v[8..16].copy_from_slice(&self.new_stored_bytes.to_le_bytes());
        v
    }

    pub(super) fn decode(v: &[u8]) -> Option<DumpSummary> {
        if v.len() != DUMP_SUMMARY_LEN {
            return None;
        }
        Some(DumpSummary {
            logical_bytes: u64::from_le_bytes(v[0..8].try_into().ok()?),
            new_stored_bytes: u64::from_le_bytes(v[8..16].try_into().ok()?),
        })
    }
}

pub(super) fn dump_key(dump: &Uuid) -> [u8; UUID_KEY_LEN] {
    let mut k = [0u8; UUID_KEY_LEN];
    k[0] = DUMP_PREFIX;
    k[1..].copy_from_slice(dump.as_bytes());
    k
}

pub(super) fn later_key(pack: &PackId) -> [u8; UUID_KEY_LEN] {
    let mut k = [0u8; UUID_KEY_LEN];
    k[0] = LATER_PREFIX;
    k[1..].copy_from_slice(pack.0.as_bytes());
    k
}

pub(super) fn later_delta_key(id: &ChunkId) -> [u8; CHUNK_KEY_LEN] {
    let mut k = [0u8; CHUNK_KEY_LEN];
    k[0] = LATER_DELTA_PREFIX;
    k[1..].copy_from_slice(&id.0);
    k
}

/// The delta bases an ingest chose for a chunk it stored uncompressed, for
/// `Store::compress_later` (value of a `b` key: base 32 | rebased u8, then
/// optionally fallback 32 | rebased u8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaterDelta {
    pub base: ChunkId,
    /// `base` is the root of its candidate's full chain.
    pub rebased: bool,
    /// Tried when `base` gives no sure win.
    pub fallback: Option<(ChunkId, bool)>,
}

impl LaterDelta {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(2 * (CHUNK_ID_LEN + 1));
        v.extend_from_slice(&self.base.0);
        v.push(u8::from(self.rebased));
        if let Some((id, rebased)) = &self.fallback {
            v.extend_from_slice(&id.0);
            v.push(u8::from(*rebased));
        }
        v
    }

    pub(super) fn decode(v: &[u8]) -> Option<LaterDelta> {
        let one = |b: &[u8]| -> Option<(ChunkId, bool)> {
            let id = <[u8; CHUNK_ID_LEN]>::try_from(&b[..CHUNK_ID_LEN]).ok()?;
            match b[CHUNK_ID_LEN] {
                0 => Some((ChunkId(id), false)),
                1 => Some((ChunkId(id), true)),
                _ => None,
            }
        };
        let n = CHUNK_ID_LEN + 1;
        let (base, fallback) = match v.len() {
            l if l == n => (one(v)?, None),
            l if l == 2 * n => (one(&v[..n])?, Some(one(&v[n..])?)),
            _ => return None,
        };
        Some(LaterDelta {
            base: base.0,
            rebased: base.1,
            fallback,
        })
    }
}

pub(super) fn chunk_key(id: &ChunkId) -> [u8; CHUNK_KEY_LEN] {
    let mut k = [0u8; CHUNK_KEY_LEN];
    k[0] = CHUNK_PREFIX;
    k[1..].copy_from_slice(&id.0);
    k
}

pub(super) fn feature_key(slot: u8, value: u64) -> [u8; FEATURE_KEY_LEN] {
    let mut k = [0u8; FEATURE_KEY_LEN];
    k[0] = FEATURE_PREFIX;
    k[1] = slot;
    k[2..].copy_from_slice(&value.to_be_bytes());
    k
}

/// The value of a feature entry naming `id` (index format 3).
pub(super) fn feature_value(id: &ChunkId) -> [u8; FEATURE_PREFIX_LEN] {
    let mut v = [0u8; FEATURE_PREFIX_LEN];
    v.copy_from_slice(&id.0[..FEATURE_PREFIX_LEN]);
    v
}

/// What a feature entry's value names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FeatureTarget {
    /// Index formats 1–2: the whole id.
    Id(ChunkId),
    /// Index format 3: the id's first bytes.
    Prefix([u8; FEATURE_PREFIX_LEN]),
}

/// Reads a feature entry's value; `None` if it is malformed.
pub(super) fn feature_target(v: &[u8]) -> Option<FeatureTarget> {
    if let Ok(p) = <[u8; FEATURE_PREFIX_LEN]>::try_from(v) {
        return Some(FeatureTarget::Prefix(p));
    }
    <[u8; CHUNK_ID_LEN]>::try_from(v)
        .ok()
        .map(|id| FeatureTarget::Id(ChunkId(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden layouts (docs/store.md): changing one needs a format bump.
    #[test]
    fn layouts_are_fixed() {
        let e = IndexEntry {
            pack: PackId(Uuid::from_bytes([7; 16])),
            offset: 0x0102,
            stored_len: 3,
            raw_len: 4,
            kind: ChunkKind::Delta,
            base: ChunkId([9; 32]),
        };
        let b = e.encode();
        assert_eq!(b.len(), ENTRY_LEN);
        assert_eq!(&b[0..16], &[7; 16]);
        assert_eq!(&b[16..24], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(b[32], 1);
        assert_eq!(&b[33..65], &[9; 32]);
        assert_eq!(IndexEntry::decode(&b), Some(e));
        assert_eq!(e.delta_base(), Some(ChunkId([9; 32])));
        // FULL: no base (format 3), and the format 2 layout still reads.
        let full = IndexEntry {
            kind: ChunkKind::Full,
            base: ChunkId::ZERO,
            ..e
        };
        let short = full.encode();
        assert_eq!(short.len(), FULL_ENTRY_LEN);
        assert_eq!(
            &short[..],
            &b[..FULL_ENTRY_LEN - 1]
                .iter()
                .copied()
                .chain([0])
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(IndexEntry::decode(&short), Some(full));
        let mut v2 = short.clone();
        v2.extend_from_slice(&[0; 32]);
        assert_eq!(IndexEntry::decode(&v2), Some(full));
        let mut bad = b.to_vec();
        bad.truncate(FULL_ENTRY_LEN);
        assert_eq!(IndexEntry::decode(&bad), None, "a short entry must be FULL");
        assert_eq!(IndexEntry::decode(&b[..40]), None);
        let id = ChunkId([5; 32]);
        assert_eq!(feature_value(&id), [5; 8]);
        assert_eq!(feature_target(&[5; 8]), Some(FeatureTarget::Prefix([5; 8])));
        assert_eq!(feature_target(&[5; 32]), Some(FeatureTarget::Id(id)));
        assert_eq!(feature_target(&[5; 9]), None);
        assert_eq!(
            feature_key(2, 0x0102_0304_0506_0708),
            [b'f', 2, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        let s = DumpSummary {
            logical_bytes: 1,
            new_stored_bytes: 2,
        };
        assert_eq!(DumpSummary::decode(&s.encode()), Some(s));
        assert_eq!(later_delta_key(&id)[0], b'b');
        assert_eq!(later_delta_key(&id)[1..], [5; 32]);
        let plan = LaterDelta {
            base: ChunkId([7; 32]),
            rebased: true,
            fallback: None,
        };
        let mut golden = vec![7; 32];
        golden.push(1);
        assert_eq!(plan.encode(), golden);
        assert_eq!(LaterDelta::decode(&golden), Some(plan));
        let plan = LaterDelta {
            fallback: Some((ChunkId([9; 32]), false)),
            ..plan
        };
        golden.extend([9; 32]);
        golden.push(0);
        assert_eq!(plan.encode(), golden);
        assert_eq!(LaterDelta::decode(&golden), Some(plan));
        // A flag other than 0 or 1, or another length, is not a plan.
        golden[32] = 2;
        assert_eq!(LaterDelta::decode(&golden), None);
        assert_eq!(LaterDelta::decode(&golden[..40]), None);
        assert_eq!(LaterDelta::decode(&[]), None);
    }
}
