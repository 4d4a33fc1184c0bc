//! End-to-end tests of the store on real files in temporary directories.

// Test helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use pgsnapman_store::{ChunkParams, ManifestMeta, ProblemKind, Store, StoreError, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use uuid::Uuid;

/// Small chunks and packs so multi-MB inputs exercise many chunks and packs.
fn opts() -> StoreOptions {
    StoreOptions {
        pack_target_bytes: 1 << 20,
        zstd_level: 3,
        chunking: ChunkParams {
            min_bytes: 4 * 1024,
            avg_bytes: 16 * 1024,
            max_bytes: 64 * 1024,
        },
    }
}

fn meta(database: &str) -> ManifestMeta {
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
        restore_metadata: serde_json::json!({"roles": ["app"]}),
    }
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Text that compresses and repeats, like COPY rows.
fn text_rows(seed: u64, rows: usize) -> Vec<u8> {
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

fn store_files(store: &Store, files: &[(&str, &[u8])]) -> Uuid {
    let dump = Uuid::now_v7();
    let mut ingest = store.begin(dump).unwrap();
    for (name, data) in files {
        let entry = ingest.add_file(name, Cursor::new(data)).unwrap();
        assert_eq!(entry.size, data.len() as u64);
    }
    ingest.finish(meta("app")).unwrap();
    dump
}

fn read_back(store: &Store, dump: Uuid, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = store
        .read_file(dump, name, &mut out)
        .unwrap_or_else(|e| panic!("read {name} of {dump}: {e}"));
    assert_eq!(n, out.len() as u64);
    out
}

fn pack_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(root.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let random = random_bytes(1, 3 << 20);
    let text = text_rows(2, 60_000);
    let empty: Vec<u8> = Vec::new();
    let d1 = store_files(
        &store,
        &[
            ("random.dat", &random),
            ("rows.dat", &text),
            ("toc.dat", &empty),
        ],
    );
    assert_eq!(read_back(&store, d1, "random.dat"), random);
    assert_eq!(read_back(&store, d1, "rows.dat"), text);
    assert_eq!(read_back(&store, d1, "toc.dat"), empty);
    let m1 = store.manifest(d1).unwrap();
    assert_eq!(m1.logical_bytes, (random.len() + text.len()) as u64);
    assert!(
        m1.new_stored_bytes > random.len() as u64,
        "random data does not compress"
    );
    assert_eq!(m1.meta, meta("app"));

    // The same data again stores (almost) nothing.
    let d2 = store_files(&store, &[("random.dat", &random), ("rows.dat", &text)]);
    let m2 = store.manifest(d2).unwrap();
    assert_eq!(m2.new_stored_bytes, 0);
    assert_eq!(read_back(&store, d2, "rows.dat"), text);

    // A small edit in the middle stores only a few chunks.
    let mut edited = random.clone();
    let mid = edited.len() / 2;
    edited[mid..mid + 100].copy_from_slice(&[0xAB; 100]);
    let d3 = store_files(&store, &[("random.dat", &edited)]);
    let m3 = store.manifest(d3).unwrap();
    assert!(
        m3.new_stored_bytes < 4 * 64 * 1024,
        "edit stored {} bytes",
        m3.new_stored_bytes
    );
    assert_eq!(read_back(&store, d3, "random.dat"), edited);

    // Inserting bytes early changes only chunks near the insertion.
    let mut inserted = random[..1000].to_vec();
    inserted.extend_from_slice(b"inserted bytes");
    inserted.extend_from_slice(&random[1000..]);
    let d4 = store_files(&store, &[("random.dat", &inserted)]);
    let m4 = store.manifest(d4).unwrap();
    assert!(
        m4.new_stored_bytes < 4 * 64 * 1024,
        "insert stored {}",
        m4.new_stored_bytes
    );

    // restore_dir writes every file.
    let out = dir.path().join("restored");
    store.restore_dir(d1, &out).unwrap();
    assert_eq!(fs::read(out.join("random.dat")).unwrap(), random);
    assert_eq!(fs::read(out.join("rows.dat")).unwrap(), text);
    assert_eq!(fs::read(out.join("toc.dat")).unwrap(), empty);

    let stats = store.stats().unwrap();
    assert_eq!(stats.manifests, 4);
    assert!(stats.dedup_ratio > 2.0, "{stats:?}");
    assert!(store.verify().unwrap().is_clean());
    assert_eq!(store.manifests().unwrap().len(), 4);

    // Errors name what is wrong.
    let err = store
        .read_file(d1, "nope.dat", &mut Vec::new())
        .unwrap_err();
    assert!(matches!(err, StoreError::FileNotFound { .. }), "{err}");
    let err = store.begin(d1).err().unwrap();
    assert!(matches!(err, StoreError::DumpExists(_)), "{err}");
    let mut ingest = store.begin(Uuid::now_v7()).unwrap();
    assert!(ingest.add_file("../etc", Cursor::new(b"x")).is_err());
    ingest.add_file("a", Cursor::new(b"x")).unwrap();
    assert!(ingest.add_file("a", Cursor::new(b"x")).is_err());
}

#[test]
fn reopen_keeps_everything_and_chunk_params() {
    let dir = tempfile::tempdir().unwrap();
    let data = text_rows(3, 30_000);
    let dump = {
        let store = Store::open(dir.path(), opts()).unwrap();
        store_files(&store, &[("d", &data)])
    };
    let other = StoreOptions {
        chunking: ChunkParams::default(),
        ..opts()
    };
    let store = Store::open(dir.path(), other).unwrap();
    assert_eq!(store.options().chunking, opts().chunking);
    assert_eq!(read_back(&store, dump, "d"), data);
    let again = store_files(&store, &[("d", &data)]);
    assert_eq!(store.manifest(again).unwrap().new_stored_bytes, 0);
}

#[test]
fn concurrent_ingests() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), opts()).unwrap());
    let shared = Arc::new(text_rows(4, 40_000));
    let mut handles = Vec::new();
    for t in 0..4u64 {
        let store = Arc::clone(&store);
        let shared = Arc::clone(&shared);
        handles.push(std::thread::spawn(move || {
            let own = random_bytes(100 + t, 1 << 20);
            let dump = Uuid::now_v7();
            let mut ingest = store.begin(dump).unwrap();
            ingest
                .add_file("shared", Cursor::new(shared.as_slice()))
                .unwrap();
            ingest.add_file("own", Cursor::new(&own)).unwrap();
            ingest.finish(meta("app")).unwrap();
            (dump, own)
        }));
    }
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (dump, own) in &results {
        assert_eq!(read_back(&store, *dump, "own"), *own);
        assert_eq!(read_back(&store, *dump, "shared"), *shared);
    }
    assert!(store.verify().unwrap().is_clean());
    // Duplicates written by racing ingests are reclaimed by gc.
    store.gc(0.5).unwrap();
    for (dump, own) in &results {
        assert_eq!(read_back(&store, *dump, "own"), *own);
    }
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn crash_leftovers_are_cleaned_and_verify_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(5, 3 << 20);
    let kept;
    let partial = Uuid::now_v7();
    {
        let store = Store::open(dir.path(), opts()).unwrap();
        kept = store_files(&store, &[("ok", &text_rows(6, 20_000))]);
        // An ingest dropped midway: some packs sealed, one open, no manifest.
        let mut ingest = store.begin(partial).unwrap();
        ingest.add_file("big", Cursor::new(&data)).unwrap();
        assert!(ingest.new_stored_bytes() > 1 << 20);
        drop(ingest);
    }
    // What a kill -9 leaves on top: an .open pack and a manifest tmp file.
    let open_pack = dir
        .path()
        .join("packs")
        .join(format!("{}.pack.open", Uuid::now_v7().simple()));
    fs::write(&open_pack, b"PGSNPACK partial garbage").unwrap();
    let tmp = dir
        .path()
        .join("manifests")
        .join(format!("{partial}.json.tmp"));
    fs::write(&tmp, b"{\"format_version\": 1, \"dump_uu").unwrap();

    // A crash between sealing a pack and indexing it leaves a sealed orphan.
    let mut orphan = pgsnapman_store::pack::PackWriter::create(&dir.path().join("packs")).unwrap();
    let raw = b"orphaned chunk";
    let stored = zstd::bulk::compress(raw, 1).unwrap();
    orphan
        .append(
            &pgsnapman_store::pack::RecordHeader {
                chunk: pgsnapman_store::ChunkId::of(raw),
                kind: pgsnapman_store::pack::ChunkKind::Full,
                base: pgsnapman_store::ChunkId::ZERO,
                raw_len: raw.len() as u32,
                stored_len: stored.len() as u32,
            },
            &stored,
        )
        .unwrap();
    let orphan = orphan.seal().unwrap();
    let orphan_path = dir.path().join("packs").join(orphan.id.sealed_name());

    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(!open_pack.exists());
    assert!(!tmp.exists());
    assert!(matches!(
        store.manifest(partial),
        Err(StoreError::ManifestNotFound(_))
    ));
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(store.manifests().unwrap().len(), 1);
    // The partial dump's sealed chunks are garbage; gc reclaims them.
    let gc = store.gc(0.5).unwrap();
    assert!(gc.reclaimed_bytes > 1 << 20, "{gc:?}");
    assert!(!orphan_path.exists());
    assert!(store.verify().unwrap().is_clean());
    assert_eq!(read_back(&store, kept, "ok"), text_rows(6, 20_000));
    // And the next dump works, including with the same uuid.
    store_files(&store, &[("again", &data)]);
    let mut ingest = store.begin(partial).unwrap();
    ingest.add_file("big", Cursor::new(&data)).unwrap();
    ingest.finish(meta("app")).unwrap();
    assert_eq!(read_back(&store, partial, "big"), data);
}

