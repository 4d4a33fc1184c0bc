//! Compression after the dump (`StoreOptions::compress_later_max_bytes`,
//! `Store::compress_later`): chunks stored uncompressed read back the same,
//! the pass leaves the store as small as compressing at once would have,
//! yields to a dump that starts, and gc's repack does its work too.

use std::path::Path;

use pgsnapman_store::pack::ChunkKind;
use pgsnapman_store::{BackendConfig, LaterReport, Store, StoreKey, StoreOptions};
use uuid::Uuid;

use crate::helpers::{opts, random_bytes, read_back, store_files, text_rows};

fn later_opts(budget: u64) -> StoreOptions {
    StoreOptions {
        compress_later_max_bytes: budget,
        ..opts()
    }
}

/// Raw bytes of the FULL chunks whose record is not smaller than the chunk
/// (what an ingest left uncompressed, and incompressible chunks).
fn uncompressed_raw_bytes(store: &Store) -> u64 {
    let mut n = 0;
    store
        .index()
        .for_each(|_, e| {
            if e.kind == ChunkKind::Full && e.stored_len >= e.raw_len {
                n += u64::from(e.raw_len);
            }
            Ok(())
        })
        .unwrap();
    n
}

/// Compressible text and incompressible bytes, several packs of each.
fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("text", text_rows(31, 80_000)),
        ("bytes", random_bytes(32, 1_200_000)),
    ]
}

fn store_all(store: &Store, files: &[(&'static str, Vec<u8>)]) -> Uuid {
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    store_files(store, &refs)
}

fn check_reads(store: &Store, dump: Uuid, files: &[(&'static str, Vec<u8>)], when: &str) {
    for (name, data) in files {
        assert!(
            &read_back(store, dump, name) == data,
            "{when}: {name} changed"
        );
    }
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{when}: {:?}", report.problems);
}

#[test]
fn compressing_later_reads_the_same_and_ends_as_small_as_compressing_now() {
    let files = files();
    let now_dir = tempfile::tempdir().unwrap();
    let now = Store::open(now_dir.path(), opts()).unwrap();
    let d_now = store_all(&now, &files);
    assert_eq!(now.later_packs().unwrap(), 0, "off unless asked for");
    assert_eq!(now.compress_later().unwrap(), LaterReport::default());

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), later_opts(u64::MAX)).unwrap();
    let dump = store_all(&store, &files);
    let text_len = files[0].1.len() as u64;
    assert!(
        uncompressed_raw_bytes(&store) > text_len,
        "the text was stored uncompressed too"
    );
    let marked = store.later_packs().unwrap();
    assert!(marked >= 3, "{marked} packs marked");
    assert!(store.stats().unwrap().pack_bytes > now.stats().unwrap().pack_bytes + text_len / 2);
    check_reads(&store, dump, &files, "before the pass");

    let r = store.compress_later().unwrap();
    assert_eq!(r.packs_rewritten, marked as u64, "{r:?}");
    assert_eq!(
        (r.packs_removed, r.packs_kept_for_readers),
        (marked as u64, 0),
        "{r:?}"
    );
    assert!(r.records_compressed > 0, "{r:?}");
    assert!(r.bytes_after * 2 < r.bytes_before, "{r:?}");
    assert_eq!(
        (r.marks_dropped, r.packs_left, r.packs_skipped_corrupt),
        (0, 0, 0),
        "{r:?}"
    );
    assert_eq!(
        r.saved_by_dump,
        vec![(dump, r.bytes_before - r.bytes_after)],
        "what the dump's packs saved"
    );
    assert!(store.later_dumps().unwrap().is_empty());
    assert_eq!(store.later_packs().unwrap(), 0);
    check_reads(&store, dump, &files, "after the pass");
    // The same chunks, compressed at the same level: the same stored bytes
    // as the store that compressed while ingesting.
    let (a, b) = (now.stats().unwrap(), store.stats().unwrap());
    assert_eq!((a.chunks, a.stored_bytes), (b.chunks, b.stored_bytes));
    assert_eq!(uncompressed_raw_bytes(&store), uncompressed_raw_bytes(&now));
    check_reads(&now, d_now, &files, "compressed at once");
    // Nothing left: a second pass does nothing.
    assert_eq!(store.compress_later().unwrap(), LaterReport::default());
    drop(store);
    // The work survives a reopen.
    let store = Store::open(dir.path(), later_opts(u64::MAX)).unwrap();
    check_reads(&store, dump, &files, "reopened");
}

#[test]
fn the_budget_bounds_what_one_dump_leaves_uncompressed() {
    let budget = 400_000;
    let text = text_rows(41, 80_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), later_opts(budget)).unwrap();
    let dump = store_files(&store, &[("text", &text)]);
    let left = uncompressed_raw_bytes(&store);
    assert!(left > 0 && left <= budget, "{left} bytes uncompressed");
    // A second dump has a budget of its own.
    let more = text_rows(42, 80_000);
    let second = store_files(&store, &[("text", &more)]);
    let left2 = uncompressed_raw_bytes(&store);
    assert!(
        left2 > left && left2 <= 2 * budget,
        "{left2} bytes uncompressed"
    );
    store.compress_later().unwrap();
    assert_eq!(uncompressed_raw_bytes(&store), 0);
    assert_eq!(read_back(&store, dump, "text"), text);
    assert_eq!(read_back(&store, second, "text"), more);
}

#[test]
fn the_pass_waits_for_a_dump_that_is_storing() {
    let files = files();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), later_opts(u64::MAX)).unwrap();
    let dump = store_all(&store, &files);
    let marked = store.later_packs().unwrap() as u64;
    assert_eq!(store.later_dumps().unwrap(), [dump].into());
    let ingest = store.begin(Uuid::now_v7()).unwrap();
    let r = store.compress_later().unwrap();
    assert_eq!((r.packs_left, r.packs_rewritten), (marked, 0), "{r:?}");
    assert_eq!(store.later_packs().unwrap() as u64, marked);
    drop(ingest);
    let r = store.compress_later().unwrap();
    assert_eq!((r.packs_left, r.packs_rewritten), (0, marked), "{r:?}");
    check_reads(&store, dump, &files, "after the pass");
}

