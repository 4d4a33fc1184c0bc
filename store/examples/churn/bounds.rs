//! Reference points for the churn benchmark, from external tools: the
//! `zstd --patch-from` size of each day against the day before (the lower
//! bound a delta store aims at) and restic's repository growth per day.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Bytes of `zstd --patch-from=<prev> <cur>` at zstd's default level (3),
/// for every day after the first (index 0 is day 2).
pub fn patch_from(dumps: &[Vec<u8>], dir: &Path) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for pair in dumps.windows(2) {
        let prev = dir.join("prev.sql");
        let cur = dir.join("cur.sql");
        let patch = dir.join("cur.sql.zst");
        fs::write(&prev, &pair[0])?;
        fs::write(&cur, &pair[1])?;
        let status = Command::new("zstd")
            .arg("-q")
            .arg("-f")
            .arg(format!("--patch-from={}", prev.display()))
            .arg(&cur)
            .arg("-o")
            .arg(&patch)
            .status()
            .map_err(|e| format!("run zstd (apt-get install -y zstd): {e}"))?;
        if !status.success() {
            return Err(format!("zstd --patch-from failed: {status}").into());
        }
        out.push(fs::metadata(&patch)?.len());
    }
    Ok(out)
}

/// restic's repository growth per day (index 0 is day 1): each dump is
/// backed up from stdin into one repository (format 2, compression auto).
pub fn restic(dumps: &[Vec<u8>], dir: &Path) -> Result<Vec<u64>> {
    let repo = dir.join("restic-repo");
    let restic = |args: &[&str]| {
        let mut c = Command::new("restic");
        c.arg("--repo")
            .arg(&repo)
            .arg("--quiet")
            .args(args)
            .env("RESTIC_PASSWORD", "bench")
            .env("RESTIC_CACHE_DIR", dir.join("restic-cache"));
        c
    };
    let status = restic(&["init", "--repository-version", "2"])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("run restic (apt-get install -y restic): {e}"))?;
    if !status.success() {
        return Err(format!("restic init failed: {status}").into());
    }
    let mut out = Vec::new();
    let mut before = dir_bytes(&repo)?;
    for dump in dumps {
        let mut child = restic(&["backup", "--stdin", "--stdin-filename", "dump.sql"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or("restic has no stdin")?
            .write_all(dump)?;
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("restic backup failed: {status}").into());
        }
        let after = dir_bytes(&repo)?;
        out.push(after.saturating_sub(before));
        before = after;
    }
    Ok(out)
}

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
