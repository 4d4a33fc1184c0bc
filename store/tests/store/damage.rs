//! Damage and crashes: leftovers of interrupted writes (and the garbage flag
//! they raise), flipped bytes, missing packs, corrupt chunks on the read
//! path, format versions from the future.

use std::fs;
use std::io::Cursor;

use pgsnapman_store::{ProblemKind, Store, StoreError};
use uuid::Uuid;

use crate::helpers::{meta, opts, pack_files, random_bytes, read_back, store_files, text_rows};

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

#[test]
fn format_version_mismatch_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let dump = {
        let store = Store::open(dir.path(), opts()).unwrap();
        store_files(&store, &[("f", b"hello")])
    };
    // Manifest from the future.
    // (the version byte follows the 8-byte magic; it is checked first).
    let path = dir
        .path()
        .join("manifests")
        .join(format!("{dump}.manifest"));
    let mut bytes = fs::read(&path).unwrap();
    bytes[8] = 99;
    fs::write(&path, bytes).unwrap();
    {
        let store = Store::open(dir.path(), opts()).unwrap();
        let err = store.manifest(dump).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::FormatVersion {
                    what: "manifest",
                    found: 99,
                    expected: 2,
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
        store.index().set_format_version_for_test(4).unwrap();
    }
    // Index from the future.
    let err = Store::open(dir.path(), opts()).err().unwrap();
    assert!(
        matches!(
            err,
            StoreError::FormatVersion {
                what: "chunk index",
                found: 4,
                expected: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("format version 4"), "{err}");
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
