//! The pack store's own scenarios run once per backend — the local directory
//! and an S3 bucket (moto, `tests/src/s3.rs`): round trip, dedup, delta
//! chunks, verify naming the dump of a damaged pack, gc deleting packs.
use std::io::Cursor;

use pgsnapman_store::{BackendConfig, ChunkParams, ManifestMeta, Store, StoreOptions};
use pgsnapman_tests::S3Server;
use uuid::Uuid;

/// Small chunks and packs: a few MB make many chunks and packs.
pub(crate) fn opts() -> StoreOptions {
    StoreOptions {
        pack_target_bytes: 1 << 20,
        chunking: ChunkParams {
            min_bytes: 4 * 1024,
            avg_bytes: 16 * 1024,
            max_bytes: 64 * 1024,
            normalization: 0,
        },
        max_delta_depth: 1,
        ..StoreOptions::default()
    }
}

fn meta() -> ManifestMeta {
    serde_json::from_value(serde_json::json!({
        "job_id": 1, "task_id": 0, "host": "db1", "port": 5432, "database": "app",
        "schema": "", "dump_type": "FULL", "format": "CUSTOM", "server_version": "15",
        "client_version": "15", "started_at": "2026-11-24T01:00:00Z",
        "finished_at": "2026-11-24T01:00:00Z", "restore_metadata": null
    }))
    .unwrap()
}

/// COPY-like rows, deterministic.
pub(crate) fn rows(seed: u64, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = seed | 1;
    for i in 0..n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(
            format!(
                "{i}\tcustomer-{}\t{}.{:02}\n",
                s % 1_000_000,
                s % 977,
                s % 100
            )
            .as_bytes(),
        );
    }
    out
}

pub(crate) fn store_one(store: &Store, data: &[u8]) -> Uuid {
    let dump = Uuid::now_v7();
    let mut ingest = store.begin(dump).unwrap();
    ingest.add_file("t", Cursor::new(data)).unwrap();
    ingest.finish(meta()).unwrap();
    dump
}

pub(crate) fn read_back(store: &Store, dump: Uuid) -> Vec<u8> {
    let mut out = Vec::new();
    store.read_file(dump, "t", &mut out).unwrap();
    out
}

/// Flips one byte in the middle of the largest pack, where the backend keeps it.
type Damage<'a> = &'a dyn Fn(&Store);

/// Every scenario on one store; `damage` breaks one pack.
fn scenarios(store: &Store, damage: Damage<'_>) {
    // Round trip and dedup.
    let day1 = rows(1, 60_000);
    let d1 = store_one(store, &day1);
    assert_eq!(read_back(store, d1), day1);
    let again = store_one(store, &day1);
    assert_eq!(store.manifest(again).unwrap().new_stored_bytes, 0);
    store.delete_dump(again).unwrap();
    // Delta chunks: scattered edits are stored as deltas and read back.
    let mut day2 = day1.clone();
    let mut at = 1234;
    while at + 3 < day2.len() {
        day2[at..at + 3].copy_from_slice(b"#2#");
        at += 5_000;
    }
    let d2 = store_one(store, &day2);
    let stats = store.stats().unwrap();
    assert!(stats.delta_chunks > 0, "{stats:?}");
    assert!(
        store.manifest(d2).unwrap().new_stored_bytes * 5
            < store.manifest(d1).unwrap().new_stored_bytes
    );
    assert_eq!(read_back(store, d2), day2);
    assert!(store.verify().unwrap().is_clean());
    // gc after deleting every dump leaves no pack.
    let d3 = store_one(store, &rows(3, 30_000));
    store.delete_dump(d3).unwrap();
    let before = store.stats().unwrap().packs;
    let report = store.gc(0.5).unwrap();
    assert!(report.packs_deleted > 0, "{report:?}");
    assert!(store.stats().unwrap().packs < before);
    // verify finds a damaged pack and names the dumps.
    damage(store);
    let report = store.verify().unwrap();
    assert!(!report.is_clean(), "{report:?}");
    let named: Vec<Uuid> = report
        .problems
        .iter()
        .flat_map(|p| p.dumps.clone())
        .collect();
    assert!(named.contains(&d1) || named.contains(&d2), "{report:?}");
    for d in [d1, d2] {
        store.delete_dump(d).unwrap();
    }
    store.gc(0.5).unwrap();
    assert_eq!(store.stats().unwrap().packs, 0);
}

fn flip(bytes: &mut [u8]) {
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
}

#[test]
fn pack_store_scenarios_on_the_local_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), opts(), BackendConfig::Local).unwrap();
    let packs = dir.path().join("packs");
    scenarios(&store, &|_| {
        let largest = std::fs::read_dir(&packs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let mut bytes = std::fs::read(&largest).unwrap();
        flip(&mut bytes);
        std::fs::write(&largest, bytes).unwrap();
    });
}

#[test]
fn pack_store_scenarios_on_the_s3_backend() {
    let s3 = S3Server::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A cache of 0 bytes: reads go to the bucket.
    let store = Store::open_with(dir.path(), opts(), s3.store_config("unit", 0)).unwrap();
    scenarios(&store, &|_| {
        let (name, _) = s3
            .list("unit", "packs")
            .unwrap()
            .into_iter()
            .max_by_key(|(_, len)| *len)
            .unwrap();
        let mut bytes = s3.get("unit", "packs", &name).unwrap();
        flip(&mut bytes);
        s3.put("unit", "packs", &name, bytes).unwrap();
    });
    assert!(s3.list("unit", "packs").unwrap().is_empty());
    assert!(s3.list("unit", "manifests").unwrap().is_empty());
    // The index cannot be rebuilt from the cache (it would miss evicted packs).
    drop(store);
    let e = pgsnapman_store::rebuild_index(dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("keeps its packs in a bucket"), "{e}");
}

/// A pack larger than one part (16 MiB) goes up as a multipart upload and
/// reads back from the bucket.
#[test]
fn large_packs_go_up_in_parts_and_read_back() {
    let s3 = S3Server::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        pack_target_bytes: 40 << 20,
        ..opts()
    };
    let store = Store::open_with(dir.path(), opts, s3.store_config("mp", 0)).unwrap();
    // Incompressible: 36 MiB of data make one pack of about 36 MiB.
    let mut data = vec![0u8; 36 << 20];
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for b in data.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        b.copy_from_slice(&s.to_le_bytes()[..b.len()]);
    }
    let dump = store_one(&store, &data);
    let packs = s3.list("mp", "packs").unwrap();
    assert!(packs.iter().any(|(_, len)| *len > 16 << 20), "{packs:?}");
    assert!(
        read_back(&store, dump) == data,
        "the dump reads back from the bucket"
    );
    assert!(store.verify().unwrap().is_clean());
}
