//! A store's secret key (`StoreKey`): 32 random bytes, its public key id,
//! and its file `pgsnapman-store-key v1` (mode 0600, written atomically).
//! The key's bytes never appear in a `Debug`, `Display` or error string.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::StoreError;

/// First line of a key file; the second is the key in hex (docs/encryption.md).
pub const KEY_FILE_HEADER: &str = "pgsnapman-store-key v1";
/// Length of the key id in hex digits (64 bits of a derived hash).
const KEY_ID_HEX: usize = 16;
/// The longest key file read (two short lines); more is not a key file.
const KEY_FILE_MAX_BYTES: u64 = 4096;

/// A store's master key. Subkeys (record and manifest encryption, chunk
/// naming, the key id) are derived from it with BLAKE3's `derive_key`.
pub struct StoreKey {
    master: Zeroizing<[u8; 32]>,
    id: String,
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    s
}

fn unhex(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl StoreKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> StoreKey {
        let master = Zeroizing::new(bytes);
        let id_hash = blake3::derive_key("pgsnapman 2026 store key id v1", &*master);
        let id = hex(&id_hash[..KEY_ID_HEX / 2]).to_string();
        StoreKey { master, id }
    }

    /// A new random key (the operating system's generator).
    pub fn generate() -> StoreKey {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *bytes);
        StoreKey::from_bytes(*bytes)
    }

    /// The public key id: 16 hex digits derived from the key (it reveals
    /// nothing of the key; a different key has a different id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A subkey for `purpose` (BLAKE3 key derivation).
    pub(crate) fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(blake3::derive_key(purpose, &*self.master))
    }

    /// The key file's text (what `store key export` prints): a header line
    /// and the key in hex.
    pub fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{KEY_FILE_HEADER}\n{}\n", *hex(&*self.master)))
    }

    /// Parses a key file's text (`what` names its source in the error,
    /// which never quotes the text).
    pub fn from_text(text: &str, what: &str) -> Result<StoreKey, StoreError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        match (lines.next(), lines.next().and_then(unhex), lines.next()) {
            (Some(KEY_FILE_HEADER), Some(bytes), None) => Ok(StoreKey::from_bytes(*bytes)),
            _ => Err(StoreError::Invalid {
                what: "store key",
                detail: format!(
                    "{what} is not a `{KEY_FILE_HEADER}` key (two lines: the header, 64 hex digits)"
                ),
            }),
        }
    }

    /// Reads a key file; refused when group or others may read it.
    pub fn load(path: &Path) -> Result<StoreKey, StoreError> {
        let meta = std::fs::metadata(path)
            .map_err(StoreError::io(format!("read store key {}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::Invalid {
                what: "store key",
                detail: format!(
                    "{} is readable by group or others (mode {mode:o}): `chmod 600` it",
                    path.display()
                ),
            });
        }
        if meta.len() > KEY_FILE_MAX_BYTES {
            return Err(StoreError::Invalid {
                what: "store key",
                detail: format!(
                    "{} is {} bytes, more than a key file's {KEY_FILE_MAX_BYTES}",
                    path.display(),
                    meta.len()
                ),
            });
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(StoreError::io(format!("read store key {}", path.display())))?,
        );
        StoreKey::from_text(&text, &path.display().to_string())
    }

    /// Reads the key at `path`, or generates one and writes it there when
    /// there is no file; true when it was created.
    pub fn load_or_create(path: &Path) -> Result<(StoreKey, bool), StoreError> {
        if path.exists() {
            return Ok((StoreKey::load(path)?, false));
        }
        let key = StoreKey::generate();
        key.write_new(path)?;
        Ok((key, true))
    }

    /// Writes this key to `path`, which must not exist: a temporary file
    /// (0600), fsync, link into place (fails if another appeared), fsync of
    /// the directory.
    pub fn write_new(&self, path: &Path) -> Result<(), StoreError> {
        let dir = path.parent().ok_or_else(|| StoreError::Invalid {
            what: "store key path",
            detail: format!("{} has no directory", path.display()),
        })?;
        std::fs::create_dir_all(dir)
            .map_err(StoreError::io(format!("create {}", dir.display())))?;
        let mut tmp_name = path.as_os_str().to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = Path::new(&tmp_name);
        let text = self.to_text();
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            // A hard link, not a rename: it fails if `path` appeared meanwhile,
            // so an existing key is never replaced.
            std::fs::hard_link(tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        let _ = std::fs::remove_file(tmp);
        written.map_err(StoreError::io(format!(
            "write store key {}",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_atomic_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let (key, created) = StoreKey::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = StoreKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.id(), key.id());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // An existing key is never replaced.
        assert!(StoreKey::generate().write_new(&path).is_err());
        assert_eq!(StoreKey::load(&path).unwrap().id(), key.id());
        // Export text imports to the same key.
        let text = key.to_text();
        assert_eq!(StoreKey::from_text(&text, "stdin").unwrap().id(), key.id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = StoreKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn key_never_shows_and_bad_text_is_not_echoed() {
        let key = StoreKey::from_bytes([7; 32]);
        let secret = hex(&[7; 32]).to_string();
        assert!(!format!("{key:?}").contains(&secret));
        assert_eq!(key.id().len(), KEY_ID_HEX);
        assert_ne!(key.id(), StoreKey::from_bytes([8; 32]).id());
        let bad = format!("{KEY_FILE_HEADER}\n{}zz\n", &secret[..62]);
        let err = StoreKey::from_text(&bad, "stdin").unwrap_err().to_string();
        assert!(
            err.contains("stdin") && !err.contains(&secret[..62]),
            "{err}"
        );
    }
}
