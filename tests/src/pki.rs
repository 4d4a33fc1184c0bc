//! Where a test coordinator's CA comes from. By default every coordinator of
//! a test run shares one CA (created once under the target directory), the
//! way operators run several coordinators: one CA, its `pki/` copied.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use pgsnapman_proto::secret_file;

/// Where a coordinator's CA comes from.
#[derive(Debug, Clone, Default)]
pub enum PkiSource {
    /// The test run's shared CA: restarted and sibling coordinators trust
    /// each other, and a worker's CA file stays valid across restarts.
    #[default]
    Shared,
    /// A CA of its own, created by the coordinator on first start.
    Own,
    /// The CA of another coordinator: the `pki/ca.crt` and `pki/ca.key` of
    /// this data directory are copied (how docs/security-tls.md says to run
    /// several coordinators).
    From(PathBuf),
}

/// The directory holding the shared CA (`ca.crt`, `ca.key`).
pub fn shared_ca_dir() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| create_shared_ca().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn create_shared_ca() -> Result<PathBuf> {
    let base = crate::bin_dir().join("pgsnapman-test-ca");
    if base.join("ca.crt").exists() {
        return Ok(base);
    }
    // Made aside and renamed into place, so that concurrent test processes
    // never see half a CA: the first rename wins, the others use it.
    let tmp = tempfile::Builder::new()
        .prefix("pgsnapman-test-ca-")
        .tempdir_in(crate::bin_dir())
        .context("create a directory for the test CA")?;
    let mut cfg = pgsnapman_coordinator::config::Config::default();
    cfg.coordinator.data_dir = tmp.path().to_path_buf();
    pgsnapman_coordinator::pki::Pki::load(&cfg).context("create the test CA")?;
    if std::fs::rename(tmp.path().join("pki"), &base).is_err() && !base.join("ca.crt").exists() {
        anyhow::bail!("cannot put the test CA at {}", base.display());
    }
    Ok(base)
}

/// Copies the CA of `from` (a directory with `ca.crt` and `ca.key`) into
/// `<data_dir>/pki/`, unless that already holds a CA.
pub fn install_ca(from: &Path, data_dir: &Path) -> Result<()> {
    let pki = data_dir.join("pki");
    if pki.join("ca.crt").exists() {
        return Ok(());
    }
    secret_file::create_private_dir(&pki)?;
    let key = secret_file::read_private(&from.join("ca.key"))?;
    secret_file::write_private(&pki.join("ca.key"), &key)?;
    let cert = std::fs::read(from.join("ca.crt"))
        .with_context(|| format!("read {}", from.join("ca.crt").display()))?;
    secret_file::write_atomic(&pki.join("ca.crt"), &cert, 0o644)?;
    Ok(())
}
