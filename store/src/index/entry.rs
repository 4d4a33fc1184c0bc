//! Byte encodings of the index's keys and values (docs/store.md, "Index
//! format"): chunk entries, dump summaries and feature entries. No RocksDB
//! calls here.

use uuid::Uuid;

use crate::chunk::{CHUNK_ID_LEN, ChunkId};
use crate::pack::{ChunkKind, PackId, RecordHeader};

pub(super) const CHUNK_PREFIX: u8 = b'c';
pub(super) const DUMP_PREFIX: u8 = b'd';
pub(super) const FEATURE_PREFIX: u8 = b'f';
pub(super) const CHUNK_KEY_LEN: usize = 1 + CHUNK_ID_LEN;
pub(super) const DUMP_KEY_LEN: usize = 1 + 16;
/// 'f' | slot u8 | super-feature u64 BE
pub(super) const FEATURE_KEY_LEN: usize = 1 + 1 + 8;
/// logical_bytes u64 | new_stored_bytes u64
pub(super) const DUMP_SUMMARY_LEN: usize = 16;
/// pack 16 | offset u64 | stored_len u32 | raw_len u32 | kind u8 | base 32
pub(super) const ENTRY_LEN: usize = 16 + 8 + 4 + 4 + 1 + CHUNK_ID_LEN;

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

    pub(super) fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[0..16].copy_from_slice(self.pack.0.as_bytes());
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b[24..28].copy_from_slice(&self.stored_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.raw_len.to_le_bytes());
        b[32] = self.kind.to_byte();
        b[33..65].copy_from_slice(&self.base.0);
        b
    }

    pub(super) fn decode(b: &[u8]) -> Option<IndexEntry> {
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

pub(super) fn dump_key(dump: &Uuid) -> [u8; DUMP_KEY_LEN] {
    let mut k = [0u8; DUMP_KEY_LEN];
    k[0] = DUMP_PREFIX;
    k[1..].copy_from_slice(dump.as_bytes());
    k
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

/// The chunk id a feature entry's value names, if it is well formed.
pub(super) fn feature_target(v: &[u8]) -> Option<ChunkId> {
    <[u8; CHUNK_ID_LEN]>::try_from(v).ok().map(ChunkId)
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
        assert_eq!(&b[0..16], &[7; 16]);
        assert_eq!(&b[16..24], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(b[32], 1);
        assert_eq!(&b[33..65], &[9; 32]);
        assert_eq!(IndexEntry::decode(&b), Some(e));
        assert_eq!(e.delta_base(), Some(ChunkId([9; 32])));
        assert_eq!(
            feature_key(2, 0x0102_0304_0506_0708),
            [b'f', 2, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        let s = DumpSummary {
            logical_bytes: 1,
            new_stored_bytes: 2,
        };
        assert_eq!(DumpSummary::decode(&s.encode()), Some(s));
    }
}
