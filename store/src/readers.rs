//! Read-only opens in other processes (`pgsnapman-worker store extract`,
//! `store list`) see the index as it was when they opened it, so they look
//! chunks up where they were then. Each holds a shared `flock` on
//! `<root>/readers.lock` for as long as it is open, taken *before* it opens
//! the index. `Store::compress_later` deletes the packs it rewrote only
//! while it can take that lock exclusively: a reader that holds it may still
//! read them (it opened the index before they moved), and one that comes
//! later opens the index after the switch and never needs them. Otherwise
//! the packs stay, with their marks, and a later pass deletes them.
//! (gc's deletions do not wait for readers; docs/store.md.)

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

const LOCK_FILE: &str = "readers.lock";

fn open(root: &Path) -> std::io::Result<File> {
    let path = root.join(LOCK_FILE);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .or_else(|_| File::open(&path))
}

/// A reader's shared lock (waits while a pass holds it exclusively, which
/// is only while it deletes packs). `None` when the file cannot be opened.
pub(crate) fn lock_shared(root: &Path) -> Option<Flock<File>> {
    let file = match open(root) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("reading the store without {LOCK_FILE}: {e}");
            return None;
        }
    };
    match Flock::lock(file, FlockArg::LockShared) {
        Ok(l) => Some(l),
        Err((_, e)) => {
            tracing::debug!("reading the store without a lock on {LOCK_FILE}: {e}");
            None
        }
    }
}

/// The writer's exclusive lock when no reader holds the shared one; `None`
/// while one does (or the lock cannot be taken: then packs stay too).
pub(crate) fn none_reading(root: &Path) -> Option<Flock<File>> {
    let file = open(root).ok()?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}
