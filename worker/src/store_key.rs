//! `[store.encryption]`: whether the worker's pack store is encrypted at
//! rest and where its key lives (docs/encryption.md). Loads or creates the
//! key file (0600, atomic); the key itself never reaches a log or an error.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use pgsnapman_store::StoreKey;
use serde::{Deserialize, Serialize};

/// The key file's name under the data directory by default.
pub const DEFAULT_KEY_FILE: &str = "store.key";

/// `[store.encryption]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EncryptionSection {
    /// Encrypt packs and manifests; only for a new (empty) store.
    pub enabled: bool,
    /// The key file (default `<data_dir>/store.key`), created on first use.
    pub key_file: Option<PathBuf>,
}

impl EncryptionSection {
    /// The key file of a store under `data_dir`.
    pub fn key_path(&self, data_dir: &Path) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| data_dir.join(DEFAULT_KEY_FILE))
    }

    /// The store key when encryption is on: read, or generated into the key
    /// file on first use. `None` when off.
    pub fn load_key(&self, data_dir: &Path) -> Result<Option<StoreKey>> {
        if !self.enabled {
            return Ok(None);
        }
        let path = self.key_path(data_dir);
        let (key, created) = StoreKey::load_or_create(&path)
            .map_err(|e| anyhow!("store encryption key {}: {e}", path.display()))?;
        if created {
            tracing::warn!(key_id = %key.id(), path = %path.display(),
                "created the store's encryption key: export it (`pgsnapman-worker store key export`) \
                 and keep it apart from the worker; without it no dump can be read");
        } else {
            tracing::info!(key_id = %key.id(), path = %path.display(), "store encryption key loaded");
        }
        Ok(Some(key))
    }
}

/// The key for an offline command: `key_file` if given (it must exist),
/// else `<data_dir>/store.key` if it exists, else none.
pub fn offline_key(data_dir: &Path, key_file: Option<&Path>) -> Result<Option<StoreKey>> {
    let path = match key_file {
        Some(p) => p.to_path_buf(),
        None => {
            let p = data_dir.join(DEFAULT_KEY_FILE);
            if !p.exists() {
                return Ok(None);
            }
            p
        }
    };
    StoreKey::load(&path)
        .map(Some)
        .map_err(|e| anyhow!("store encryption key {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_is_created_once_and_only_when_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let off = EncryptionSection::default();
        assert!(off.load_key(dir.path()).unwrap().is_none());
        assert!(offline_key(dir.path(), None).unwrap().is_none());
        let on = EncryptionSection {
            enabled: true,
            key_file: None,
        };
        let first = on.load_key(dir.path()).unwrap().unwrap();
        let path = dir.path().join(DEFAULT_KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = on.load_key(dir.path()).unwrap().unwrap();
        assert_eq!(first.id(), again.id());
        let offline = offline_key(dir.path(), None).unwrap().unwrap();
        assert_eq!(offline.id(), first.id());
        let missing = dir.path().join("elsewhere.key");
        let err = offline_key(dir.path(), Some(&missing))
            .unwrap_err()
            .to_string();
        assert!(err.contains("elsewhere.key"), "{err}");
    }
}
