//! Files that hold secrets (private keys, tokens): written 0600 atomically
//! (tmp + fsync + rename + fsync of the directory), refused on read when
//! group or others can access them. Contents never appear in an error.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Why a secret file could not be read or written (one line, naming the
/// file and never its content).
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error(
        "{path} is accessible by group or others (mode {mode:04o}): a private key or token must be 0600; run chmod 600 {path}"
    )]
    TooOpen { path: String, mode: u32 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SecretFileError {
    let path = path.display().to_string();
    move |source| SecretFileError::Io { what, path, source }
}

/// Reads a secret file, refusing it when its mode lets group or others in.
pub fn read_private(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let meta = fs::metadata(path).map_err(io_err("read", path))?;
    check_private_mode(path, meta.permissions().mode())?;
    fs::read(path).map_err(io_err("read", path))
}

/// Refuses a file mode with any group or other bit set.
pub fn check_private_mode(path: &Path, mode: u32) -> Result<(), SecretFileError> {
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.display().to_string(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Creates `dir` (and its parents) if missing; a directory it creates is
/// 0700. An existing directory keeps its mode.
pub fn create_private_dir(dir: &Path) -> Result<(), SecretFileError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create directory", dir))
}

/// Writes `bytes` to `path` with mode `mode` so that after a crash `path`
/// holds its old content or all of `bytes`, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SecretFileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(".tmp");
    let tmp = Path::new(&tmp_name);
    // A leftover tmp from a crash may have another mode: start afresh.
    match fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", tmp)(e)),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(io_err("create", tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", tmp))?;
    drop(f);
    fs::rename(tmp, path).map_err(io_err("rename into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// `write_atomic` with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SecretFileError> {
    write_atomic(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_open_ones_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).expect("create");
        let mode = fs::metadata(&sub).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let key = sub.join("k.pem");
        write_private(&key, b"secret").expect("write");
        let mode = fs::metadata(&key).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private(&key).expect("read"), b"secret");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_private(&key).expect_err("0640 is refused").to_string();
        assert!(err.contains("0640") && err.contains("k.pem"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = read_private(&sub.join("missing")).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
