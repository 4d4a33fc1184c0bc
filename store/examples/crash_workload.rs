//! The workload of the crash tests (`store/tests/store/crash.rs`): opens the
//! store at ROOT, stores every file of DIR as dump C (its first
//! `LATER_BYTES` of new chunks uncompressed), deletes dump A, collects
//! garbage with repacking (threshold 0.99), then compresses what C left
//! uncompressed (`Store::compress_later`). Run with
//! `PGSNAPMAN_CRASH_AT=<point>[:<nth>]` it aborts at that point, as a
//! `kill -9` there would; without it, it runs to the end and exits 0.
//!
//! cargo run -p pgsnapman-store --example crash_workload -- ROOT A_UUID C_UUID DIR

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{TimeZone, Utc};
use pgsnapman_store::{ManifestMeta, Store, StoreError, StoreOptions};
use uuid::Uuid;

/// Packs of 1 MiB (the smallest allowed), so a few MB make several packs.
const PACK_TARGET_BYTES: u64 = 1 << 20;
/// Repack every pack whose live share fell below this.
const REPACK_BELOW: f64 = 0.99;
/// Raw bytes C's ingest may leave uncompressed: part of C, several packs.
const LATER_BYTES: u64 = 3 << 20;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash_workload: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, a, c, dir] = args.as_slice() else {
        return Err("usage: crash_workload ROOT A_UUID C_UUID DIR".to_string());
    };
    let uuid = |s: &str| Uuid::parse_str(s).map_err(|e| format!("{s:?}: {e}"));
    let (a, c) = (uuid(a)?, uuid(c)?);
    let store = Store::open(
        &PathBuf::from(root),
        StoreOptions {
            pack_target_bytes: PACK_TARGET_BYTES,
            compress_later_max_bytes: LATER_BYTES,
            ..StoreOptions::default()
        },
    )
    .map_err(|e| format!("open: {e}"))?;
    ingest(&store, c, &PathBuf::from(dir)).map_err(|e| format!("ingest: {e}"))?;
    match store.delete_dump(a) {
        Ok(()) | Err(StoreError::ManifestNotFound(_)) => {}
        Err(e) => return Err(format!("delete: {e}")),
    }
    let report = store.gc(REPACK_BELOW).map_err(|e| format!("gc: {e}"))?;
    println!("{report:?}");
    let later = store
        .compress_later()
        .map_err(|e| format!("compress later: {e}"))?;
    println!("{later:?}");
    Ok(())
}

/// Stores the files of `dir` (sorted by name) as dump `dump`, unless it is
/// stored already.
fn ingest(store: &Store, dump: Uuid, dir: &std::path::Path) -> Result<(), String> {
    if store.dump_ids().map_err(|e| e.to_string())?.contains(&dump) {
        return Ok(());
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("list {}: {e}", dir.display()))?
        .map(|e| e.map(|e| e.path()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut ingest = store.begin(dump).map_err(|e| e.to_string())?;
    for path in names {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{} has no UTF-8 name", path.display()))?;
        let file = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        ingest.add_file(name, file).map_err(|e| e.to_string())?;
    }
    let at = Utc
        .with_ymd_and_hms(2026, 12, 6, 1, 0, 0)
        .single()
        .ok_or("bad time")?;
    let meta = ManifestMeta {
        job_id: 1,
        task_id: 0,
        instance_id: 1,
        host: "crash.example".to_string(),
        port: 5432,
        database: "crash".to_string(),
        schema: String::new(),
        dump_type: "FULL".to_string(),
        format: "DIRECTORY".to_string(),
        server_version: "15".to_string(),
        client_version: "15".to_string(),
        started_at: at,
        finished_at: at,
        database_bytes: -1,
        notes: String::new(),
        script_hash: String::new(),
        restore_metadata: serde_json::Value::Null,
        table_rows: None,
        table_rows_error: String::new(),
        data_blocks: None,
    };
    ingest.finish(meta).map_err(|e| e.to_string())?;
    Ok(())
}
