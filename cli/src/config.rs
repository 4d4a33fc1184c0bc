//! Which coordinator to talk to: `--coordinator` or `PGSNAPMAN_COORDINATOR`,
//! else `coordinator = "…"` in the config file, else the local default; the
//! same for the CA file (`--ca-file`, `PGSNAPMAN_CA_FILE`, `ca_file`); and
//! the operator token: `PGSNAPMAN_TOKEN`, else the file named by
//! `--token-file` / `PGSNAPMAN_TOKEN_FILE` / `token_file` in the config file.
//! Reads at most one small TOML file and one token file; talks to nothing.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

/// Where a coordinator listens when nothing else is configured.
pub const DEFAULT_COORDINATOR: &str = "https://127.0.0.1:7431";

/// The config file: every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// One URL, several separated by commas, or a list.
    coordinator: Option<OneOrMany>,
    /// Relative paths are taken from the config file's directory.
    ca_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Environment variable holding the token itself (there is deliberately no
/// `--token` flag: every user of the machine can read a process's argv).
pub const TOKEN_ENV: &str = "PGSNAPMAN_TOKEN";
/// Largest token file read (a token is 47 bytes).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The coordinator URL to use, or several separated by commas (tried in
/// order at connect). `flag` is `--coordinator` (clap already read its env
/// variable); `config` is `--config` / `PGSNAPMAN_CONFIG`, which must exist
/// when given.
pub fn coordinator_url(flag: Option<&str>, config: Option<&Path>) -> Result<String> {
    let file = file_config(config)?;
    if let Some(url) = flag {
        return Ok(url.to_string());
    }
    Ok(match file.and_then(|(_, f)| f.coordinator) {
        Some(OneOrMany::One(url)) => url,
        Some(OneOrMany::Many(urls)) => urls.join(","),
        None => DEFAULT_COORDINATOR.to_string(),
    })
}

/// The CA file to verify the coordinator with: `--ca-file` (or its env
/// variable), else `ca_file` in the config file (relative to that file),
/// else none (the system roots).
pub fn ca_file(flag: Option<&Path>, config: Option<&Path>) -> Result<Option<PathBuf>> {
    let file = file_config(config)?;
    if let Some(p) = flag {
        return Ok(Some(p.to_path_buf()));
    }
    Ok(file.and_then(|(cfg_path, f)| f.ca_file.map(|ca| relative_to(&cfg_path, ca))))
}

/// A path from the config file: relative ones are taken from its directory.
fn relative_to(cfg_path: &Path, p: PathBuf) -> PathBuf {
    match cfg_path.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

/// The operator token: `PGSNAPMAN_TOKEN`, else the token file (`flag` is
/// `--token-file`, which clap read from `PGSNAPMAN_TOKEN_FILE` too), else
/// `token_file` of the config file; `None` when none is configured.
pub fn token(flag: Option<&Path>, config: Option<&Path>) -> Result<Option<String>> {
    let file = file_config(config)?;
    if let Some(t) = std::env::var(TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(Some(t.trim().to_string()));
    }
    let path = match (flag, file) {
        (Some(p), _) => p.to_path_buf(),
        (
            None,
            Some((
                cfg_path,
                FileConfig {
                    token_file: Some(p),
                    ..
                },
            )),
        ) => relative_to(&cfg_path, p),
        (None, _) => return Ok(None),
    };
    read_token_file(&path).map(Some)
}

/// Reads a token file, refusing one that group or others may read.
fn read_token_file(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("token file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "token file {} is readable by group or others (mode {mode:o}): chmod 600 it",
            path.display()
        );
    }
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        bail!(
            "token file {} is {} bytes: a token is one short line",
            path.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read token file {}", path.display()))?;
    let t = text.trim();
    if t.is_empty() || t.contains(char::is_whitespace) {
        bail!(
            "token file {} must hold one token on one line",
            path.display()
        );
    }
    Ok(t.to_string())
}

/// The config file (`config`, which must exist when given, else the default
/// one if it exists) and its path.
fn file_config(config: Option<&Path>) -> Result<Option<(PathBuf, FileConfig)>> {
    // Checked even when a flag wins: a mistyped path is never ignored.
    if let Some(p) = config
        && !p.is_file()
    {
        bail!("config file {} does not exist", p.display());
    }
    let path = match config {
        Some(p) => Some(p.to_path_buf()),
        None => default_config_path().filter(|p| p.is_file()),
    };
    let Some(path) = path else {
        return Ok(None);
    };
    let file: FileConfig = Figment::new()
        .merge(Toml::file_exact(&path))
        .extract()
        .map_err(|e| anyhow::anyhow!("read config file {}: {e}", path.display()))?;
    Ok(Some((path, file)))
}

/// `$XDG_CONFIG_HOME/pgsnapman/pgsnap.toml`, or `~/.config/pgsnapman/pgsnap.toml`.
fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("pgsnapman").join("pgsnap.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_then_file_then_default() {
        let dir = std::env::temp_dir().join(format!("pgsnap-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pgsnap.toml");
        std::fs::write(&file, "coordinator = \"http://db-admin:7431\"\n").unwrap();
        assert_eq!(
            coordinator_url(Some("http://x:1"), Some(&file)).unwrap(),
            "http://x:1"
        );
        assert_eq!(
            coordinator_url(None, Some(&file)).unwrap(),
            "http://db-admin:7431"
        );
        std::fs::write(&file, "coordinator = [\"https://a:1\", \"https://b:1\"]\n").unwrap();
        assert_eq!(
            coordinator_url(None, Some(&file)).unwrap(),
            "https://a:1,https://b:1"
        );
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            coordinator_url(None, Some(&file)).unwrap(),
            DEFAULT_COORDINATOR
        );
        std::fs::write(&file, "coordinatr = \"typo\"\n").unwrap();
        assert!(coordinator_url(None, Some(&file)).is_err());
        let missing = dir.join("missing.toml");
        let err = coordinator_url(None, Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("missing.toml"), "{err}");
        let err = coordinator_url(Some("http://x:1"), Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        std::fs::write(&file, "ca_file = \"ca.crt\"\n").unwrap();
        assert_eq!(
            ca_file(None, Some(&file)).unwrap(),
            Some(dir.join("ca.crt"))
        );
        let flag = Path::new("/etc/x.crt");
        assert_eq!(ca_file(Some(flag), Some(&file)).unwrap(), Some(flag.into()));
        std::fs::write(&file, "").unwrap();
        assert_eq!(ca_file(None, Some(&file)).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_files_must_be_private() {
        let dir = tempfile_dir("token");
        let file = dir.join("t");
        std::fs::write(&file, "psm_abc\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_token_file(&file).unwrap_err().to_string();
        assert!(
            err.contains("readable by group or others") && err.contains("644"),
            "{err}"
        );
        assert!(!err.contains("psm_abc"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token_file(&file).unwrap(), "psm_abc");
        std::fs::write(&file, "").unwrap();
        assert!(read_token_file(&file).is_err());
        // token_file in the config file is relative to it.
        let cfg = dir.join("pgsnap.toml");
        std::fs::write(&file, "psm_def\n").unwrap();
        std::fs::write(&cfg, "token_file = \"t\"\n").unwrap();
        if std::env::var_os(TOKEN_ENV).is_none() {
            assert_eq!(token(None, Some(&cfg)).unwrap().as_deref(), Some("psm_def"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgsnap-{what}-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
