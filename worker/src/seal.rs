//! The worker's sealing key, `<data_dir>/identity/seal.key` (X25519, mode
//! 0600 in a 0700 directory, created on first start): it opens the instance
//! passwords pgsnap sealed to this worker, in memory, right before a
//! password file is written. Nothing here logs, prints or stores a password.
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use pgsnapman_proto::seal::{self, SealError, SecretKey};
use pgsnapman_proto::v1::{InstanceConnection, InstanceSecret};
use zeroize::Zeroizing;

/// Directory of the worker's keys under its data directory.
pub const IDENTITY_DIR: &str = "identity";
/// The sealing key's file in `identity/`.
pub const SEAL_KEY_FILE: &str = "seal.key";
/// First line of the key file; the second is the secret key in hex
/// (docs/security-seal.md). Bump on any change of the layout.
const HEADER: &str = "pgsnapman-seal-key v1";

/// The worker's X25519 key pair.
pub struct SealKey {
    secret: SecretKey,
    public: [u8; seal::PUBLIC_KEY_BYTES],
    fingerprint: String,
    path: PathBuf,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealKey")
            .field("fingerprint", &self.fingerprint)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// `<data_dir>/identity/seal.key`.
pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_DIR).join(SEAL_KEY_FILE)
}

fn hex(bytes: &[u8]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
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

impl SealKey {
    fn from_secret(secret: SecretKey, path: PathBuf) -> Self {
        let public = *secret.public_key().as_bytes();
        Self {
            fingerprint: seal::fingerprint(&public),
            secret,
            public,
            path,
        }
    }

    /// Reads the key of `data_dir`, creating it (and `identity/`, 0700)
    /// when there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join(IDENTITY_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("set mode 0700 on {}", dir.display()))?;
        let path = key_path(data_dir);
        if path.exists() {
            return Self::load(data_dir);
        }
        let key = Self::from_secret(seal::generate(), path);
        key.write()?;
        tracing::info!(fingerprint = %key.fingerprint, path = %key.path.display(),
            "created this worker's seal key");
        Ok(key)
    }

    /// Reads the key of `data_dir`; refused when the file is readable by
    /// group or others.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = key_path(data_dir);
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("read seal key {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "seal key {} is readable by group or others (mode {mode:o}): `chmod 600` it",
                path.display()
            );
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(&path)
                .with_context(|| format!("read seal key {}", path.display()))?,
        );
        let mut lines = text.lines();
        let secret = match (lines.next(), lines.next().and_then(unhex), lines.next()) {
            (Some(HEADER), Some(bytes), None) => SecretKey::from(*bytes),
            _ => bail!(
                "seal key {} is not a `{HEADER}` file (damaged? move it away to make a new \
                 key, then set the instance passwords of this worker again)",
                path.display()
            ),
        };
        Ok(Self::from_secret(secret, path))
    }

    /// Writes the key: a temporary file (0600), fsync, rename, fsync of
    /// the directory.
    fn write(&self) -> Result<()> {
        let dir = self
            .path
            .parent()
            .context("seal key path has no directory")?;
        let tmp = dir.join(format!("{SEAL_KEY_FILE}.tmp-{}", std::process::id()));
        let text = Zeroizing::new(format!("{HEADER}\n{}\n", *hex(&self.secret.to_bytes())));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("write seal key {}", self.path.display()))
    }

    /// The public key sent in Hello.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals `password` to this worker's own key (a password an older
    /// coordinator sent in clear, before it goes into the mirror).
    pub fn seal_own(&self, password: &str) -> Result<InstanceSecret> {
        Ok(InstanceSecret {
            ciphertext: seal::seal(&self.public, password)?,
            key_fingerprint: self.fingerprint.clone(),
            sealed_for: Vec::new(),
        })
    }

    /// The password `worker` (this worker) connects to `instance` with:
    /// opened from the sealed copy, or `None` when the instance has none
    /// (the worker's own password file applies). Errors name the command
    /// that fixes them and never hold the password.
    pub fn password_of(
        &self,
        instance: &InstanceConnection,
        worker: &str,
    ) -> Result<Option<Zeroizing<String>>> {
        let fix = || {
            format!(
                "run `pgsnap instance set-password {} --worker {worker}`",
                seal::instance_arg(instance.instance_id, &instance.name)
            )
        };
        let Some(sealed) = &instance.sealed_password else {
            // Only from an older coordinator (never stored: see the mirror).
            return Ok(
                (!instance.password.is_empty()).then(|| Zeroizing::new(instance.password.clone()))
            );
        };
        if sealed.ciphertext.is_empty() {
            if sealed.sealed_for.is_empty() {
                return Ok(None);
            }
            bail!(
                "instance {} has no password sealed to worker {worker}: {} (it is sealed to: {})",
                instance.name,
                fix(),
                sealed.sealed_for.join(", ")
            );
        }
        match seal::open(&self.secret, &sealed.ciphertext) {
            Ok(p) => Ok(Some(p)),
            Err(SealError::WrongKeyOrDamaged) if sealed.key_fingerprint != self.fingerprint => {
                bail!(
                    "the password of instance {} is sealed to key {}, but worker {worker}'s \
                     key is {} ({} was re-created): {}",
                    instance.name,
                    sealed.key_fingerprint,
                    self.fingerprint,
                    self.path.display(),
                    fix()
                )
            }
            Err(e) => bail!(
                "cannot open the password of instance {} sealed to worker {worker}: {e}: {}",
                instance.name,
                fix()
            ),
        }
    }
}

