//! Integration-test harness: throwaway PostgreSQL clusters on free loopback
//! ports, and the real `pgsnapman-coordinator`, `pgsnapman-worker` and `pgsnap`
//! binaries run as processes. Nothing here is a mock; everything is removed
//! when it is dropped, also when a test panics.

pub mod access;
pub mod cluster;
pub mod logs;
pub mod pgsnap;
pub mod pki;
pub mod proxy;
pub mod raw;
pub mod rowdata;
pub mod s3;
pub mod service;
pub mod tmpfs;
pub mod wait;

pub use access::Access;
pub use cluster::{PgCluster, PgOptions};
pub use pgsnap::Pgsnap;
pub use pki::PkiSource;
pub use proxy::Proxy;
pub use s3::S3Server;
pub use service::{
    AdminClient, Coordinator, CoordinatorOptions, Worker, WorkerOptions, read_admin_token,
    store_tool, worker_tool,
};

use std::path::PathBuf;

/// Directory holding the workspace's built binaries (next to this test's own
/// executable: `target/<profile>/deps/e2e-… → target/<profile>/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe.parent().expect("test binary lives in a directory");
    if deps.ends_with("deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// Path of one of the workspace binaries; panics with the command to build
/// them when missing (the README's test command builds them first).
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` \
         (the README's test command does this)",
        path.display()
    );
    path
}

/// A fresh temporary directory that other users (the unprivileged Postgres OS
/// user, when tests run as root) can traverse.
pub fn shared_tempdir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("make the temporary directory traversable");
    dir
}
