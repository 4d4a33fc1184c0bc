//! Operator tokens: `psm_` + 32 random bytes in base64url (47 characters),
//! stored as their sha256 only; and the bootstrap admin token written 0600
//! to `<data_dir>/admin.token` on first start. Never logs a token.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Role;
use crate::catalog::Catalog;
use crate::error::ApiError;

/// Every token starts with this (so that a leaked one is recognisable).
pub const PREFIX: &str = "psm_";
/// Random bytes in a token.
const RANDOM_BYTES: usize = 32;
/// `psm_` + 43 base64url characters.
pub const TOKEN_LEN: usize = PREFIX.len() + 43;
/// Name of the bootstrap admin token.
pub const BOOTSTRAP_NAME: &str = "bootstrap-admin";
/// File of the bootstrap admin token under the coordinator's data directory.
pub const BOOTSTRAP_FILE: &str = "admin.token";

/// A fresh token from the OS's random source.
pub fn generate() -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What the catalog keeps of a token.
pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// True if `s` has the shape of a token (prefix, length, alphabet), so that
/// garbage is refused without a catalog lookup.
pub fn well_formed(s: &str) -> bool {
    s.len() == TOKEN_LEN
        && s.starts_with(PREFIX)
        && s[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// On a catalog with no usable admin token (first start, or every admin
/// token revoked or expired): creates one and writes it to
/// `<data_dir>/admin.token` (0600, atomically). Returns the file's path when
/// a token was made.
pub async fn bootstrap(catalog: &Catalog, data_dir: &Path) -> Result<Option<PathBuf>> {
    let path = data_dir.join(BOOTSTRAP_FILE);
    let tmp = data_dir.join(format!("{BOOTSTRAP_FILE}.tmp"));
    // Crash order: 1. tmp written and synced, 2. row inserted, 3. renamed.
    // A crash between 2 and 3 leaves an admin token that only tmp holds:
    // finish the rename now (a tmp whose token is unknown is removed).
    if tmp.exists() {
        let held = std::fs::read_to_string(&tmp).unwrap_or_default();
        let known = catalog
            .token_by_sha256(&sha256(held.trim()))
            .await
            .context("look up the token of an unfinished bootstrap")?;
        if known.is_some_and(|t| t.revoked_at.is_none()) {
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("rename to {}", path.display()))?;
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    if catalog
        .has_usable_admin_token()
        .await
        .context("look for an admin token")?
    {
        return Ok(None);
    }
    let token = generate();
    write_private(&tmp, &format!("{token}\n"))?;
    let name = bootstrap_name(catalog).await?;
    let created = catalog
        .create_token(&name, Role::Admin.label(), &sha256(&token), None, "")
        .await;
    match created {
        Ok(_) => {}
        Err(ApiError::Exists(_)) => {
            // Another coordinator on this catalog made one at the same time.
            let _ = std::fs::remove_file(&tmp);
            return Ok(None);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(anyhow::anyhow!("create the bootstrap admin token: {e}"));
        }
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    tracing::info!(path = %path.display(), token = %name, "bootstrap admin token written");
    Ok(Some(path))
}

/// `bootstrap-admin`, or when that name is taken (by a revoked or expired
/// one) `bootstrap-admin-<unix seconds>`.
async fn bootstrap_name(catalog: &Catalog) -> Result<String> {
    let taken = catalog
        .list_tokens()
        .await
        .context("list tokens")?
        .iter()
        .any(|t| t.name == BOOTSTRAP_NAME);
    Ok(if taken {
        format!("{BOOTSTRAP_NAME}-{}", chrono::Utc::now().timestamp())
    } else {
        BOOTSTRAP_NAME.to_string()
    })
}

/// Creates `path` with mode 0600 (replacing it), writes and fsyncs.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_hashed() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        assert_eq!(a.len(), TOKEN_LEN);
        assert_ne!(sha256(&a), sha256(&b));
        assert!(!well_formed(""));
        assert!(!well_formed(&a[..TOKEN_LEN - 1]));
        assert!(!well_formed(&format!("{a}x")));
        assert!(!well_formed(&a.replace(PREFIX, "xyz_")));
        assert!(!well_formed(&format!("{PREFIX}{}", "+".repeat(43))));
        assert!(!well_formed(&"x".repeat(10_000)));
    }

    #[test]
    fn private_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        write_private(&p, "x").unwrap();
        write_private(&p, "y").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "y");
    }
}