#[test]
fn flipped_byte_is_reported_for_every_dump() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let data = random_bytes(7, 200_000);
    let a = store_files(&store, &[("f", &data)]);
    let b = store_files(&store, &[("g", &data)]);
    let c = store_files(&store, &[("h", &random_bytes(8, 200_000))]);
    let packs = pack_files(dir.path());
    // Dumps a and b share the first pack; c's data is in the second one.
    let target = packs
        .iter()
        .find(|p| {
            let m = store.manifest(a).unwrap();
            let e = store
                .index()
                .get(&m.files[0].chunks[0].id)
                .unwrap()
                .unwrap();
            p.file_name().unwrap().to_str().unwrap() == e.pack.sealed_name()
        })
        .unwrap();
    let mut bytes = fs::read(target).unwrap();
    let at = 26 + 77 + 500; // inside the first record's stored bytes
    bytes[at] ^= 0x40;
    fs::write(target, &bytes).unwrap();

    let report = store.verify().unwrap();
    assert!(!report.is_clean());
    let first_chunk = store.manifest(a).unwrap().files[0].chunks[0].id;
    let chunk_problem = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::CorruptChunk)
        .unwrap();
    assert_eq!(chunk_problem.chunk, Some(first_chunk));
    let mut ab = vec![a, b];
    ab.sort();
    assert_eq!(chunk_problem.dumps, ab);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::CorruptPack)
    );
    assert!(!report.affected_dumps().contains(&c));

    let err = store.read_file(b, "g", &mut Vec::new()).unwrap_err();
    assert!(matches!(err, StoreError::CorruptChunk { chunk, .. } if chunk == first_chunk));
    assert!(err.to_string().contains(&first_chunk.to_hex()), "{err}");
    assert_eq!(read_back(&store, c, "h"), random_bytes(8, 200_000));
}

