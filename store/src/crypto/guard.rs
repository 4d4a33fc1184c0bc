//! The encryption check at `Store` open: an encrypted store needs its own
//! key, and a store holding plain data is never switched to encryption.
//! Errors name the store and the key ids, never a key.

use std::path::Path;
use std::sync::Arc;

use super::{CIPHER, Crypto, StoreKey};
use crate::error::StoreError;
use crate::index::Index;

/// The ciphers a store is opened with: `None` for a plain store. A new
/// store (`empty`) opened with a key records it; `writable` false never
/// records anything.
pub(crate) fn resolve(
    root: &Path,
    index: &Index,
    key: Option<&StoreKey>,
    writable: bool,
    empty: impl FnOnce() -> Result<bool, StoreError>,
) -> Result<Option<Arc<Crypto>>, StoreError> {
    let fail = |detail: String| StoreError::Encryption {
        store: root.to_path_buf(),
        detail,
    };
    match (index.encryption()?, key) {
        (None, None) => Ok(None),
        (Some(meta), None) => Err(fail(format!(
            "encrypted with key {} ({}); no key given: set [store.encryption] enabled = true \
             with that key's key_file, or `pgsnapman-worker store key import` it",
            meta.key_id, meta.cipher
        ))),
        (Some(meta), Some(k)) if meta.key_id != k.id() => Err(fail(format!(
            "encrypted with key {}, but the key given is {} (wrong key file?)",
            meta.key_id,
            k.id()
        ))),
        (Some(meta), Some(_)) if meta.cipher != CIPHER => Err(fail(format!(
            "encrypted with cipher {:?}; this build knows {CIPHER}",
            meta.cipher
        ))),
        (Some(_), Some(k)) => Ok(Some(Arc::new(Crypto::new(k)))),
        // Reading a plain store with a key at hand (an offline tool finding
        // `store.key`) reads it plain.
        (None, Some(_)) if !writable => Ok(None),
        (None, Some(k)) if !empty()? => Err(fail(format!(
            "holds unencrypted data: encryption with key {} cannot be turned on for an \
             existing store; use a new data_dir (or bucket prefix)",
            k.id()
        ))),
        (None, Some(k)) => {
            let crypto = Crypto::new(k);
            index.set_encryption(&crypto.meta())?;
            tracing::info!(store = %root.display(), key_id = %k.id(), "store is encrypted from now on");
            Ok(Some(Arc::new(crypto)))
        }
    }
}
