//! Instance passwords sealed to one worker's X25519 key: libsodium's
//! `crypto_box_seal` (RustCrypto `crypto_box`), so only the holder of the
//! worker's secret key opens them. `pgsnap` seals, the worker opens, the
//! coordinator only checks sizes and fingerprints. No I/O here.
use std::fmt;

use crypto_box::aead::OsRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use crypto_box::{PublicKey, SecretKey};

/// Bytes of an X25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// What sealing adds: the ephemeral public key (32) and the MAC (16).
pub const SEAL_OVERHEAD: usize = 48;
/// Longest password that may be sealed (pgsnap reads at most this much).
pub const MAX_PASSWORD_BYTES: usize = 4096;
/// Longest ciphertext the coordinator stores.
pub const MAX_SEALED_BYTES: usize = MAX_PASSWORD_BYTES + SEAL_OVERHEAD;

/// Why sealing or opening failed. Never carries the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("a seal public key has {0} bytes, not 32")]
    BadPublicKey(usize),
    #[error("the password is empty or longer than {MAX_PASSWORD_BYTES} bytes")]
    BadPassword,
    #[error("a sealed password has {0} bytes, not {min} to {MAX_SEALED_BYTES}", min = SEAL_OVERHEAD + 1)]
    BadLength(usize),
    #[error("the sealed password does not open with this key (sealed to another key, or damaged)")]
    WrongKeyOrDamaged,
    #[error("the opened password is not UTF-8")]
    NotUtf8,
    #[error("cannot seal: {0}")]
    Seal(String),
}

/// The short, stable name of a public key shown to operators: the first
/// 16 bytes of its SHA-256 as hex, in groups of four
/// (`9f3a-0c12-77be-41d0-aa12-bc34-55de-6f70`).
pub fn fingerprint(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    let hex: Vec<String> = digest[..16]
        .chunks(2)
        .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
        .collect();
    hex.join("-")
}

/// The public key in `bytes`, checked for length.
pub fn public_key(bytes: &[u8]) -> Result<PublicKey, SealError> {
    let arr: [u8; PUBLIC_KEY_BYTES] = bytes
        .try_into()
        .map_err(|_| SealError::BadPublicKey(bytes.len()))?;
    Ok(PublicKey::from(arr))
}

/// A new random secret key.
pub fn generate() -> SecretKey {
    SecretKey::generate(&mut OsRng)
}

/// Seals `password` to the worker key `public_key` (anonymous sender).
pub fn seal(public_key: &[u8], password: &str) -> Result<Vec<u8>, SealError> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(SealError::BadPassword);
    }
    let key = self::public_key(public_key)?;
    key.seal(&mut OsRng, password.as_bytes())
        .map_err(|e| SealError::Seal(e.to_string()))
}

/// Checks the length of a ciphertext before it is stored or opened.
pub fn check_sealed(ciphertext: &[u8]) -> Result<(), SealError> {
    if ciphertext.len() <= SEAL_OVERHEAD || ciphertext.len() > MAX_SEALED_BYTES {
        return Err(SealError::BadLength(ciphertext.len()));
    }
    Ok(())
}

/// Opens a ciphertext sealed to `secret`'s public key; the password is
/// wiped from memory when the result is dropped.
pub fn open(secret: &SecretKey, ciphertext: &[u8]) -> Result<Zeroizing<String>, SealError> {
    check_sealed(ciphertext)?;
    let plain = Zeroizing::new(
        secret
            .unseal(ciphertext)
            .map_err(|_| SealError::WrongKeyOrDamaged)?,
    );
    let text = std::str::from_utf8(&plain).map_err(|_| SealError::NotUtf8)?;
    Ok(Zeroizing::new(text.to_string()))
}

/// How a command line names an instance: its name when the shell needs no
/// quoting for it, else its id.
pub fn instance_arg(id: i64, name: &str) -> String {
    let plain = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if plain && !name.chars().all(|c| c.is_ascii_digit()) {
        name.to_string()
    } else {
        id.to_string()
    }
}

/// A sealed password's Debug: its size, never its bytes.
pub struct Sealed<'a>(pub &'a [u8]);

impl fmt::Debug for Sealed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<none>")
        } else {
            write!(f, "<sealed, {} bytes>", self.0.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let secret = generate();
        let public = secret.public_key();
        let sealed = seal(public.as_bytes(), "S3cr3t: p\\w'd ü").unwrap();
        assert_eq!(sealed.len(), "S3cr3t: p\\w'd ü".len() + SEAL_OVERHEAD);
        assert!(!sealed.windows(6).any(|w| w == b"S3cr3t"));
        assert_eq!(open(&secret, &sealed).unwrap().as_str(), "S3cr3t: p\\w'd ü");
        // Sealing is randomized: the same password seals differently.
        assert_ne!(seal(public.as_bytes(), "S3cr3t: p\\w'd ü").unwrap(), sealed);
    }

    #[test]
    fn wrong_key_and_tampering_fail() {
        let secret = generate();
        let sealed = seal(secret.public_key().as_bytes(), "hunter2").unwrap();
        let other = generate();
        assert_eq!(open(&other, &sealed), Err(SealError::WrongKeyOrDamaged));
        for i in [0, 31, 32, 47, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                open(&secret, &bad),
                Err(SealError::WrongKeyOrDamaged),
                "byte {i}"
            );
        }
        assert_eq!(
            open(&secret, &sealed[..SEAL_OVERHEAD]),
            Err(SealError::BadLength(SEAL_OVERHEAD))
        );
        let mut longer = sealed.clone();
        longer.push(0);
        assert_eq!(open(&secret, &longer), Err(SealError::WrongKeyOrDamaged));
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert_eq!(seal(&[0; 31], "x"), Err(SealError::BadPublicKey(31)));
        let key = generate().public_key();
        assert_eq!(seal(key.as_bytes(), ""), Err(SealError::BadPassword));
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert_eq!(seal(key.as_bytes(), &long), Err(SealError::BadPassword));
        assert!(seal(key.as_bytes(), &long[1..]).is_ok());
        assert_eq!(
            check_sealed(&vec![0; MAX_SEALED_BYTES + 1]),
            Err(SealError::BadLength(MAX_SEALED_BYTES + 1))
        );
    }

    #[test]
    fn fingerprints_are_short_and_stable() {
        let fp = fingerprint(&[7; 32]);
        assert_eq!(fp.len(), 39, "{fp}");
        assert_eq!(fp.split('-').count(), 8);
        assert_eq!(fp, fingerprint(&[7; 32]));
        assert_ne!(fp, fingerprint(&[8; 32]));
        // SHA-256 of 32 zero bytes starts 66687aadf862bd77...
        assert!(fingerprint(&[0; 32]).starts_with("6668-7aad-f862-bd77"));
        assert_eq!(format!("{:?}", Sealed(&[1, 2, 3])), "<sealed, 3 bytes>");
        assert_eq!(instance_arg(3, "src-1.a_b"), "src-1.a_b");
        for odd in ["my db", "", "-x", "12", "ü"] {
            assert_eq!(instance_arg(3, odd), "3", "{odd:?}");
        }
    }
}
