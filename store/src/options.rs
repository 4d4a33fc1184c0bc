//! `StoreOptions`: the tunables a store is opened with, and their limits.

use crate::chunk::ChunkParams;
use crate::delta::MAX_DELTA_DEPTH;
use crate::error::StoreError;
use crate::resemblance::FeatureParams;

/// Tunables of a store. `chunking` and `features` only apply when the store
/// is created; an existing store keeps the parameters recorded in its index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoreOptions {
    /// A pack is sealed once it reaches this many bytes (it may exceed it by
    /// one record).
    pub pack_target_bytes: u64,
    /// zstd level applied per new chunk stored whole.
    pub zstd_level: i32,
    pub chunking: ChunkParams,
    /// Longest chain of delta records a new chunk may start (0 stores every
    /// new chunk whole; at most `MAX_DELTA_DEPTH`). A read decodes at most
    /// this many deltas plus one full record.
    pub max_delta_depth: u8,
    /// zstd level of delta frames.
    pub delta_zstd_level: i32,
    /// How chunks are sketched to find delta bases.
    pub features: FeatureParams,
    /// Nice value an ingest's chunker, encoder and writer threads lower
    /// themselves to (0..=19; 0 keeps the caller's): pg_dump and the server
    /// come first, and the store catches up from its read-ahead queue.
    pub ingest_nice: i32,
    /// Most raw bytes one ingest may store uncompressed for `Store::
    /// compress_later` to compress after the dump (0 compresses every new
    /// chunk while the dump runs). Also capped at a quarter of the free
    /// space when the ingest starts, and 0 for object storage
    /// (docs/store.md, "Compression after the dump").
    pub compress_later_max_bytes: u64,
}

impl Default for StoreOptions {
    /// Defaults chosen by the churn benchmark; see docs/store.md.
    fn default() -> Self {
        StoreOptions {
            pack_target_bytes: 64 << 20,
            zstd_level: 1,
            chunking: ChunkParams::default(),
            max_delta_depth: 6,
            delta_zstd_level: 1,
            features: FeatureParams::default(),
            ingest_nice: 10,
            // Off in the library (its tests compare stored bytes); the
            // worker's `store.compress_later_max_bytes` turns it on.
            compress_later_max_bytes: 0,
        }
    }
}

impl StoreOptions {
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        self.chunking.validate()?;
        self.features.validate()?;
        for level in [self.zstd_level, self.delta_zstd_level] {
            if !(1..=19).contains(&level) {
                return Err(StoreError::Invalid {
                    what: "zstd level",
                    detail: format!("{level} is outside 1..=19"),
                });
            }
        }
        if !(0..=19).contains(&self.ingest_nice) {
            return Err(StoreError::Invalid {
                what: "ingest nice value",
                detail: format!("{} is outside 0..=19", self.ingest_nice),
            });
        }
        if self.max_delta_depth > MAX_DELTA_DEPTH {
            return Err(StoreError::Invalid {
                what: "delta depth",
                detail: format!("{} is above {MAX_DELTA_DEPTH}", self.max_delta_depth),
            });
        }
        if !(1 << 20..=4 << 30).contains(&self.pack_target_bytes) {
            return Err(StoreError::Invalid {
                what: "pack target size",
                detail: format!("{} bytes is outside 1 MiB..=4 GiB", self.pack_target_bytes),
            });
        }
        Ok(())
    }
}
