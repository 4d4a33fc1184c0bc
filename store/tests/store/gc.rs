//! Garbage collection: what it reclaims, what it keeps, and gc racing ingests.

use std::io::Cursor;
use std::sync::Arc;

use pgsnapman_store::{Store, StoreError};
use uuid::Uuid;

use crate::helpers::{meta, opts, random_bytes, read_back, store_files, text_rows};

#[test]
fn gc_reclaims_unique_chunks_and_keeps_shared_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let shared = text_rows(10, 50_000);
    let only_a = random_bytes(11, 3 << 20);
    let only_b = random_bytes(12, 1 << 20);
    let a = store_files(&store, &[("shared", &shared), ("mine", &only_a)]);
    let b = store_files(&store, &[("shared", &shared), ("mine", &only_b)]);
    let before = store.stats().unwrap();

    // An ingest in progress whose chunks are not in any manifest yet.
    let pending = random_bytes(13, 2 << 20);
    let pending_dump = Uuid::now_v7();
    let mut ingest = store.begin(pending_dump).unwrap();
    ingest.add_file("p", Cursor::new(&pending)).unwrap();
    // Also references some of a's chunks, which gc must keep though a goes.
    ingest
        .add_file("a-part", Cursor::new(&only_a[..1 << 20]))
        .unwrap();

    store.delete_dump(a).unwrap();
    assert!(matches!(
        store.delete_dump(a),
        Err(StoreError::ManifestNotFound(_))
    ));
    let report = store.gc(0.9).unwrap();
    assert!(report.index_entries_removed > 0, "{report:?}");
    assert!(report.reclaimed_bytes >= (3 << 19), "{report:?}");
    assert!(report.packs_deleted > 0, "{report:?}");
    assert!(report.packs_repacked > 0, "{report:?}");
    assert_eq!(read_back(&store, b, "shared"), shared);
    assert_eq!(read_back(&store, b, "mine"), only_b);
    assert!(store.verify().unwrap().is_clean());

    // The in-progress ingest finishes after the gc and reads back whole.
    ingest.finish(meta("app")).unwrap();
    assert_eq!(read_back(&store, pending_dump, "p"), pending);
    assert_eq!(
        read_back(&store, pending_dump, "a-part"),
        only_a[..1 << 20].to_vec()
    );
    assert!(store.verify().unwrap().is_clean());
    let after = store.stats().unwrap();
    assert!(after.pack_bytes < before.pack_bytes + pending.len() as u64);

    // Deleting everything and collecting leaves no packs.
    store.delete_dump(b).unwrap();
    store.delete_dump(pending_dump).unwrap();
    store.gc(0.5).unwrap();
    let empty = store.stats().unwrap();
    assert_eq!((empty.packs, empty.chunks, empty.manifests), (0, 0, 0));
}

#[test]
fn gc_racing_ingests_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let base = text_rows(20, 40_000);
    let first = store_files(&store, &[("t", &base)]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc_thread = {
        let store = store.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.gc(0.8).unwrap();
                runs += 1;
                // Leave room for the ingests: a writer-preferring lock taken in a
                // tight loop would starve them.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            runs
        })
    };
    let mut dumps = vec![first];
    for round in 0..6u64 {
        // Alternate deleting old dumps and storing overlapping new ones.
        let mut data = base.clone();
        let at = (round as usize * 7919) % (data.len() - 10);
        data[at..at + 10].copy_from_slice(b"CHANGED!!!");
        let d = store_files(&store, &[("t", &data)]);
        assert_eq!(read_back(&store, d, "t"), data);
        if dumps.len() > 2 {
            store.delete_dump(dumps.remove(0)).unwrap();
        }
        dumps.push(d);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(gc_thread.join().unwrap() > 0);
    assert!(store.verify().unwrap().is_clean());
    for d in dumps {
        let m = store.manifest(d).unwrap();
        assert_eq!(read_back(&store, d, "t").len() as u64, m.logical_bytes);
    }
}

/// Issue 12, item 7: gc reads the manifests one at a time. On a store of
/// 2,000 small dumps it keeps exactly what the remaining 1,000 need (memory
/// is not asserted; the unit test `manifests_are_read_one_at_a_time` shows
/// the reading is lazy).
#[test]
fn gc_on_two_thousand_dumps() {
    const DUMPS: usize = 2_000;
    const CONTENTS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let contents: Vec<Vec<u8>> = (0..CONTENTS as u64)
        .map(|k| random_bytes(1_000 + k, 3_000))
        .collect();
    let dumps: Vec<(Uuid, usize)> = (0..DUMPS)
        .map(|i| {
            let k = i % CONTENTS;
            (store_files(&store, &[("d", &contents[k])]), k)
        })
        .collect();
    let packs_before = store.stats().unwrap().packs;
    assert_eq!(packs_before, CONTENTS as u64);
    // Contents 0..20 lose every dump that uses them.
    for (dump, k) in &dumps {
        if *k < CONTENTS / 2 {
            store.delete_dump(*dump).unwrap();
        }
    }
    let report = store.gc(0.0).unwrap();
    assert_eq!(report.manifests, (DUMPS / 2) as u64, "{report:?}");
    assert_eq!(report.packs_deleted, (CONTENTS / 2) as u64, "{report:?}");
    assert_eq!(store.stats().unwrap().packs, (CONTENTS / 2) as u64);
    for (dump, k) in dumps.iter().filter(|(_, k)| *k >= CONTENTS / 2).step_by(7) {
        assert!(read_back(&store, *dump, "d") == contents[*k], "dump {dump}");
    }
    let verified = store.verify().unwrap();
    assert!(verified.is_clean(), "{:?}", verified.problems);
    assert_eq!(verified.dumps.len(), DUMPS / 2);
}
