//! Round trips, dedup, reopening, concurrency, options, streaming reads,
//! statistics and read-only opening.

use std::fs;
use std::io::Cursor;
use std::sync::Arc;

use pgsnapman_store::{ChunkParams, Store, StoreError, StoreOptions};
use uuid::Uuid;

use crate::helpers::{meta, opts, pack_files, random_bytes, read_back, store_files, text_rows};

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

/// RocksDB starts a text log at every open; old ones must not pile up.
#[test]
fn reopening_keeps_few_rocksdb_text_logs() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..(pgsnapman_store::INFO_LOGS_KEPT + 4) {
        drop(Store::open(dir.path(), opts()).unwrap());
    }
    let logs = std::fs::read_dir(dir.path().join("index"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("LOG")
        })
        .count();
    assert!(
        (1..=pgsnapman_store::INFO_LOGS_KEPT).contains(&logs),
        "{logs} text logs"
    );
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
            normalization: 0,
        },
        ..opts()
    };
    assert!(Store::open(dir.path(), bad).is_err());
    let bad = StoreOptions {
        ingest_nice: 20,
        ..opts()
    };
    let err = Store::open(dir.path(), bad).err().unwrap();
    assert!(err.to_string().contains("nice"), "{err}");
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
    fs::remove_file(dir.path().join(format!("manifests/{a}.manifest"))).unwrap();
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

#[test]
fn file_reader_seeks_to_any_offset_directly_and_through_read_ahead() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let text = text_rows(11, 40_000);
    let dump = store_files(&store, &[("archive", &text)]);
    let m = store.manifest(dump).unwrap();
    let file = m.file("archive").unwrap();
    assert!(file.chunks.len() > 3, "the test needs several chunks");
    // Every chunk boundary, one byte either side, the middle of a chunk,
    // the start and the end.
    let mut offsets = vec![0u64, 1, text.len() as u64 - 1, text.len() as u64];
    let mut at = 0u64;
    for c in &file.chunks[..file.chunks.len() - 1] {
        at += u64::from(c.len);
        offsets.extend([at - 1, at, at + 1, at - u64::from(c.len) / 2]);
    }
    for &off in &offsets {
        let mut r = store.file_reader(dump, "archive").unwrap();
        r.seek_to(off).unwrap();
        assert_eq!(r.position(), off);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, &text[off as usize..], "direct read from {off}");

        let mut r = store.file_reader(dump, "archive").unwrap();
        // A read before the seek does not leak into what follows it.
        let mut first = [0u8; 100];
        r.read_exact(&mut first).unwrap();
        r.seek_to(off).unwrap();
        let mut out = Vec::new();
        r.read_ahead(2).read_to_end(&mut out).unwrap();
        assert_eq!(out, &text[off as usize..], "read-ahead from {off}");
    }
    let mut r = store.file_reader(dump, "archive").unwrap();
    let err = r.seek_to(text.len() as u64 + 1).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[test]
fn a_reader_stopped_at_an_offset_ends_with_the_chunk_holding_the_byte_before() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let text = text_rows(12, 40_000);
    let other = text_rows(13, 1_000);
    let dump = store_files(&store, &[("archive", &text), ("other", &other)]);
    // One manifest read for every file; each reads its own bytes.
    let files = store.stored_files(dump).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name()).collect();
    assert_eq!(names, ["archive", "other"]);
    let mut out = Vec::new();
    files[1].reader().read_to_end(&mut out).unwrap();
    assert_eq!(out, other);
    let file = &files[0];
    let m = store.manifest(dump).unwrap();
    let lens: Vec<u64> = m
        .file("archive")
        .unwrap()
        .chunks
        .iter()
        .map(|c| u64::from(c.len))
        .collect();
    assert!(lens.len() > 3, "the test needs several chunks");
    let ends: Vec<u64> = lens
        .iter()
        .scan(0u64, |at, len| {
            *at += len;
            Some(*at)
        })
        .collect();
    // (seek, stop) -> where the stream ends: the end of the chunk that
    // holds byte stop - 1.
    let mid = ends[1] + lens[2] / 2;
    let cases = [
        (0, 1, ends[0]),
        (0, ends[0], ends[0]),
        (0, ends[0] + 1, ends[1]),
        (ends[0] + 5, mid, ends[2]),
        (mid, mid + 1, ends[2]),
        (10, text.len() as u64, text.len() as u64),
        (10, u64::MAX, text.len() as u64),
    ];
    for (seek, stop, until) in cases {
        for ahead in [false, true] {
            let mut r = file.reader();
            r.seek_to(seek).unwrap();
            r.stop_at(stop);
            let mut out = Vec::new();
            if ahead {
                r.read_ahead(4).read_to_end(&mut out).unwrap();
            } else {
                r.read_to_end(&mut out).unwrap();
            }
            assert_eq!(
                out,
                &text[seek as usize..until as usize],
                "seek {seek}, stop at {stop}, read-ahead {ahead}"
            );
        }
    }
}

#[test]
fn readers_sharing_decoded_chunks_read_a_kept_chunk_without_decoding_it_again() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let text = text_rows(14, 40_000);
    let dump = store_files(&store, &[("archive", &text)]);
    let plain = store.stored_files(dump).unwrap().remove(0);
    let shared = plain.clone().sharing_decoded();
    let first = u64::from(store.manifest(dump).unwrap().files[0].chunks[0].len);
    let read = |file: &pgsnapman_store::StoredFile, from: u64, to: u64| {
        let mut r = file.reader();
        r.seek_to(from).unwrap();
        r.stop_at(to);
        let mut out = Vec::new();
        r.read_ahead(4).read_to_end(&mut out).map(|_| out)
    };
    // Two readers of parts of the first chunk: the first decodes it.
    assert_eq!(read(&shared, 0, 10).unwrap(), &text[..first as usize]);
    // Every pack zeroed: nothing can be decoded any more.
    for pack in pack_files(dir.path()) {
        let len = fs::metadata(&pack).unwrap().len();
        fs::write(&pack, vec![0u8; len as usize]).unwrap();
    }
    // The kept chunk still reads, from any offset in it, by a new reader.
    assert_eq!(
        read(&shared, 100, first).unwrap(),
        &text[100..first as usize]
    );
    // A reader that does not share decodes it, and fails; so does a
    // sharing reader of a chunk not kept.
    assert!(read(&plain, 0, 10).is_err());
    assert!(read(&shared, first, first + 1).is_err());
}
