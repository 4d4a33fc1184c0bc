//! The Postgres client binaries on this machine, by major version. Found once
//! at start; a dump uses exactly the server's major.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// One installation's client tools.
#[derive(Debug, Clone)]
pub struct ClientTools {
    pub major: u32,
    pub dir: PathBuf,
    /// `pg_dump --version`, trimmed.
    pub version: String,
}

impl ClientTools {
    pub fn pg_dump(&self) -> PathBuf {
        self.dir.join("pg_dump")
    }

    pub fn pg_dumpall(&self) -> PathBuf {
        self.dir.join("pg_dumpall")
    }

    pub fn psql(&self) -> PathBuf {
        self.dir.join("psql")
    }

    pub fn pg_restore(&self) -> PathBuf {
        self.dir.join("pg_restore")
    }
}

/// Client tools by major version.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    by_major: BTreeMap<u32, ClientTools>,
}

impl Clients {
    /// Runs `pg_dump --version` in each directory holding a pg_dump; the first
    /// directory found for a major wins.
    pub async fn discover(dirs: &[PathBuf]) -> Self {
        let mut by_major = BTreeMap::new();
        for dir in dirs {
            let pg_dump = dir.join("pg_dump");
            if !pg_dump.is_file() {
                continue;
            }
            match version_of(&pg_dump).await {
                Ok((major, version)) => {
                    if by_major.contains_key(&major) {
                        tracing::debug!(dir = %dir.display(), major, "client major already found");
                        continue;
                    }
                    tracing::info!(dir = %dir.display(), major, version = %version, "found postgres client tools");
                    by_major.insert(
                        major,
                        ClientTools {
                            major,
                            dir: dir.clone(),
                            version,
                        },
                    );
                }
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), "cannot use pg_dump: {err:#}");
                }
            }
        }
        Self { by_major }
    }

    pub fn majors(&self) -> Vec<u32> {
        self.by_major.keys().copied().collect()
    }

    /// The tools of exactly `major`, or an error naming what there is.
    pub fn for_major(&self, major: u32) -> Result<&ClientTools> {
        match self.by_major.get(&major) {
            Some(t) => Ok(t),
            None => {
                let found: Vec<String> = self.by_major.keys().map(u32::to_string).collect();
                let found = if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                };
                bail!("no pg_dump for PostgreSQL {major} on this worker (found: {found})")
            }
        }
    }

    /// The newest installation that has a psql, for probing servers.
    pub fn newest_psql(&self) -> Result<&ClientTools> {
        self.by_major
            .values()
            .rev()
            .find(|t| t.psql().is_file())
            .context("no psql found next to any pg_dump on this worker")
    }
}

async fn version_of(pg_dump: &Path) -> Result<(u32, String)> {
    let out = tokio::process::Command::new(pg_dump)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("run {} --version", pg_dump.display()))?;
    if !out.status.success() {
        bail!("{} --version exited with {}", pg_dump.display(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = parse_major(&text).with_context(|| format!("no version number in {text:?}"))?;
    Ok((major, text))
}

/// The major version in `pg_dump --version` output: the first number after
/// "(PostgreSQL)", or else the first token starting with a digit. 9.6 → 9.
pub fn parse_major(text: &str) -> Option<u32> {
    let rest = match text.find(')') {
        Some(i) => &text[i + 1..],
        None => text,
    };
    let token = rest
        .split_whitespace()
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = token.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_are_parsed_from_version_lines() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.14 (Ubuntu 15.14-1.pgdg24.04+1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_dump (PostgreSQL) 17.0"), Some(17));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 16beta2"), Some(16));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn missing_major_names_what_was_found() {
        let mut c = Clients::default();
        let err = c.for_major(16).unwrap_err().to_string();
        assert_eq!(
            err,
            "no pg_dump for PostgreSQL 16 on this worker (found: none)"
        );
        c.by_major.insert(
            15,
            ClientTools {
                major: 15,
                dir: "/x".into(),
                version: "pg_dump (PostgreSQL) 15.1".into(),
            },
        );
        let err = c.for_major(16).unwrap_err().to_string();
        assert_eq!(
            err,
            "no pg_dump for PostgreSQL 16 on this worker (found: 15)"
        );
        assert_eq!(c.for_major(15).unwrap().major, 15);
    }
}
