//! Encrypted stores (docs/encryption.md): round trip, dedup and delta chunks
//! under one key; no plaintext and no unkeyed chunk id on disk; wrong or
//! missing keys fail naming the key ids; verify names a damaged dump.

use std::fs;
use std::path::Path;

use pgsnapman_store::{
    BackendConfig, ChunkId, ProblemKind, Store, StoreError, StoreKey, StoreOptions, rebuild_index,
    rebuild_index_encrypted,
};

use crate::helpers::{opts, read_back, store_files, text_rows};

fn open(root: &Path, key: &StoreKey, o: StoreOptions) -> Result<Store, StoreError> {
    Store::open_encrypted(root, o, BackendConfig::Local, Some(key))
}

/// Every file under `dir` (packs, manifests), read whole.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Round trip, dedup and delta chunks work within a key; nothing on disk
/// (packs, manifests) holds a row value, and no chunk id is the unkeyed
/// BLAKE3 of its content.
#[test]
fn encrypted_store_round_trips_dedups_and_hides_content() {
    let dir = tempfile::tempdir().unwrap();
    let key = StoreKey::from_bytes([9; 32]);
    let o = StoreOptions {
        max_delta_depth: 2,
        ..opts()
    };
    let store = open(dir.path(), &key, o).unwrap();
    let day1 = text_rows(11, 30_000);
    let mut day2 = day1.clone();
    let mut at = 777;
    while at + 3 < day2.len() {
        day2[at..at + 3].copy_from_slice(b"#2#");
        at += 5_000;
    }
    let d1 = store_files(&store, &[("t", &day1)]);
    let after1 = store.stats().unwrap();
    let d1b = store_files(&store, &[("t", &day1)]);
    let after_dup = store.stats().unwrap();
    assert_eq!(
        after_dup.chunks, after1.chunks,
        "a repeated dump adds no chunk"
    );
    let d2 = store_files(&store, &[("t", &day2)]);
    let after2 = store.stats().unwrap();
    assert!(after2.delta_chunks > 0, "{after2:?}");
    for (d, data) in [(d1, &day1), (d1b, &day1), (d2, &day2)] {
        assert_eq!(&read_back(&store, d, "t"), data);
    }
    assert!(store.verify().unwrap().is_clean());

    // Chunk ids are keyed: none equals the plain BLAKE3 of its bytes.
    let m = store.manifest(d1).unwrap();
    let mut offset = 0usize;
    for c in &m.files[0].chunks {
        let raw = &day1[offset..offset + c.len as usize];
        assert_ne!(c.id, ChunkId::of(raw));
        offset += c.len as usize;
    }
    drop(store);

    // No row value and no plain id on disk.
    let plain_first = ChunkId::of(&day1[..m.files[0].chunks[0].len as usize]);
    let needles: Vec<Vec<u8>> = vec![
        b"customer-".to_vec(),
        day1[..40].to_vec(),
        b"db1.example".to_vec(),
        plain_first.0.to_vec(),
    ];
    for sub in ["packs", "manifests"] {
        for (path, bytes) in files_under(&dir.path().join(sub)) {
            for n in &needles {
                assert!(!contains(&bytes, n), "{} holds {:?}", path.display(), n);
            }
        }
    }
}

/// Without the key, or with another key, the store does not open; the
/// error names the store and both key ids. A key for a store that holds
/// plain data is refused.
#[test]
fn wrong_or_missing_key_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = StoreKey::from_bytes([1; 32]);
    let store = open(dir.path(), &key, opts()).unwrap();
    store_files(&store, &[("f", &text_rows(1, 2_000))]);
    drop(store);

    let err = Store::open(dir.path(), opts()).err().unwrap().to_string();
    assert!(
        err.contains(key.id()) && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert!(!err.contains('\n'), "{err}");
    let other = StoreKey::from_bytes([2; 32]);
    let err = open(dir.path(), &other, opts()).err().unwrap().to_string();
    assert!(err.contains(key.id()) && err.contains(other.id()), "{err}");
    let err = Store::open_read_only(dir.path()).err().unwrap().to_string();
    assert!(err.contains(key.id()), "{err}");
    assert!(Store::open_read_only_encrypted(dir.path(), Some(&key)).is_ok());

    let plain = tempfile::tempdir().unwrap();
    let store = Store::open(plain.path(), opts()).unwrap();
    store_files(&store, &[("f", &text_rows(1, 2_000))]);
    drop(store);
    let err = open(plain.path(), &key, opts()).err().unwrap().to_string();
    assert!(err.contains("cannot be turned on"), "{err}");
    // A plain store reads plain even with a key at hand (offline tools).
    assert!(Store::open_read_only_encrypted(plain.path(), Some(&key)).is_ok());
}

/// A flipped byte in an encrypted record is found by verify, naming the
/// chunk and the dump; a record's bytes moved under another record's
/// header fail to open.
#[test]
fn verify_finds_damage_and_swapped_records_fail() {
    let dir = tempfile::tempdir().unwrap();
    let key = StoreKey::from_bytes([3; 32]);
    let store = open(dir.path(), &key, opts()).unwrap();
    let data = text_rows(5, 20_000);
    let dump = store_files(&store, &[("f", &data)]);
    let m = store.manifest(dump).unwrap();
    let (a, b) = (m.files[0].chunks[0].id, m.files[0].chunks[1].id);
    let ea = store.index().get(&a).unwrap().unwrap();
    let eb = store.index().get(&b).unwrap().unwrap();
    let path = dir.path().join("packs").join(ea.pack.sealed_name());
    let pristine = fs::read(&path).unwrap();

    // Swap the first bytes of the two records' sealed payloads (header
    // left in place): both chunks fail to open.
    let mut bytes = pristine.clone();
    let (pa, pb) = ((ea.offset + 77) as usize, (eb.offset + 77) as usize);
    let n = 64.min(ea.stored_len as usize).min(eb.stored_len as usize);
    let (x, y) = (bytes[pa..pa + n].to_vec(), bytes[pb..pb + n].to_vec());
    bytes[pa..pa + n].copy_from_slice(&y);
    bytes[pb..pb + n].copy_from_slice(&x);
    fs::write(&path, &bytes).unwrap();
    let err = store.read_file(dump, "f", &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains(key.id()), "{err}");
    let report = store.verify().unwrap();
    let problem = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::CorruptChunk && p.chunk == Some(a))
        .unwrap();
    assert_eq!(problem.dumps, vec![dump]);

    fs::write(&path, &pristine).unwrap();
    assert!(store.verify().unwrap().is_clean());
    assert_eq!(read_back(&store, dump, "f"), data);
}

/// The index rebuilds from an encrypted store's packs and manifests only
/// with its key; the rebuilt store reads back.
#[test]
fn rebuild_needs_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = StoreKey::from_bytes([4; 32]);
    let store = open(dir.path(), &key, opts()).unwrap();
    let data = text_rows(6, 10_000);
    let dump = store_files(&store, &[("f", &data)]);
    drop(store);
    let err = rebuild_index(dir.path()).unwrap_err().to_string();
    assert!(err.contains(key.id()), "{err}");
    let r = rebuild_index_encrypted(dir.path(), Some(&key)).unwrap();
    assert_eq!(r.dumps, 1);
    let store = open(dir.path(), &key, opts()).unwrap();
    assert_eq!(read_back(&store, dump, "f"), data);
}
