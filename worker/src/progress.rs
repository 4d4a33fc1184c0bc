//! How far a running task is: its phase and bytes, written by the task's
//! work and read by the lease renewals. Knows nothing of tasks or leases.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How far a running task is; reported to the coordinator about once a
/// second while it changes (`pgsnap … --wait` shows it).
#[derive(Debug, Default)]
pub struct TaskProgress {
    /// Bytes done so far (dumped into the store, or fed to pg_restore).
    pub done: Arc<AtomicU64>,
    /// Bytes in all; 0 when unknown (a dump's size is known at its end).
    pub total: AtomicU64,
    /// What the task is doing: "dump", "restore", "verify", …
    phase: Mutex<&'static str>,
}

impl TaskProgress {
    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    pub fn phase(&self) -> &'static str {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// (phase, done, total) now.
    pub fn snapshot(&self) -> (&'static str, u64, u64) {
        (
            self.phase(),
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}
