//! What the index costs: entries and key + value bytes per kind (the first
//! key byte) and value length; flushes and full compactions that keep its
//! files near that cost. For `store stats`-like tools and the
//! benchmarks (docs/benchmarks.md, "Half the metadata"); no format rules.

use std::collections::BTreeMap;

use rocksdb::IteratorMode;

use super::Index;
use crate::error::StoreError;

/// Entries and bytes of one kind of key with one value length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindSize {
    /// The key's first byte (`c`, `d`, `f`, `m` for `meta/`).
    pub prefix: u8,
    /// The values' length (a kind has several: FULL and DELTA entries,
    /// feature values of index formats 2 and 3, the `meta/` values).
    pub value_len: usize,
    pub entries: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

impl Index {
    /// Entries and key + value bytes per kind and value length, in that
    /// order (one scan of the whole index; one row per pair in memory).
    pub fn sizes(&self) -> Result<Vec<KindSize>, StoreError> {
        let mut out: BTreeMap<(u8, usize), KindSize> = BTreeMap::new();
        for item in self.db.iterator(IteratorMode::Start) {
            let (k, v) = item.map_err(StoreError::index("scan the index"))?;
            let prefix = k.first().copied().unwrap_or(0);
            let s = out.entry((prefix, v.len())).or_insert(KindSize {
                prefix,
                value_len: v.len(),
                ..KindSize::default()
            });
            s.entries += 1;
            s.key_bytes += k.len() as u64;
            s.value_bytes += v.len() as u64;
        }
        Ok(out.into_values().collect())
    }

    /// Writes the memtable to a table file and drops the write-ahead log
    /// it covered (synced writes are durable without it; this only moves
    /// them). Small stores would otherwise keep every write ever made, until
    /// the 16 MiB write buffer fills, in the log.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map_err(StoreError::index("flush the index"))
    }

    /// Flushes the memtable and compacts the whole index into the bottom
    /// level: overwritten and deleted entries (gc, newer feature entries)
    /// leave the files, and the write-ahead log is emptied.
    pub fn compact(&self) -> Result<(), StoreError> {
        self.flush()?;
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }
}
