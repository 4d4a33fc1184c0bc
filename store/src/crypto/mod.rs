//! Encryption at rest (docs/encryption.md): XChaCha20-Poly1305 per pack
//! record (bound to its header) and per manifest (bound to its dump), and
//! keyed BLAKE3 chunk names, all under subkeys of one `StoreKey`. Owns no
//! file but the key file; callers decide what to seal.

mod guard;
mod key;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chunk::Naming;
use crate::pack::RecordHeader;

pub(crate) use guard::resolve;
pub use key::{KEY_FILE_HEADER, StoreKey};

/// The AEAD's name as recorded in a store's metadata.
pub const CIPHER: &str = "xchacha20poly1305";
/// Random nonce length (192 bits: collisions are negligible at any volume).
pub const NONCE_LEN: usize = 24;
/// Authentication tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed record or manifest adds: nonce + tag.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// First 8 bytes of an encrypted manifest file.
pub const MANIFEST_MAGIC: &[u8; 8] = b"PGSNMENC";
/// Layout version of an encrypted manifest's envelope.
pub const MANIFEST_ENVELOPE_VERSION: u16 = 1;
/// magic 8 | version u16 | key id 8 | nonce 24
const ENVELOPE_HEADER_LEN: usize = 8 + 2 + 8 + NONCE_LEN;

/// What a store records about its encryption (index `meta/encryption`):
/// never the key, only its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionMeta {
    pub cipher: String,
    pub key_id: String,
}

