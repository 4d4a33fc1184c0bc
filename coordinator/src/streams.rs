//! The long-lived streams each worker holds open on this coordinator: bounded
//! per worker (lease.max_lease_streams / max_upload_streams) and cut at once
//! when the worker is revoked. Counts only; the streams run in `link.rs`.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Lease,
    Upload,
}

impl StreamKind {
    fn label(self) -> &'static str {
        match self {
            StreamKind::Lease => "lease",
            StreamKind::Upload => "upload",
        }
    }
}

#[derive(Default)]
struct Entry {
    lease: usize,
    upload: usize,
    /// Cancelled (and replaced) when the worker is revoked.
    cut: CancellationToken,
}

/// Open streams per worker id.
pub struct StreamRegistry {
    max_lease: usize,
    max_upload: usize,
    workers: Mutex<HashMap<i64, Entry>>,
}

/// Held by a running stream; dropping it frees the slot.
pub struct StreamSlot {
    registry: Arc<StreamRegistry>,
    worker_id: i64,
    kind: StreamKind,
    /// Fires when the worker is revoked.
    pub cut: CancellationToken,
}

impl StreamRegistry {
    pub fn new(max_lease: usize, max_upload: usize) -> Arc<Self> {
        Arc::new(Self {
            max_lease,
            max_upload,
            workers: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Entry>> {
        // A panic while holding this lock leaves plain counters behind.
        self.workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a slot for a new stream of the worker, or says why not (one
    /// line naming the worker, the limit and the setting).
    pub fn open(
        self: &Arc<Self>,
        worker_id: i64,
        worker_name: &str,
        kind: StreamKind,
    ) -> Result<StreamSlot, String> {
        let mut map = self.lock();
        let e = map.entry(worker_id).or_default();
        let (count, max, key) = match kind {
            StreamKind::Lease => (&mut e.lease, self.max_lease, "lease.max_lease_streams"),
            StreamKind::Upload => (&mut e.upload, self.max_upload, "lease.max_upload_streams"),
        };
        if *count >= max {
            return Err(format!(
                "worker {worker_name} already has {count} {} stream(s) open on this coordinator (limit {max}, {key}); close one first",
                kind.label()
            ));
        }
        *count += 1;
        Ok(StreamSlot {
            registry: self.clone(),
            worker_id,
            kind,
            cut: e.cut.clone(),
        })
    }

    /// Cuts every open stream of the worker (revocation). Streams opened
    /// later get a fresh token.
    pub fn cut(&self, worker_id: i64) -> usize {
        let mut map = self.lock();
        match map.get_mut(&worker_id) {
            Some(e) => {
                e.cut.cancel();
                e.cut = CancellationToken::new();
                e.lease + e.upload
            }
            None => 0,
        }
    }

    fn close(&self, worker_id: i64, kind: StreamKind) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(&worker_id) {
            match kind {
                StreamKind::Lease => e.lease = e.lease.saturating_sub(1),
                StreamKind::Upload => e.upload = e.upload.saturating_sub(1),
            }
            if e.lease == 0 && e.upload == 0 {
                map.remove(&worker_id);
            }
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.registry.close(self.worker_id, self.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_worker_and_kind_and_freed_on_drop() {
        let r = StreamRegistry::new(2, 1);
        let a = r.open(1, "a", StreamKind::Lease).unwrap();
        let _b = r.open(1, "a", StreamKind::Lease).unwrap();
        let err = r.open(1, "a", StreamKind::Lease).err().unwrap();
        assert!(err.contains("worker a") && err.contains("limit 2"), "{err}");
        assert!(
            r.open(2, "b", StreamKind::Lease).is_ok(),
            "other workers are not affected"
        );
        let _u = r.open(1, "a", StreamKind::Upload).unwrap();
        assert!(r.open(1, "a", StreamKind::Upload).is_err());
        drop(a);
        assert!(r.open(1, "a", StreamKind::Lease).is_ok());
    }

    #[test]
    fn cut_cancels_open_streams_only() {
        let r = StreamRegistry::new(4, 4);
        let a = r.open(7, "w", StreamKind::Lease).unwrap();
        let u = r.open(7, "w", StreamKind::Upload).unwrap();
        assert_eq!(r.cut(7), 2);
        assert!(a.cut.is_cancelled() && u.cut.is_cancelled());
        let later = r.open(7, "w", StreamKind::Lease).unwrap();
        assert!(!later.cut.is_cancelled());
        assert_eq!(r.cut(99), 0);
    }
}
