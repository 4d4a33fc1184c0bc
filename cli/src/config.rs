//! Which coordinator to talk to: `--coordinator` or `PGSNAPMAN_COORDINATOR`,
//! else `coordinator = "…"` in the config file, else the local default; the
//! same for the CA file (`--ca-file`, `PGSNAPMAN_CA_FILE`, `ca_file`).
//! Reads at most one small TOML file; talks to nothing.
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

/// Where a coordinator listens when nothing else is configured.
pub const DEFAULT_COORDINATOR: &str = "https://127.0.0.1:7431";

/// The config file: every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    coordinator: Option<String>,
    ca_file: Option<PathBuf>,
}

/// The coordinator URL to use. `flag` is `--coordinator` (clap already read
/// its env variable); `config` is `--config` / `PGSNAPMAN_CONFIG`, which must
/// exist when given.
pub fn coordinator_url(flag: Option<&str>, config: Option<&Path>) -> Result<String> {
    let file = read_file(config)?;
    Ok(match flag {
        Some(url) => url.to_string(),
        None => file
            .coordinator
            .unwrap_or_else(|| DEFAULT_COORDINATOR.to_string()),
    })
}

/// The CA file to verify the coordinator with: `--ca-file` (or its env
/// variable), else `ca_file` in the config file (relative to that file),
/// else none (the system roots).
pub fn ca_file(flag: Option<&Path>, config: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(p) = flag {
        return Ok(Some(p.to_path_buf()));
    }
    let (file, path) = (read_file(config)?, config_path(config));
    Ok(file
        .ca_file
        .map(|ca| match path.as_deref().and_then(Path::parent) {
            Some(dir) if ca.is_relative() => dir.join(ca),
            _ => ca,
        }))
}

fn config_path(config: Option<&Path>) -> Option<PathBuf> {
    match config {
        Some(p) => Some(p.to_path_buf()),
        None => default_config_path().filter(|p| p.is_file()),
    }
}

fn read_file(config: Option<&Path>) -> Result<FileConfig> {
    // Checked even when a flag wins: a mistyped path is never ignored.
    if let Some(p) = config
        && !p.is_file()
    {
        bail!("config file {} does not exist", p.display());
    }
    let Some(path) = config_path(config) else {
        return Ok(FileConfig::default());
    };
    Figment::new()
        .merge(Toml::file_exact(&path))
        .extract()
        .map_err(|e| anyhow::anyhow!("read config file {}: {e}", path.display()))
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
}
