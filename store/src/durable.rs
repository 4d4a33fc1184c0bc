//! Crash-safe file-system steps: fsync of a directory and atomic replacement
//! of a small file (tmp + fsync + rename + fsync dir).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::crash::{self, CrashPoint};
use crate::error::StoreError;

/// Suffix of a file being written by `write_atomic`; leftovers are garbage.
pub const TMP_SUFFIX: &str = ".tmp";

/// Makes renames and creations inside `dir` durable.
pub fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(format!("fsync directory {}", dir.display())))
}

/// Writes `bytes` to `path` so that after a crash `path` holds either nothing
/// (or its old content) or all of `bytes`, never a part. Only manifests are
/// written this way (the crash points are named for them).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().ok_or_else(|| StoreError::Invalid {
        what: "path",
        detail: format!("{} has no parent directory", path.display()),
    })?;
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(TMP_SUFFIX);
    let tmp = Path::new(&tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(StoreError::io(format!("create {}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(StoreError::io(format!("write {}", tmp.display())))?;
    drop(f);
    crash::at(CrashPoint::ManifestTmpWritten);
    fs::rename(tmp, path).map_err(StoreError::io(format!(
        "rename {} to {}",
        tmp.display(),
        path.display()
    )))?;
    crash::at(CrashPoint::ManifestRenamed);
    fsync_dir(dir)?;
    crash::at(CrashPoint::ManifestDurable);
    Ok(())
}