#[test]
fn gc_repack_compresses_and_the_pass_drops_its_marks() {
    let files = files();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), later_opts(u64::MAX)).unwrap();
    let dump = store_all(&store, &files);
    let marked = store.later_packs().unwrap() as u64;
    let before = store.stats().unwrap().pack_bytes;
    // 1.0 repacks every pack.
    let gc = store.gc(1.0).unwrap();
    assert!(gc.packs_repacked >= marked, "{gc:?}");
    assert!(store.stats().unwrap().pack_bytes * 2 < before);
    let text_left = uncompressed_raw_bytes(&store);
    assert!(
        text_left <= files[1].1.len() as u64,
        "only the random bytes stay whole"
    );
    let r = store.compress_later().unwrap();
    assert_eq!((r.marks_dropped, r.packs_rewritten), (marked, 0), "{r:?}");
    assert_eq!(store.later_packs().unwrap(), 0);
    check_reads(&store, dump, &files, "after gc and the pass");
}

fn open_encrypted(root: &Path, key: &StoreKey, o: StoreOptions) -> Store {
    Store::open_encrypted(root, o, BackendConfig::Local, Some(key)).unwrap()
}

#[test]
fn an_encrypted_store_compresses_later_too() {
    let files = files();
    let key = StoreKey::from_bytes([7; 32]);
    let now_dir = tempfile::tempdir().unwrap();
    let now = open_encrypted(now_dir.path(), &key, opts());
    store_all(&now, &files);
    let dir = tempfile::tempdir().unwrap();
    let store = open_encrypted(dir.path(), &key, later_opts(u64::MAX));
    let dump = store_all(&store, &files);
    assert!(store.later_packs().unwrap() > 0);
    let r = store.compress_later().unwrap();
    assert!(
        r.records_compressed > 0 && r.bytes_after * 2 < r.bytes_before,
        "{r:?}"
    );
    check_reads(&store, dump, &files, "encrypted, after the pass");
    let (a, b) = (now.stats().unwrap(), store.stats().unwrap());
    assert_eq!((a.chunks, a.stored_bytes), (b.chunks, b.stored_bytes));
}

/// A read-only open (another process's `store extract`) sees the index as
/// it was: the packs a pass rewrote stay while it is open, so it reads
/// every chunk where it looked it up; the next pass deletes them.
#[test]
fn packs_a_reader_may_still_read_stay_until_it_is_gone() {
    let files = files();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), later_opts(u64::MAX)).unwrap();
    let dump = store_all(&store, &files);
    let marked = store.later_packs().unwrap() as u64;
    let packs_before = crate::helpers::pack_files(dir.path()).len() as u64;
    let reader = Store::open_read_only(dir.path()).unwrap();

    let r = store.compress_later().unwrap();
    assert_eq!(
        (r.packs_rewritten, r.packs_kept_for_readers, r.packs_removed),
        (marked, marked, 0),
        "{r:?}"
    );
    assert_eq!(store.later_packs().unwrap() as u64, marked, "marks stay");
    for (name, data) in &files {
        assert!(
            &read_back(&reader, dump, name) == data,
            "the reader reads {name}"
        );
    }
    check_reads(&store, dump, &files, "the writer, moved");

    drop(reader);
    let r = store.compress_later().unwrap();
    assert_eq!(
        (
            r.packs_removed,
            r.packs_kept_for_readers,
            r.records_compressed
        ),
        (marked, 0, 0),
        "{r:?}"
    );
    assert_eq!(store.later_packs().unwrap(), 0);
    let packs_after = crate::helpers::pack_files(dir.path()).len() as u64;
    assert!(
        packs_after <= packs_before,
        "{packs_before} -> {packs_after} packs"
    );
    let gc = store.gc(0.0).unwrap();
    assert_eq!(gc.packs_deleted, 0, "nothing left for gc: {gc:?}");
    check_reads(&store, dump, &files, "after the second pass");
    // A reader opened after the switch needs none of the old packs.
    let late = Store::open_read_only(dir.path()).unwrap();
    check_reads(&late, dump, &files, "a later reader");
}