#[test]
fn missing_pack_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let a = store_files(&store, &[("f", &random_bytes(9, 100_000))]);
    for p in pack_files(dir.path()) {
        fs::remove_file(p).unwrap();
    }
    let report = store.verify().unwrap();
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.kind == ProblemKind::MissingPack)
    );
    assert_eq!(report.affected_dumps(), vec![a]);
    assert!(store.read_file(a, "f", &mut Vec::new()).is_err());
}

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

#[test]
fn format_version_mismatch_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let dump = {
        let store = Store::open(dir.path(), opts()).unwrap();
        store_files(&store, &[("f", b"hello")])
    };
    // Manifest from the future.
    let path = dir.path().join("manifests").join(format!("{dump}.json"));
    let text = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        text.replacen("\"format_version\": 1", "\"format_version\": 99", 1),
    )
    .unwrap();
    {
        let store = Store::open(dir.path(), opts()).unwrap();
        let err = store.manifest(dump).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::FormatVersion {
                    what: "manifest",
                    found: 99,
                    expected: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("version 99"), "{err}");
        let report = store.verify().unwrap();
        assert_eq!(report.problems[0].kind, ProblemKind::UnreadableManifest);
        assert_eq!(report.problems[0].dumps, vec![dump]);
        // gc must not run when it cannot read every manifest.
        assert!(store.gc(0.5).is_err());
        store.index().set_format_version_for_test(2).unwrap();
    }
    // Index from the future.
    let err = Store::open(dir.path(), opts()).err().unwrap();
    assert!(
        matches!(
            err,
            StoreError::FormatVersion {
                what: "chunk index",
                found: 2,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("format version 2"), "{err}");
}

#[test]
fn bad_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bad = StoreOptions {
        zstd_level: 40,
        ..opts()
    };
    let err = Store::open(dir.path(), bad).err().unwrap();
    assert!(err.to_string().contains("40"), "{err}");
    let bad = StoreOptions {
        chunking: ChunkParams {
            min_bytes: 10,
            avg_bytes: 20,
            max_bytes: 30,
        },
        ..opts()
    };
    assert!(Store::open(dir.path(), bad).is_err());
    assert!(Store::open(dir.path(), opts()).unwrap().gc(1.5).is_err());
}

