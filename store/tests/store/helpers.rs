//! Shared helpers: small-chunk options, manifest metadata, deterministic test
//! data and shortcuts to store and read back files.

use std::fs;
use std::io::Cursor;
use std::path::Path;

use chrono::{TimeZone, Utc};
use pgsnapman_store::{ChunkParams, ManifestMeta, Store, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use uuid::Uuid;

/// Small chunks and packs so multi-MB inputs exercise many chunks and packs.
pub fn opts() -> StoreOptions {
    StoreOptions {
        pack_target_bytes: 1 << 20,
        zstd_level: 3,
        chunking: ChunkParams {
            min_bytes: 4 * 1024,
            avg_bytes: 16 * 1024,
            max_bytes: 64 * 1024,
            normalization: 0,
        },
        ..StoreOptions::default()
    }
}

pub fn meta(database: &str) -> ManifestMeta {
    ManifestMeta {
        job_id: 7,
        task_id: 0,
        instance_id: 3,
        host: "db1.example".to_string(),
        port: 5432,
        database: database.to_string(),
        schema: String::new(),
        dump_type: "FULL".to_string(),
        format: "CUSTOM".to_string(),
        server_version: "15.8".to_string(),
        client_version: "15.8".to_string(),
        started_at: Utc.with_ymd_and_hms(2026, 11, 24, 1, 0, 0).unwrap(),
        finished_at: Utc.with_ymd_and_hms(2026, 11, 24, 1, 5, 0).unwrap(),
        database_bytes: 123_456,
        notes: String::new(),
        script_hash: String::new(),
        restore_metadata: serde_json::json!({"roles": ["app"]}),
        table_rows: None,
        table_rows_error: String::new(),
        data_blocks: None,
    }
}

pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Text that compresses and repeats, like COPY rows.
pub fn text_rows(seed: u64, rows: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for i in 0..rows {
        let n: u32 = rng.gen_range(0..1_000_000);
        out.extend_from_slice(
            format!(
                "{i}\tcustomer-{n}\t{}.{:02}\t2026-11-{:02} 12:00:00+00\n",
                n % 977,
                n % 100,
                1 + n % 28
            )
            .as_bytes(),
        );
    }
    out
}

pub fn store_files(store: &Store, files: &[(&str, &[u8])]) -> Uuid {
    let dump = Uuid::now_v7();
    let mut ingest = store.begin(dump).unwrap();
    for (name, data) in files {
        let entry = ingest.add_file(name, Cursor::new(data)).unwrap();
        assert_eq!(entry.size, data.len() as u64);
    }
    ingest.finish(meta("app")).unwrap();
    dump
}

pub fn read_back(store: &Store, dump: Uuid, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = store
        .read_file(dump, name, &mut out)
        .unwrap_or_else(|e| panic!("read {name} of {dump}: {e}"));
    assert_eq!(n, out.len() as u64);
    out
}

pub fn pack_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(root.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// COPY-like rows from integer arithmetic only (no RNG crate, whose streams
/// may change between versions), so golden fixtures can be checked byte for
/// byte by every later build.
pub fn golden_rows(seed: u64, rows: u64) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    let mut x = seed;
    for i in 0..rows {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let n = x >> 33;
        writeln!(
            out,
            "{i}\tcustomer-{}\t{}.{:02}\tnote {}",
            n % 100_003,
            n % 977,
            n % 100,
            (n >> 7) % 4099
        )
        .unwrap();
    }
    out
}

/// Copies a directory tree (fixtures are opened in a copy, never in place).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}
