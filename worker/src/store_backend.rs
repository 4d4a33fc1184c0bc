//! `[store] backend` and `[store.s3]`: where the worker's pack store keeps
//! its packs and manifests (docs/object-storage.md). Reads the secret key
//! from its 0600 file; the secret never reaches logs or errors.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// `[store.s3]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Section {
    /// `https://host:port` (`http://` with `allow_http`, loopback only);
    /// empty for AWS S3 itself.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Key prefix of this worker's objects (default: the worker's name).
    pub prefix: String,
    /// With `secret_access_key_file`; both empty: the AWS environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …).
    pub access_key_id: String,
    /// A file (mode 0600) holding the secret access key.
    pub secret_access_key_file: Option<PathBuf>,
    pub allow_http: bool,
    /// Where fetched packs are cached (default `<data_dir>/packs`; only that
    /// default is supported in this version).
    pub cache_dir: Option<PathBuf>,
    /// Bytes of packs kept in the cache (default 1 GiB; at least one pack).
    pub cache_size: u64,
}

impl Default for S3Section {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            access_key_id: String::new(),
            secret_access_key_file: None,
            allow_http: false,
            cache_dir: None,
            cache_size: pgsnapman_store::backend::DEFAULT_CACHE_SIZE,
        }
    }
}

/// The store's backend from `[store] backend` and `[store.s3]`; `worker` is
/// the default prefix.
pub fn backend(
    kind: &str,
    s3: &S3Section,
    worker: &str,
    data_dir: &Path,
) -> Result<pgsnapman_store::BackendConfig> {
    match kind {
        "local" => Ok(pgsnapman_store::BackendConfig::Local),
        "s3" => {
            if let Some(dir) = &s3.cache_dir
                && dir != &data_dir.join("packs")
            {
                bail!(
                    "store.s3.cache_dir {}: only the default <data_dir>/packs is supported",
                    dir.display()
                );
            }
            let secret = match &s3.secret_access_key_file {
                Some(path) => read_secret(path)?,
                None => String::new(),
            };
            let cfg = pgsnapman_store::S3Config {
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                bucket: s3.bucket.clone(),
                prefix: if s3.prefix.is_empty() {
                    worker.to_string()
                } else {
                    s3.prefix.clone()
                },
                access_key_id: s3.access_key_id.clone(),
                secret_access_key: secret,
                allow_http: s3.allow_http,
                cache_size: s3.cache_size,
            };
            cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(pgsnapman_store::BackendConfig::S3(cfg))
        }
        other => bail!(
            "store.backend {:?} is not one of \"local\", \"s3\"",
            other.chars().take(40).collect::<String>()
        ),
    }
}

/// The secret key file's first line; refused unless only its owner can read it.
fn read_secret(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("store.s3.secret_access_key_file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "store.s3.secret_access_key_file {} is readable by group or others (mode {mode:o}): `chmod 600` it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("store.s3.secret_access_key_file {}", path.display()))?;
    let secret = text.lines().next().unwrap_or_default().trim().to_string();
    if secret.is_empty() {
        bail!(
            "store.s3.secret_access_key_file {} is empty",
            path.display()
        );
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_must_be_private_and_never_shows_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cr3t-value\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s3 = S3Section {
            bucket: "b".into(),
            access_key_id: "AKID".into(),
            secret_access_key_file: Some(path.clone()),
            ..S3Section::default()
        };
        let e = backend("s3", &s3, "w1", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let Ok(pgsnapman_store::BackendConfig::S3(cfg)) = backend("s3", &s3, "w1", dir.path())
        else {
            panic!("expected an s3 backend");
        };
        assert_eq!(cfg.secret_access_key, "s3cr3t-value");
        assert_eq!(cfg.prefix, "w1");
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        let e = backend("nfs", &s3, "w1", dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"local\", \"s3\""), "{e}");
    }
}
