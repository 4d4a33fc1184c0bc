//! Dumps that a restore or a verification on this worker is reading right
//! now. Readers `hold` a dump for as long as they read it; retention removes
//! a dump only through `remove_unless_held`, which decides and deletes under
//! the same lock, so no reader can start on a dump between the two.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The set of dumps being read, with a count per dump (two restores of one
/// dump hold it twice). Cheap to clone: clones share the set.
#[derive(Clone, Debug, Default)]
pub struct InUse {
    held: Arc<Mutex<BTreeMap<String, usize>>>,
}

/// Holds one dump while it lives; dropping it lets retention remove the dump
/// again.
#[derive(Debug)]
#[must_use = "the dump is held only while the guard lives"]
pub struct InUseGuard {
    set: InUse,
    dump_uuid: String,
}

impl InUse {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, usize>> {
        // A panic while the map was locked cannot leave it half-updated
        // (every change is one insert or one remove), so a poisoned lock is
        // still usable.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `dump_uuid` as being read until the guard is dropped. It may
    /// wait for a removal in progress (one manifest unlink and index update).
    pub fn hold(&self, dump_uuid: &str) -> InUseGuard {
        *self.lock().entry(dump_uuid.to_string()).or_insert(0) += 1;
        InUseGuard {
            set: self.clone(),
            dump_uuid: dump_uuid.to_string(),
        }
    }

    /// Whether some reader holds `dump_uuid` now.
    pub fn is_held(&self, dump_uuid: &str) -> bool {
        self.lock().contains_key(dump_uuid)
    }

    /// Every dump held now.
    pub fn held(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Runs `remove` unless `dump_uuid` is held, with the set locked so that
    /// no `hold` of it can begin meanwhile. `None`: held, nothing was run.
    /// Blocking (call it off the async threads).
    pub fn remove_unless_held<T>(&self, dump_uuid: &str, remove: impl FnOnce() -> T) -> Option<T> {
        let held = self.lock();
        if held.contains_key(dump_uuid) {
            return None;
        }
        let out = remove();
        drop(held);
        Some(out)
    }
}

impl Drop for InUseGuard {
    fn drop(&mut self) {
        let mut held = self.set.lock();
        if let Some(n) = held.get_mut(&self.dump_uuid) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.dump_uuid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_is_held_until_its_last_guard_drops() {
        let set = InUse::default();
        let a = set.hold("d1");
        let b = set.hold("d1");
        assert!(set.is_held("d1"));
        assert!(!set.is_held("d2"));
        drop(a);
        assert!(set.is_held("d1"), "a second reader still holds it");
        drop(b);
        assert!(!set.is_held("d1"));
        assert!(set.held().is_empty());
    }

    #[test]
    fn removal_skips_a_held_dump_and_runs_for_a_free_one() {
        let set = InUse::default();
        let _g = set.hold("d1");
        let mut removed = Vec::new();
        assert_eq!(set.remove_unless_held("d1", || removed.push("d1")), None);
        assert_eq!(
            set.remove_unless_held("d2", || removed.push("d2")),
            Some(())
        );
        assert_eq!(removed, ["d2"]);
    }

    #[test]
    fn clones_share_the_set() {
        let set = InUse::default();
        let other = set.clone();
        let _g = other.hold("d1");
        assert_eq!(set.held(), ["d1"]);
    }
}