#[test]
fn store_and_ingest_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Store>();
    send::<pgsnapman_store::Ingest>();
}

#[test]
fn file_reader_streams_in_small_reads_and_read_back_precedes_the_manifest() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let text = text_rows(9, 40_000);
    let dump = Uuid::now_v7();
    let mut ingest = store.begin(dump).unwrap();
    ingest.add_file("archive", Cursor::new(&text)).unwrap();
    // Read back before finish: every chunk is indexed, no manifest yet.
    let mut back = Vec::new();
    ingest
        .read_back("archive")
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, text);
    assert!(matches!(
        store.manifest(dump),
        Err(StoreError::ManifestNotFound(_))
    ));
    assert!(matches!(
        ingest.read_back("other"),
        Err(StoreError::FileNotFound { .. })
    ));
    // More files after a read-back go to a new pack.
    ingest.add_file("toc.dat", Cursor::new(b"toc")).unwrap();
    assert_eq!(ingest.files().len(), 2);
    ingest.finish(meta("app")).unwrap();

    let mut r = store.file_reader(dump, "archive").unwrap();
    assert_eq!(r.size(), text.len() as u64);
    let mut out = Vec::new();
    let mut small = [0u8; 777];
    loop {
        let n = r.read(&mut small).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&small[..n]);
    }
    assert_eq!(out, text);
    assert_eq!(r.position(), text.len() as u64);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn file_reader_reports_a_corrupt_chunk_as_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let data = random_bytes(11, 200_000);
    let dump = store_files(&store, &[("f", &data)]);
    for p in pack_files(dir.path()) {
        let mut bytes = fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&p, bytes).unwrap();
    }
    let err = store.read_file(dump, "f", &mut Vec::new()).unwrap_err();
    assert!(matches!(err, StoreError::CorruptChunk { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("corrupt chunk"), "{text}");
}

/// A manifest written before `instance_id`, `database_bytes` and `notes`
/// existed keeps reading, with their defaults (golden file, never edit).
#[test]
fn golden_manifest_v1_without_later_fields_reads() {
    let dir = tempfile::tempdir().unwrap();
    let name = "01937a4e-7b4c-7000-8000-000000000001.json";
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/manifests")
        .join(name);
    fs::copy(&golden, dir.path().join(name)).unwrap();
    let m = pgsnapman_store::manifest::read_manifest(&dir.path().join(name)).unwrap();
    assert_eq!(m.meta.instance_id, 0);
    assert_eq!(m.meta.database_bytes, -1);
    assert_eq!(m.meta.notes, "");
    assert_eq!(m.meta.database, "app");
    assert_eq!(m.files[0].name, "toc.dat");
    assert_eq!(m.logical_bytes, 4242);
}

/// Statistics come from per-dump summaries in the index; a crash between a
/// manifest's rename and its summary (or between a deletion's unlink and the
/// summary's removal) is repaired when the store opens.
#[test]
fn stats_summaries_are_repaired_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let text = text_rows(21, 20_000);
    let (a, b) = {
        let store = Store::open(dir.path(), opts()).unwrap();
        let a = store_files(&store, &[("f", &text)]);
        let b = store_files(&store, &[("g", &text[..1000])]);
        let s = store.stats().unwrap();
        assert_eq!(s.manifests, 2);
        assert_eq!(s.logical_bytes, text.len() as u64 + 1000);
        // Crash 1: the summary of `b` was never written.
        store.index().delete_dump(&b).unwrap();
        (a, b)
    };
    // Crash 2: the manifest of `a` was unlinked but its summary stayed.
    fs::remove_file(dir.path().join(format!("manifests/{a}.json"))).unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let s = store.stats().unwrap();
    assert_eq!(s.manifests, 1, "{s:?}");
    assert_eq!(s.logical_bytes, 1000);
    let dumps: Vec<Uuid> = store
        .index()
        .dumps()
        .unwrap()
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(dumps, vec![b]);
    store.delete_dump(b).unwrap();
    assert_eq!(store.stats().unwrap().manifests, 0);
    assert!(store.index().dumps().unwrap().is_empty());
}

