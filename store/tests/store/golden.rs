//! Golden fixtures written by earlier builds: they must keep reading forever
//! (never edit a file under tests/fixtures/).

use std::fs;
use std::io::Cursor;
use std::path::PathBuf;

use pgsnapman_store::Store;
use uuid::Uuid;

use crate::helpers::{copy_dir, golden_rows, meta, opts, pack_files, read_back, store_files};

/// `store/tests/fixtures`, found through the `CARGO_MANIFEST_DIR` that cargo
/// sets when it runs the test: the compile-time value names the checkout the
/// binary was built in, which a target directory shared between checkouts
/// (deploy/prereqs.sh) may reuse for another one.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    dir.join("tests/fixtures")
}

/// A manifest written before `instance_id`, `database_bytes` and `notes`
/// existed keeps reading, with their defaults (golden file, never edit).
#[test]
fn golden_manifest_v1_without_later_fields_reads() {
    let dir = tempfile::tempdir().unwrap();
    let name = "01937a4e-7b4c-7000-8000-000000000001.json";
    let golden = fixtures().join("manifests").join(name);
    fs::copy(&golden, dir.path().join(name)).unwrap();
    let m = pgsnapman_store::manifest::read_manifest(&dir.path().join(name)).unwrap();
    assert_eq!(m.meta.instance_id, 0);
    assert_eq!(m.meta.database_bytes, -1);
    assert_eq!(m.meta.notes, "");
    assert_eq!(m.meta.database, "app");
    assert_eq!(m.files[0].name, "toc.dat");
    assert_eq!(m.logical_bytes, 4242);
}

/// Dumps in the golden v1 store (tests/fixtures/store-v1, see its README).
const GOLDEN_A: &str = "01937a4e-7b4c-7000-8000-0000000000a1";
const GOLDEN_B: &str = "01937a4e-7b4c-7000-8000-0000000000a2";

fn golden_b_data() -> Vec<u8> {
    let mut data = golden_rows(1, 4000);
    data[100_000..100_010].copy_from_slice(b"EDITEDEDIT");
    data
}

fn golden_store_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    copy_dir(&fixtures().join("store-v1"), &root);
    (tmp, root)
}

/// Written once by the build that introduced it; never regenerate.
#[test]
#[ignore = "writes the golden v1 store; run by hand only when creating it"]
fn write_golden_store_v1() {
    let root = fixtures().join("store-v1");
    assert!(
        !root.exists(),
        "the golden store exists; never regenerate it"
    );
    let store = Store::open(&root, opts()).unwrap();
    let mut ingest = store.begin(Uuid::parse_str(GOLDEN_A).unwrap()).unwrap();
    ingest
        .add_file("toc.dat", Cursor::new(b"golden toc, format v1\n"))
        .unwrap();
    ingest
        .add_file("data.dat", Cursor::new(golden_rows(1, 4000)))
        .unwrap();
    ingest.finish(meta("golden")).unwrap();
    let mut ingest = store.begin(Uuid::parse_str(GOLDEN_B).unwrap()).unwrap();
    ingest
        .add_file("data.dat", Cursor::new(golden_b_data()))
        .unwrap();
    ingest.finish(meta("golden")).unwrap();
}

/// A store written by index format 1 / pack format 1 opens, reads back byte
/// for byte, verifies clean, deduplicates new dumps against its chunks and
/// survives gc.
#[test]
fn golden_store_v1_reads_and_takes_new_dumps() {
    let (_tmp, root) = golden_store_copy();
    let store = Store::open(&root, opts()).unwrap();
    let a = Uuid::parse_str(GOLDEN_A).unwrap();
    let b = Uuid::parse_str(GOLDEN_B).unwrap();
    assert_eq!(store.dump_ids().unwrap(), vec![a, b]);
    assert_eq!(read_back(&store, a, "toc.dat"), b"golden toc, format v1\n");
    assert_eq!(read_back(&store, a, "data.dat"), golden_rows(1, 4000));
    assert_eq!(read_back(&store, b, "data.dat"), golden_b_data());
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.chunks_checked > 5, "{report:?}");
    let again = store_files(&store, &[("data.dat", &golden_rows(1, 4000))]);
    assert_eq!(store.manifest(again).unwrap().new_stored_bytes, 0);
    store.delete_dump(a).unwrap();
    store.gc(0.9).unwrap();
    assert_eq!(read_back(&store, b, "data.dat"), golden_b_data());
    assert!(store.verify().unwrap().is_clean());

    // Upgraded to index format 2: new dumps get feature entries and deltas
    // (chunks stored by format 1 have no features, so they are not bases).
    let fresh = golden_rows(2, 4000);
    let mut edited = fresh.clone();
    edited[50_000..50_004].copy_from_slice(b"EDIT");
    store_files(&store, &[("data.dat", &fresh)]);
    let d = store_files(&store, &[("data.dat", &edited)]);
    let s = store.stats().unwrap();
    assert!(s.delta_chunks > 0 && s.feature_entries > 0, "{s:?}");
    assert_eq!(read_back(&store, d, "data.dat"), edited);
    drop(store);
    let err = Store::open_read_only(&root).map(|_| ());
    assert!(err.is_ok(), "{err:?}");
}

