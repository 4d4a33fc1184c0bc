//! The index's `meta/` keys: format version, chunking and feature parameters
//! (fixed when a store is created), and the upgrades of version 1 and 2
//! indexes.

use rocksdb::WriteBatch;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{INDEX_FORMAT_VERSION, INDEX_FORMAT_VERSION_MIN, Index};
use crate::chunk::ChunkParams;
use crate::error::StoreError;
use crate::resemblance::FeatureParams;

pub(super) const KEY_FORMAT_VERSION: &[u8] = b"meta/format_version";
const KEY_CHUNK_PARAMS: &[u8] = b"meta/chunk_params";
/// Added in index format 2.
const KEY_FEATURE_PARAMS: &[u8] = b"meta/feature_params";
/// An encrypted store's cipher and key id (JSON; absent: not encrypted).
/// Readable by every index version: older builds ignore it (and then fail
/// on the encrypted manifests, naming the key id; docs/encryption.md).
const KEY_ENCRYPTION: &[u8] = b"meta/encryption";

/// The parameters a store keeps for its lifetime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreParams {
    pub chunking: ChunkParams,
    pub features: FeatureParams,
}

impl Index {
    /// The format version recorded in the index, if any.
    pub(super) fn format_version(&self) -> Result<Option<u32>, StoreError> {
        let ctx = format!("read meta of {}", self.path.display());
        let Some(v) = self
            .db
            .get(KEY_FORMAT_VERSION)
            .map_err(StoreError::index(ctx))?
        else {
            return Ok(None);
        };
        let found = <[u8; 4]>::try_from(v.as_slice())
            .map(u32::from_le_bytes)
            .map_err(|_| self.version_error(u64::MAX))?;
        if !(INDEX_FORMAT_VERSION_MIN..=INDEX_FORMAT_VERSION).contains(&found) {
            return Err(self.version_error(u64::from(found)));
        }
        Ok(Some(found))
    }

    fn version_error(&self, found: u64) -> StoreError {
        StoreError::FormatVersion {
            what: "chunk index",
            path: self.path.clone(),
            found,
            expected: u64::from(INDEX_FORMAT_VERSION),
        }
    }

    /// Records `wanted` in a new index, upgrades a version 1 index (when
    /// `writable`), and returns the parameters the store keeps.
    pub(super) fn check_meta(
        &self,
        wanted: StoreParams,
        writable: bool,
    ) -> Result<StoreParams, StoreError> {
        match self.format_version()? {
            None if writable => {
                let mut batch = WriteBatch::default();
                batch.put(KEY_FORMAT_VERSION, INDEX_FORMAT_VERSION.to_le_bytes());
                batch.put(KEY_CHUNK_PARAMS, to_json(&wanted.chunking)?);
                batch.put(KEY_FEATURE_PARAMS, to_json(&wanted.features)?);
                self.write(batch, "initialise meta")?;
                Ok(wanted)
            }
            None => Err(StoreError::Invalid {
                what: "store",
                detail: format!("{} has no format version", self.path.display()),
            }),
            Some(1) if writable => {
                self.upgrade_v1_to_v2(wanted.features)?;
                self.upgrade_v2_to_v3()?;
                self.read_params()
            }
            Some(2) if writable => {
                self.upgrade_v2_to_v3()?;
                self.read_params()
            }
            // A version 1 index reads as version 2 without features (its
            // layout is a subset); read-only openings never look for bases.
            Some(1) => Ok(StoreParams {
                chunking: self.read_json(KEY_CHUNK_PARAMS, "chunk parameters")?,
                features: wanted.features,
            }),
            Some(_) => self.read_params(),
        }
    }

    fn read_params(&self) -> Result<StoreParams, StoreError> {
        Ok(StoreParams {
            chunking: self.read_json(KEY_CHUNK_PARAMS, "chunk parameters")?,
            features: self.read_json(KEY_FEATURE_PARAMS, "feature parameters")?,
        })
    }

    /// Version 1 → 2. Version 2 keeps every key of version 1 unchanged
    /// (chunk entries of version 1 are all FULL) and adds
    /// `meta/feature_params` and the `f` feature entries. Chunks stored
    /// before the upgrade have no feature entries, so they are never chosen
    /// as bases; the first dumps after it store full chunks that become bases.
    /// One synced batch: a crash leaves version 1 or version 2, never a mix.
    fn upgrade_v1_to_v2(&self, features: FeatureParams) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_FEATURE_PARAMS, to_json(&features)?);
        batch.put(KEY_FORMAT_VERSION, 2u32.to_le_bytes());
        self.write(batch, "upgrade index format 1 to 2")?;
        tracing::info!(path = %self.path.display(), "upgraded chunk index from format 1 to 2");
        Ok(())
    }

    /// Version 2 → 3. Version 3 writes shorter FULL chunk entries and
    /// feature values (entry.rs) and reads both lengths, so every version 2
    /// entry stays valid: the upgrade records the version, nothing else.
    /// Entries are never rewritten; they shrink as gc and new dumps replace
    /// them (`store rebuild-index` rewrites all of them in the new form).
    fn upgrade_v2_to_v3(&self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_FORMAT_VERSION, 3u32.to_le_bytes());
        self.write(batch, "upgrade index format 2 to 3")?;
        tracing::info!(path = %self.path.display(), "upgraded chunk index from format 2 to 3");
        Ok(())
    }

    fn read_json<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<T, StoreError> {
        let raw = self
            .db
            .get(key)
            .map_err(StoreError::index(format!(
                "read meta of {}",
                self.path.display()
            )))?
            .ok_or_else(|| StoreError::Invalid {
                what: "chunk index",
                detail: format!("{} has no {what}", self.path.display()),
            })?;
        serde_json::from_slice(&raw).map_err(|e| StoreError::Invalid {
            what: "chunk index",
            detail: format!("{}: bad {what}: {e}", self.path.display()),
        })
    }

    /// What the store records about its encryption; `None`: not encrypted.
    pub fn encryption(&self) -> Result<Option<crate::crypto::EncryptionMeta>, StoreError> {
        let present = self
            .db
            .get(KEY_ENCRYPTION)
            .map_err(StoreError::index(format!(
                "read meta of {}",
                self.path.display()
            )))?
            .is_some();
        if !present {
            return Ok(None);
        }
        self.read_json(KEY_ENCRYPTION, "encryption record")
            .map(Some)
    }

    /// Records that the store is encrypted (once, when it is created).
    pub(crate) fn set_encryption(
        &self,
        meta: &crate::crypto::EncryptionMeta,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_ENCRYPTION, to_json(meta)?);
        self.write(batch, "record encryption")
    }

    /// Overwrites the format version (tests use it to simulate a newer store).
    #[doc(hidden)]
    pub fn set_format_version_for_test(&self, v: u32) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_FORMAT_VERSION, v.to_le_bytes());
        self.write(batch, "set format version")
    }
}

fn to_json(v: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Invalid {
        what: "store parameters",
        detail: e.to_string(),
    })
}