/// The password of `instance` for `worker`: opened with `key`; without a
/// key (a runner made by a test or a tool), only an older coordinator's
/// clear password, and a sealed one is an error.
pub fn password_for(
    key: Option<&SealKey>,
    instance: &InstanceConnection,
    worker: &str,
) -> Result<Option<Zeroizing<String>>> {
    match (key, &instance.sealed_password) {
        (Some(key), _) => key.password_of(instance, worker),
        (None, Some(s)) if !s.ciphertext.is_empty() || !s.sealed_for.is_empty() => bail!(
            "instance {} has a sealed password, but this runner has no seal key",
            instance.name
        ),
        (None, _) => {
            Ok((!instance.password.is_empty()).then(|| Zeroizing::new(instance.password.clone())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(sealed: Option<InstanceSecret>) -> InstanceConnection {
        InstanceConnection {
            instance_id: 4,
            name: "src".into(),
            sealed_password: sealed,
            ..Default::default()
        }
    }

    #[test]
    fn key_file_is_private_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::load_or_create(dir.path()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(key.path()), 0o600);
        assert_eq!(mode(&dir.path().join(IDENTITY_DIR)), 0o700);
        let text = std::fs::read_to_string(key.path()).unwrap();
        assert!(text.starts_with("pgsnapman-seal-key v1\n"), "{text}");
        let again = SealKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert!(!format!("{key:?}").contains(&text[22..30]));
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join(IDENTITY_DIR))
                .unwrap()
                .count(),
            1
        );

        std::fs::set_permissions(key.path(), std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = format!("{:#}", SealKey::load_or_create(dir.path()).unwrap_err());
        assert!(
            err.contains("readable by group or others (mode 640)"),
            "{err}"
        );
        std::fs::set_permissions(key.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(key.path(), "pgsnapman-seal-key v1\nzz\n").unwrap();
        let err = format!("{:#}", SealKey::load(dir.path()).unwrap_err());
        assert!(
            err.contains("is not a `pgsnapman-seal-key v1` file"),
            "{err}"
        );
    }

    #[test]
    fn passwords_open_only_with_the_right_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::load_or_create(dir.path()).unwrap();
        let sealed = key.seal_own("S3cr3t-x").unwrap();
        let got = key
            .password_of(&instance(Some(sealed.clone())), "w1")
            .unwrap();
        assert_eq!(got.as_deref().map(String::as_str), Some("S3cr3t-x"));
        assert!(key.password_of(&instance(None), "w1").unwrap().is_none());

        // Another key (seal.key re-created): names both keys and the fix.
        let other_dir = tempfile::tempdir().unwrap();
        let other = SealKey::load_or_create(other_dir.path()).unwrap();
        let err = format!(
            "{:#}",
            other
                .password_of(&instance(Some(sealed.clone())), "w1")
                .unwrap_err()
        );
        assert!(
            err.contains(key.fingerprint()) && err.contains(other.fingerprint()),
            "{err}"
        );
        assert!(
            err.contains("pgsnap instance set-password src --worker w1"),
            "{err}"
        );
        assert!(!err.contains("S3cr3t"), "{err}");

        // Damaged ciphertext, same key.
        let mut bad = sealed.clone();
        let last = bad.ciphertext.len() - 1;
        bad.ciphertext[last] ^= 1;
        let err = format!(
            "{:#}",
            key.password_of(&instance(Some(bad)), "w1").unwrap_err()
        );
        assert!(err.contains("does not open"), "{err}");

        // Sealed to other workers only.
        let missing = InstanceSecret {
            sealed_for: vec!["w1".into()],
            ..Default::default()
        };
        let err = format!(
            "{:#}",
            key.password_of(&instance(Some(missing)), "w2").unwrap_err()
        );
        assert_eq!(
            err,
            "instance src has no password sealed to worker w2: run `pgsnap instance \
             set-password src --worker w2` (it is sealed to: w1)"
        );
    }
}