/// A read-only opening reads a version 1 store as it is (no upgrade).
#[test]
fn golden_store_v1_opens_read_only() {
    let (_tmp, root) = golden_store_copy();
    let store = Store::open_read_only(&root).unwrap();
    let b = Uuid::parse_str(GOLDEN_B).unwrap();
    assert_eq!(read_back(&store, b, "data.dat"), golden_b_data());
    assert!(store.verify().unwrap().is_clean());
}

/// Every pack of the golden v1 store scans end to end and holds only FULL
/// records.
#[test]
fn golden_packs_v1_scan() {
    let (_tmp, root) = golden_store_copy();
    let packs = pack_files(&root);
    assert!(!packs.is_empty());
    for p in packs {
        let mut records = 0;
        pgsnapman_store::pack::scan_pack(&p, |_, header, _| {
            assert_eq!(header.kind, pgsnapman_store::pack::ChunkKind::Full);
            records += 1;
            Ok(())
        })
        .unwrap();
        assert!(records > 0);
    }
}

/// Dumps in the golden v2 store (tests/fixtures/store-v2, see its README).
const GOLDEN_V2_A: &str = "01937a4e-7b4c-7000-8000-0000000000b1";
const GOLDEN_V2_B: &str = "01937a4e-7b4c-7000-8000-0000000000b2";
const GOLDEN_V2_C: &str = "01937a4e-7b4c-7000-8000-0000000000b3";

/// Day `n` of the v2 fixture's data: `golden_rows(3, 4000)` with bytes
/// changed every 3001 bytes per day (so later days hold delta chains).
pub fn golden_v2_day(n: u8) -> Vec<u8> {
    let mut data = golden_rows(3, 4000);
    for day in 1..n {
        let mut at = 100 * usize::from(day);
        while at + 2 < data.len() {
            data[at..at + 2].copy_from_slice(&[b'#', b'0' + day]);
            at += 3001;
        }
    }
    data
}

fn golden_v2_dumps() -> [(Uuid, Vec<u8>); 3] {
    [GOLDEN_V2_A, GOLDEN_V2_B, GOLDEN_V2_C]
        .map(|d| Uuid::parse_str(d).unwrap())
        .into_iter()
        .zip(1..)
        .map(|(d, n)| (d, golden_v2_day(n)))
        .collect::<Vec<_>>()
        .try_into()
        .unwrap()
}

/// Written once by the build that introduced index and pack format 2;
/// never regenerate.
#[test]
#[ignore = "writes the golden v2 store; run by hand only when creating it"]
fn write_golden_store_v2() {
    write_golden_delta_store("store-v2", &golden_v2_dumps());
}

/// Creates the golden store `name` under tests/fixtures (refusing an
/// existing one) with each dump's one file `data.dat`, delta depth 2.
pub fn write_golden_delta_store(name: &str, dumps: &[(Uuid, Vec<u8>)]) -> Store {
    let root = fixtures().join(name);
    assert!(
        !root.exists(),
        "the golden store exists; never regenerate it"
    );
    let opts = pgsnapman_store::StoreOptions {
        max_delta_depth: 2,
        ..opts()
    };
    let store = Store::open(&root, opts).unwrap();
    for (dump, data) in dumps {
        let mut ingest = store.begin(*dump).unwrap();
        ingest
            .add_file("data.dat", Cursor::new(data.clone()))
            .unwrap();
        ingest.finish(meta("golden")).unwrap();
    }
    let s = store.stats().unwrap();
    assert!(s.delta_chunks > 0, "{s:?}");
    store
}

/// A store written by index format 2 / pack format 2, with delta chains of
/// depth 2, reads back byte for byte and verifies clean.
#[test]
fn golden_store_v2_with_deltas_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    copy_dir(&fixtures().join("store-v2"), &root);
    let store = Store::open(&root, opts()).unwrap();
    let s = store.stats().unwrap();
    assert!(s.delta_chunks > 0 && s.feature_entries > 0, "{s:?}");
    for (dump, data) in golden_v2_dumps() {
        assert_eq!(read_back(&store, dump, "data.dat"), data);
    }
    // The third day holds chains of two deltas.
    let c = store
        .manifest(Uuid::parse_str(GOLDEN_V2_C).unwrap())
        .unwrap();
    let depth = |id| {
        let mut n = 0;
        let mut next = store.index().get(&id).unwrap().unwrap();
        while let Some(base) = next.delta_base() {
            n += 1;
            next = store.index().get(&base).unwrap().unwrap();
        }
        n
    };
    assert_eq!(c.chunk_refs().map(|r| depth(r.id)).max(), Some(2));
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    for p in pack_files(&root) {
        pgsnapman_store::pack::scan_pack(&p, |_, _, _| Ok(())).unwrap();
    }
}