/// The ciphers and chunk naming of one encrypted store.
pub struct Crypto {
    key_id: String,
    records: XChaCha20Poly1305,
    manifests: XChaCha20Poly1305,
    naming: Naming,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypto")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Associated data of a record: everything in its header but `stored_len`
/// (which the sealing changes): a record moved under another chunk's
/// header, or its header altered, fails to open.
fn record_aad(h: &RecordHeader) -> [u8; 16 + 32 + 1 + 32 + 4] {
    let mut a = [0u8; 16 + 32 + 1 + 32 + 4];
    a[0..16].copy_from_slice(b"pgsnapman rec v1");
    a[16..48].copy_from_slice(&h.chunk.0);
    a[48] = h.kind.to_byte();
    a[49..81].copy_from_slice(&h.base.0);
    a[81..85].copy_from_slice(&h.raw_len.to_le_bytes());
    a
}

impl Crypto {
    pub fn new(key: &StoreKey) -> Crypto {
        let records =
            XChaCha20Poly1305::new((&*key.derive("pgsnapman 2026 pack record v1")).into());
        let manifests = XChaCha20Poly1305::new((&*key.derive("pgsnapman 2026 manifest v1")).into());
        Crypto {
            key_id: key.id().to_string(),
            records,
            manifests,
            naming: Naming::Keyed(*key.derive("pgsnapman 2026 chunk id v1")),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// How this store names chunks: BLAKE3 keyed with a subkey.
    pub fn naming(&self) -> Naming {
        self.naming
    }

    /// What the store records about itself.
    pub fn meta(&self) -> EncryptionMeta {
        EncryptionMeta {
            cipher: CIPHER.to_string(),
            key_id: self.key_id.clone(),
        }
    }

    /// Seals a record's compressed bytes: nonce | ciphertext | tag. The
    /// header's `stored_len` is ignored (the caller sets it to the result's
    /// length).
    pub fn seal_record(&self, header: &RecordHeader, plain: &[u8]) -> Result<Vec<u8>, String> {
        let nonce = random_nonce();
        let aad = record_aad(header);
        let ct = self
            .records
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| format!("cannot encrypt chunk {}", header.chunk))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a sealed record; the error (one line) names the key id.
    pub fn open_record(&self, header: &RecordHeader, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < OVERHEAD {
            return Err(format!(
                "sealed record of {} bytes is shorter than nonce and tag",
                sealed.len()
            ));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let aad = record_aad(header);
        self.records
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| {
                format!(
                    "does not decrypt with key {} (wrong key, or the record was altered or moved)",
                    self.key_id
                )
            })
    }

    /// An encrypted manifest file: envelope header, then the sealed bytes of
    /// the plain manifest, bound to its dump.
    pub fn seal_manifest(&self, dump: Uuid, plain: &[u8]) -> Result<Vec<u8>, String> {
        let nonce = random_nonce();
        let mut out = Vec::with_capacity(ENVELOPE_HEADER_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(MANIFEST_MAGIC);
        out.extend_from_slice(&MANIFEST_ENVELOPE_VERSION.to_le_bytes());
        out.extend_from_slice(&key_id_bytes(&self.key_id));
        out.extend_from_slice(&nonce);
        let aad = manifest_aad(&out, dump);
        let ct = self
            .manifests
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| format!("cannot encrypt the manifest of dump {dump}"))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens an encrypted manifest of `dump` (from its file name).
    pub fn open_manifest(&self, dump: Uuid, file: &[u8]) -> Result<Vec<u8>, String> {
        let found = envelope_key_id(file)?;
        if found != self.key_id {
            return Err(format!(
                "encrypted with key {found}, not with the store's key {}",
                self.key_id
            ));
        }
        let (head, ct) = file.split_at(ENVELOPE_HEADER_LEN);
        let aad = manifest_aad(head, dump);
        self.manifests
            .decrypt(
                XNonce::from_slice(&head[ENVELOPE_HEADER_LEN - NONCE_LEN..]),
                Payload { msg: ct, aad: &aad },
            )
            .map_err(|_| {
                format!(
                    "does not decrypt with key {} for dump {dump} (altered, or another dump's)",
                    self.key_id
                )
            })
    }
}

fn manifest_aad(head: &[u8], dump: Uuid) -> Vec<u8> {
    let mut aad = head.to_vec();
    aad.extend_from_slice(dump.as_bytes());
    aad
}

fn key_id_bytes(id: &str) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = id
            .get(2 * i..2 * i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0);
    }
    out
}

/// The key id named by the first encrypted manifest under `dir` (`None`:
/// none is encrypted), for telling which key a store needs without it.
pub fn manifests_key_id(dir: &std::path::Path) -> Result<Option<String>, crate::StoreError> {
    for listed in crate::manifest::ManifestFiles::list(dir)? {
        let (_, path) = listed?;
        let bytes = std::fs::read(&path)
            .map_err(crate::StoreError::io(format!("read {}", path.display())))?;
        if let Ok(id) = envelope_key_id(&bytes) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The key id an encrypted manifest names (its envelope is checked).
pub fn envelope_key_id(file: &[u8]) -> Result<String, String> {
    if file.len() < ENVELOPE_HEADER_LEN + TAG_LEN || !file.starts_with(MANIFEST_MAGIC) {
        return Err("not an encrypted manifest (bad magic or too short)".to_string());
    }
    let version = u16::from_le_bytes([file[8], file[9]]);
    if version != MANIFEST_ENVELOPE_VERSION {
        return Err(format!(
            "encrypted manifest envelope version {version}, this build reads {MANIFEST_ENVELOPE_VERSION}"
        ));
    }
    Ok(file[10..18].iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkId;
    use crate::pack::ChunkKind;

    fn header(chunk: u8) -> RecordHeader {
        RecordHeader {
            chunk: ChunkId([chunk; 32]),
            kind: ChunkKind::Full,
            base: ChunkId::ZERO,
            raw_len: 5,
            stored_len: 0,
        }
    }

    #[test]
    fn records_round_trip_and_tampering_fails() {
        let c = Crypto::new(&StoreKey::from_bytes([1; 32]));
        let sealed = c.seal_record(&header(1), b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(c.open_record(&header(1), &sealed).unwrap(), b"hello");
        // Random nonces: the same record seals differently.
        assert_ne!(c.seal_record(&header(1), b"hello").unwrap(), sealed);
        for i in [0, NONCE_LEN, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            let err = c.open_record(&header(1), &bad).unwrap_err();
            assert!(err.contains(c.key_id()), "{err}");
        }
        assert!(c.open_record(&header(1), &sealed[..OVERHEAD - 1]).is_err());
        // An altered header (raw length) fails too.
        let mut h = header(1);
        h.raw_len = 6;
        assert!(c.open_record(&h, &sealed).is_err());
    }

    #[test]
    fn swapped_records_and_wrong_keys_fail() {
        let c = Crypto::new(&StoreKey::from_bytes([1; 32]));
        let a = c.seal_record(&header(1), b"aaaaa").unwrap();
        let b = c.seal_record(&header(2), b"bbbbb").unwrap();
        assert!(c.open_record(&header(2), &a).is_err());
        assert!(c.open_record(&header(1), &b).is_err());
        let other = Crypto::new(&StoreKey::from_bytes([2; 32]));
        let err = other.open_record(&header(1), &a).unwrap_err();
        assert!(err.contains(other.key_id()), "{err}");
        assert_ne!(c.naming().id(b"x"), other.naming().id(b"x"));
        assert_ne!(c.naming().id(b"x"), ChunkId::of(b"x"));
    }

    #[test]
    fn manifests_round_trip_bound_to_their_dump_and_key() {
        let c = Crypto::new(&StoreKey::from_bytes([1; 32]));
        let (d1, d2) = (Uuid::now_v7(), Uuid::now_v7());
        let file = c.seal_manifest(d1, b"manifest bytes").unwrap();
        assert!(file.starts_with(MANIFEST_MAGIC));
        assert_eq!(envelope_key_id(&file).unwrap(), c.key_id());
        assert_eq!(c.open_manifest(d1, &file).unwrap(), b"manifest bytes");
        assert!(c.open_manifest(d2, &file).is_err());
        let mut bad = file.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(c.open_manifest(d1, &bad).is_err());
        let other = Crypto::new(&StoreKey::from_bytes([2; 32]));
        let err = other.open_manifest(d1, &file).unwrap_err();
        assert!(
            err.contains(c.key_id()) && err.contains(other.key_id()),
            "{err}"
        );
    }
}
