//! What the index costs: entries and key + value bytes per kind (the first
//! key byte), and a full compaction. For `store stats`-like tools and the
//! benchmarks (docs/benchmarks.md, "Half the metadata"); no format rules.

use rocksdb::IteratorMode;

use super::Index;
use crate::error::StoreError;

/// Entries and bytes of one kind of key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindSize {
    /// The key's first byte (`c`, `d`, `f`, `m` for `meta/`).
    pub prefix: u8,
    pub entries: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

impl Index {
    /// Entries and key + value bytes per kind, in prefix order (one scan
    /// of the whole index).
    pub fn sizes(&self) -> Result<Vec<KindSize>, StoreError> {
        let mut out: Vec<KindSize> = Vec::new();
        for item in self.db.iterator(IteratorMode::Start) {
            let (k, v) = item.map_err(StoreError::index("scan the index"))?;
            let prefix = k.first().copied().unwrap_or(0);
            if out.last().is_none_or(|s| s.prefix != prefix) {
                out.push(KindSize {
                    prefix,
                    ..KindSize::default()
                });
            }
            if let Some(s) = out.last_mut() {
                s.entries += 1;
                s.key_bytes += k.len() as u64;
                s.value_bytes += v.len() as u64;
            }
        }
        Ok(out)
    }

    /// Flushes the memtable and compacts the whole index into the bottom
    /// level: overwritten and deleted entries (gc, newer feature entries)
    /// leave the files, and the write-ahead log is emptied.
    pub fn compact(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map_err(StoreError::index("flush the index"))?;
        self.db.compact_range::<&[u8], &[u8]>(None, None);
        Ok(())
    }
}