/// `text` with one byte changed every `every` bytes: chunks similar to the
/// original's, stored as deltas against them.
fn edited(text: &[u8], every: usize, seed: u8) -> Vec<u8> {
    let mut t = text.to_vec();
    for (i, b) in t.iter_mut().enumerate().step_by(every) {
        *b = b'a' + ((i as u8) ^ seed) % 26;
    }
    t
}

/// Chunk ids of `dump`'s files.
fn chunks_of(store: &Store, dump: Uuid) -> std::collections::HashSet<[u8; 32]> {
    store
        .manifest(dump)
        .unwrap()
        .files
        .iter()
        .flat_map(|f| f.chunks.iter().map(|c| c.id.0))
        .collect()
}

/// Delta entries of the index: (chunk, base).
fn deltas(store: &Store) -> Vec<([u8; 32], [u8; 32])> {
    let mut out = Vec::new();
    store
        .index()
        .for_each(|id, e| {
            if e.kind == ChunkKind::Delta {
                out.push((id.0, e.base.0));
            }
            Ok(())
        })
        .unwrap();
    out
}

/// A chunk with a delta base is stored uncompressed too, and the pass
/// encodes it against the base its ingest chose: the store ends as it
/// would have compressing at once. Until then no dump uses it as a base
/// (its depth is not known yet), also after the store is opened again.
#[test]
fn deltas_are_encoded_after_the_dump_too() {
    let day1 = vec![("text", text_rows(41, 60_000))];
    let day2 = vec![("text", edited(&day1[0].1, 9_000, 1))];
    let day3 = vec![("text", edited(&day2[0].1, 7_000, 2))];

    let now_dir = tempfile::tempdir().unwrap();
    let now = Store::open(now_dir.path(), opts()).unwrap();
    store_all(&now, &day1);
    store_all(&now, &day2);
    let now_deltas = deltas(&now).len();
    assert!(now_deltas > 10, "{now_deltas} deltas compressing at once");

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), later_opts(u64::MAX)).unwrap();
    let d1 = store_all(&store, &day1);
    store.compress_later().unwrap();
    let d2 = store_all(&store, &day2);
    assert!(
        deltas(&store).is_empty(),
        "day 2's deltas are left for the pass"
    );
    assert!(store.later_deltas().unwrap() >= now_deltas, "planned");
    let pending: std::collections::HashSet<[u8; 32]> = chunks_of(&store, d2)
        .difference(&chunks_of(&store, d1))
        .copied()
        .collect();
    assert!(pending.len() >= now_deltas, "{} new chunks", pending.len());
    drop(store);

    // Opened again without the budget: day 3 is delta-encoded as it is
    // stored, and none of its bases is a chunk whose delta is still planned.
    let store = Store::open(dir.path(), opts()).unwrap();
    let d3 = store_all(&store, &day3);
    let day3_deltas = deltas(&store);
    assert!(
        day3_deltas.len() > 10,
        "{} deltas on day 3",
        day3_deltas.len()
    );
    for (chunk, base) in &day3_deltas {
        assert!(
            !pending.contains(base),
            "{chunk:?} chose a chunk whose delta is still planned as its base"
        );
    }
    check_reads(&store, d2, &day2, "before the pass");

    let report = store.compress_later().unwrap();
    assert!(
        report.deltas_encoded >= now_deltas as u64 * 9 / 10,
        "{report:?}"
    );
    assert_eq!(store.later_packs().unwrap(), 0);
    assert_eq!(store.later_deltas().unwrap(), 0);
    let all = deltas(&store);
    assert!(
        all.iter().filter(|(c, _)| pending.contains(c)).count() as u64 == report.deltas_encoded,
        "{report:?}"
    );
    check_reads(&store, d1, &day1, "after the pass");
    check_reads(&store, d2, &day2, "after the pass");
    check_reads(&store, d3, &day3, "after the pass");
    drop(store);

    // The same two days compressed at once and later: the same records.
    let dir2 = tempfile::tempdir().unwrap();
    let later = Store::open(dir2.path(), later_opts(u64::MAX)).unwrap();
    store_all(&later, &day1);
    later.compress_later().unwrap();
    store_all(&later, &day2);
    later.compress_later().unwrap();
    let (a, b) = (now.stats().unwrap(), later.stats().unwrap());
    assert_eq!(a.chunks, b.chunks);
    assert_eq!(deltas(&later).len(), now_deltas);
    assert!(
        b.pack_bytes.abs_diff(a.pack_bytes) <= a.pack_bytes / 100,
        "{} against {} bytes",
        b.pack_bytes,
        a.pack_bytes
    );
}
