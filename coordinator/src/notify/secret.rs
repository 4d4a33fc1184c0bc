//! Channel secrets (webhook HMAC keys, SMTP passwords) sealed under the
//! coordinator's notify key before they reach the catalog, and opened only
//! to send. The key file is 0600, written atomically, created on first use.
use std::path::{Path, PathBuf};

use crypto_secretbox::aead::{Aead, AeadCore, KeyInit, OsRng};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use pgsnapman_proto::secret_file;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// First byte of a sealed secret (docs/alerts.md "Secrets").
pub const SEALED_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;
/// Longest secret accepted (an HMAC key or a password, not a file).
pub const MAX_SECRET_BYTES: usize = 1024;

/// The notify key: 32 random bytes in a 0600 file.
pub struct NotifyKey {
    key: Zeroizing<[u8; KEY_LEN]>,
    path: PathBuf,
}

impl NotifyKey {
    /// Reads the key file, creating it (0600, atomically) when absent and
    /// `create` is set.
    pub fn load(path: &Path, create: bool) -> anyhow::Result<Self> {
        match secret_file::read_private(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "notify key file {} holds {} bytes, not {KEY_LEN}",
                        path.display(),
                        bytes.len()
                    )
                })?;
                Ok(Self {
                    key: Zeroizing::new(key),
                    path: path.to_path_buf(),
                })
            }
            Err(secret_file::SecretFileError::Io { source, .. })
                if create && source.kind() == std::io::ErrorKind::NotFound =>
            {
                let key = XSalsa20Poly1305::generate_key(&mut OsRng);
                let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
                bytes.copy_from_slice(key.as_slice());
                secret_file::write_private(path, bytes.as_slice())?;
                tracing::info!(path = %path.display(), "notify key created");
                Self::load(path, false)
            }
            Err(e) => Err(anyhow::anyhow!(
                "notify key (to seal or open channel secrets): {e}"
            )),
        }
    }

    /// 16 hex digits of the key's SHA-256: which key sealed a secret.
    pub fn id(&self) -> String {
        let d = Sha256::digest(self.key.as_slice());
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cipher(&self) -> XSalsa20Poly1305 {
        XSalsa20Poly1305::new(Key::from_slice(self.key.as_slice()))
    }

    /// `SEALED_VERSION`, a random nonce, then ciphertext and tag.
    pub fn seal(&self, secret: &[u8]) -> anyhow::Result<Vec<u8>> {
        let nonce = XSalsa20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher()
            .encrypt(&nonce, secret)
            .map_err(|_| anyhow::anyhow!("seal a channel secret"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a sealed secret of channel `channel` sealed under key `key_id`.
    pub fn open(
        &self,
        channel: &str,
        key_id: &str,
        sealed: &[u8],
    ) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        if key_id != self.id() {
            anyhow::bail!(
                "the secret of channel {channel:?} was sealed under notify key {key_id}, but {} is key {}: copy the key file of the coordinator that added the channel (docs/alerts.md), or add the channel again",
                self.path.display(),
                self.id()
            );
        }
        let (version, rest) = sealed
            .split_first()
            .ok_or_else(|| anyhow::anyhow!("the secret of channel {channel:?} is empty"))?;
        if *version != SEALED_VERSION || rest.len() < NONCE_LEN {
            anyhow::bail!(
                "the secret of channel {channel:?} has format version {version}, expected {SEALED_VERSION}"
            );
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), ct)
            .map(Zeroizing::new)
            .map_err(|_| {
                anyhow::anyhow!(
                    "the secret of channel {channel:?} does not open under notify key {key_id}"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn key_is_created_private_and_seals_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.key");
        assert!(
            NotifyKey::load(&path, false).is_err(),
            "not created unasked"
        );
        let key = NotifyKey::load(&path, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = NotifyKey::load(&path, true).unwrap();
        assert_eq!(key.id(), again.id(), "the same key is read back");

        let sealed = key.seal(b"hunter2").unwrap();
        assert_eq!(sealed[0], SEALED_VERSION);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let open = again.open("c", &key.id(), &sealed).unwrap();
        assert_eq!(open.as_slice(), b"hunter2");

        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(
            again.open("c", &key.id(), &bad).is_err(),
            "tampering is caught"
        );
        let e = again.open("c", "0000000000000000", &sealed).unwrap_err();
        assert!(e.to_string().contains("0000000000000000"), "{e}");
    }
}
