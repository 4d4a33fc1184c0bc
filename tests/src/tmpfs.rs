//! A small tmpfs mounted for one test, to make a real "no space left on
//! device" happen. Needs root (CAP_SYS_ADMIN), as the test machines run;
//! without it the test fails and says so. Unmounted when dropped.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on a fresh temporary directory.
    pub fn mount(mib: u32) -> Result<Self> {
        let dir = crate::shared_tempdir("pgsnapman-tmpfs-");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={mib}m,mode=0755"))
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .context("run mount")?;
        if !out.status.success() {
            bail!(
                "cannot mount a {mib} MiB tmpfs on {} (the disk-full tests need root): {}",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A directory inside the mount.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let p = self.path().join(name);
        std::fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        Ok(p)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process that still has a file open cannot block it.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