/// A read-only opening works beside the writer (as `pgsnapman-worker store
/// extract` does next to a running worker) and refuses every write.
#[test]
fn read_only_store_reads_beside_the_writer_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let text = text_rows(31, 10_000);
    let dump = store_files(&store, &[("f", &text)]);
    let ro = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.dump_ids().unwrap(), vec![dump]);
    let mut out = Vec::new();
    ro.read_file(dump, "f", &mut out).unwrap();
    assert_eq!(out, text);
    assert!(ro.verify().unwrap().is_clean());
    assert!(ro.begin(Uuid::now_v7()).is_err());
    assert!(ro.delete_dump(dump).is_err());
    assert!(ro.gc(0.5).is_err());
    // The writer goes on.
    store_files(&store, &[("g", b"more")]);
    let empty = tempfile::tempdir().unwrap();
    let err = Store::open_read_only(empty.path()).err().unwrap();
    assert!(err.to_string().contains("holds no chunk index"), "{err}");
}

/// An ingest abandoned after sealing packs, or a crash's open pack, tells
/// the caller a gc would reclaim space; a gc clears it.
#[test]
fn abandoned_ingests_and_crash_leftovers_flag_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(!store.has_garbage());
    // A finished dump leaves nothing to collect.
    store_files(&store, &[("f", &text_rows(41, 1_000))]);
    assert!(!store.has_garbage());
    // Abandoned before any pack was sealed: only the open pack, which the
    // ingest removes itself.
    {
        let mut ing = store.begin(Uuid::now_v7()).unwrap();
        ing.add_file("small", Cursor::new(b"tiny")).unwrap();
    }
    assert!(!store.has_garbage());
    // Abandoned after sealing packs (1 MiB packs, 3 MiB of random data).
    {
        let mut ing = store.begin(Uuid::now_v7()).unwrap();
        ing.add_file("big", Cursor::new(random_bytes(42, 3 << 20)))
            .unwrap();
    }
    assert!(store.has_garbage());
    let before = pack_files(dir.path()).len();
    let report = store.gc(0.0).unwrap();
    assert!(!store.has_garbage());
    assert!(report.packs_deleted >= 2, "{report:?}");
    assert!(pack_files(dir.path()).len() < before);
    assert!(store.verify().unwrap().is_clean());
    drop(store);
    // A crash: an open pack left behind is found at the next open.
    fs::write(
        dir.path()
            .join("packs")
            .join(format!("{}.pack.open", Uuid::now_v7().simple())),
        b"partial",
    )
    .unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    assert!(store.has_garbage());
}
