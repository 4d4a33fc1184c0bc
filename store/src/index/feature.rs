//! The feature index (`f` keys): super-feature → the chunk most recently
//! stored with it. Entries are hints: a stale or wrong one only costs
//! compression (the base is looked up by id and every decoded chunk is hash
//! checked), never correctness.

use rocksdb::WriteBatch;

use super::Index;
use super::entry::{FEATURE_KEY_LEN, FEATURE_PREFIX, FeatureTarget, feature_key, feature_target};
use crate::chunk::ChunkId;
use crate::error::StoreError;
use crate::resemblance::Sketch;

/// Feature deletions per synced batch; why: bounds the batch's memory.
const DELETE_BATCH: usize = 10_000;

impl Index {
    /// The chunks named by `sketch`'s super-features, the most often named
    /// first (ties: the lower slot first). At most one per super-feature.
    pub fn candidates(&self, sketch: &Sketch) -> Result<Vec<(ChunkId, u32)>, StoreError> {
        let mut votes: Vec<(ChunkId, u32)> = Vec::new();
        for (slot, value) in sketch.slots() {
            let Some(v) = self
                .db
                .get_pinned(feature_key(slot, value))
                .map_err(StoreError::index("look up a super-feature"))?
            else {
                continue;
            };
            let Some(target) = feature_target(&v) else {
                tracing::warn!(slot, "ignoring a malformed feature entry");
                continue;
            };
            // A prefix whose chunk is gone (a stale hint) proposes nothing.
            let Some(id) = self.resolve(target)? else {
                continue;
            };
            match votes.iter_mut().find(|(c, _)| *c == id) {
                Some((_, n)) => *n += 1,
                None => votes.push((id, 1)),
            }
        }
        // Stable: equal votes keep slot order.
        votes.sort_by_key(|v| std::cmp::Reverse(v.1));
        Ok(votes)
    }

    /// Deletes every feature entry whose chunk `keep` rejects, whose prefix
    /// names no indexed chunk, or that is malformed, in synced batches;
    /// returns how many went. One seek per entry of index format 3.
    pub fn retain_features(&self, keep: impl Fn(&ChunkId) -> bool) -> Result<u64, StoreError> {
        let mut dead: Vec<Box<[u8]>> = Vec::new();
        let mut removed = 0u64;
        self.scan_prefix(FEATURE_PREFIX, "scan features", |k, v| {
            let target = match feature_target(v) {
                Some(t) if k.len() == FEATURE_KEY_LEN => self.resolve(t)?,
                _ => None,
            };
            if !target.is_some_and(|id| keep(&id)) {
                dead.push(k.into());
            }
            if dead.len() >= DELETE_BATCH {
                removed += self.delete_keys(&mut dead)?;
            }
            Ok(())
        })?;
        removed += self.delete_keys(&mut dead)?;
        Ok(removed)
    }

    /// The chunk a feature entry names: a whole id as it is, a prefix by a
    /// seek of the chunk keys (`None` when no indexed chunk has it).
    fn resolve(&self, target: FeatureTarget) -> Result<Option<ChunkId>, StoreError> {
        match target {
            FeatureTarget::Id(id) => Ok(Some(id)),
            FeatureTarget::Prefix(p) => self.chunk_with_prefix(&p),
        }
    }

    fn delete_keys(&self, keys: &mut Vec<Box<[u8]>>) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::default();
        for k in keys.iter() {
            batch.delete(k);
        }
        self.write(batch, "delete feature entries")?;
        let n = keys.len() as u64;
        keys.clear();
        Ok(n)
    }

    /// Number of feature entries (one scan of the `f` keys).
    pub fn feature_entries(&self) -> Result<u64, StoreError> {
        let mut n = 0u64;
        self.scan_prefix(FEATURE_PREFIX, "scan features", |_, _| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }
}
