//! Golden fixtures of manifest format 2 (binary) and index format 3, beside
//! format 1 (JSON) manifests in the same store: they must keep reading
//! forever (never edit a file under tests/fixtures/).

use std::fs;
use std::path::PathBuf;

use pgsnapman_store::manifest::{self, Manifest};
use pgsnapman_store::{Store, TableRows};
use uuid::Uuid;

use crate::golden::{fixtures, golden_v2_day, write_golden_delta_store};
use crate::helpers::{copy_dir, meta, opts, pack_files, read_back};

/// The golden binary manifest (tests/fixtures/manifests).
const GOLDEN_MANIFEST: &str = "01937a4e-7b4c-7000-8000-000000000002";
/// Dumps in the golden v3 store (tests/fixtures/store-v3, see its README):
/// the first has a JSON manifest (format 1), the others binary ones.
const GOLDEN_V3: [&str; 3] = [
    "01937a4e-7b4c-7000-8000-0000000000c1",
    "01937a4e-7b4c-7000-8000-0000000000c2",
    "01937a4e-7b4c-7000-8000-0000000000c3",
];

fn golden_manifest() -> Manifest {
    let mut m = meta("app");
    m.notes = "dumped from a standby".into();
    m.script_hash = "sha256:00ff".into();
    m.table_rows = Some(vec![TableRows {
        database: String::new(),
        schema: "public".into(),
        table: "orders".into(),
        rows: 1500,
    }]);
    let chunk = |b: u8, len: u32| manifest::ChunkRef {
        id: pgsnapman_store::ChunkId([b; 32]),
        len,
    };
    Manifest {
        format_version: 2,
        dump_uuid: Uuid::parse_str(GOLDEN_MANIFEST).unwrap(),
        meta: m,
        logical_bytes: 300_022,
        new_stored_bytes: 1234,
        files: vec![
            manifest::FileEntry {
                name: "toc.dat".into(),
                size: 22,
                chunks: vec![chunk(1, 22)],
            },
            manifest::FileEntry {
                name: "3001.dat".into(),
                size: 300_000,
                chunks: vec![chunk(2, 100_000), chunk(3, 100_000), chunk(2, 100_000)],
            },
        ],
    }
}

/// Written once by the build that introduced manifest format 2; never
/// regenerate.
#[test]
#[ignore = "writes the golden binary manifest; run by hand only when creating it"]
fn write_golden_manifest_v2() {
    let dir = fixtures().join("manifests");
    let m = golden_manifest();
    assert!(
        manifest::existing_manifest(&dir, m.dump_uuid).is_none(),
        "the golden manifest exists; never regenerate it"
    );
    manifest::write_manifest(&dir, &m).unwrap();
}

/// The golden binary manifest reads back field for field.
#[test]
fn golden_manifest_v2_reads() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{GOLDEN_MANIFEST}.manifest");
    fs::copy(
        fixtures().join("manifests").join(&name),
        dir.path().join(&name),
    )
    .unwrap();
    let m = manifest::read_manifest(&dir.path().join(&name)).unwrap();
    assert_eq!(m, golden_manifest());
}

fn v3_dumps() -> Vec<(Uuid, Vec<u8>)> {
    GOLDEN_V3
        .iter()
        .zip(1..)
        .map(|(d, n)| (Uuid::parse_str(d).unwrap(), golden_v2_day(n)))
        .collect()
}

fn store_v3_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    copy_dir(&fixtures().join("store-v3"), &root);
    (tmp, root)
}

/// Written once by the build that introduced index format 3 and manifest
/// format 2; the first dump's manifest is rewritten in format 1 (JSON) so
/// that the store holds both. Never regenerate.
#[test]
#[ignore = "writes the golden v3 store; run by hand only when creating it"]
fn write_golden_store_v3() {
    let store = write_golden_delta_store("store-v3", &v3_dumps());
    let root = store.root().to_path_buf();
    let first = v3_dumps()[0].0;
    let mut m = store.manifest(first).unwrap();
    m.format_version = 1;
    let dir = root.join("manifests");
    manifest::write_manifest(&dir, &m).unwrap();
    fs::remove_file(manifest::manifest_path(&dir, first)).unwrap();
}

/// A store of index format 3 with a JSON and two binary manifests reads
/// back byte for byte, verifies clean, rebuilds its index to the same
/// entries, and takes new dumps that delta against its chunks.
#[test]
fn golden_store_v3_mixed_manifests_reads_and_rebuilds() {
    let (_tmp, root) = store_v3_copy();
    let dumps = v3_dumps();
    let formats: Vec<u32> = {
        let store = Store::open_read_only(&root).unwrap();
        for (dump, data) in &dumps {
            assert_eq!(&read_back(&store, *dump, "data.dat"), data);
        }
        dumps
            .iter()
            .map(|(d, _)| store.manifest(*d).unwrap().format_version)
            .collect()
    };
    assert_eq!(formats, [1, 2, 2]);
    let entries = |root: &std::path::Path| {
        let store = Store::open_read_only(root).unwrap();
        let mut all = Vec::new();
        store
            .index()
            .for_each(|id, e| {
                all.push((id, e));
                Ok(())
            })
            .unwrap();
        (all, store.stats().unwrap())
    };
    let (before, stats) = entries(&root);
    assert!(
        stats.delta_chunks > 0 && stats.feature_entries > 0,
        "{stats:?}"
    );
    let report = pgsnapman_store::rebuild_index(&root).unwrap();
    assert_eq!(report.dumps, 3, "{report:?}");
    let (after, stats_after) = entries(&root);
    assert_eq!(before, after);
    assert_eq!(stats.feature_entries, stats_after.feature_entries);

    let store = Store::open(&root, opts()).unwrap();
    assert!(store.verify().unwrap().is_clean());
    let mut day4 = golden_v2_day(3);
    day4[7..9].copy_from_slice(b"#4");
    let d = crate::helpers::store_files(&store, &[("data.dat", &day4)]);
    assert_eq!(read_back(&store, d, "data.dat"), day4);
    assert!(store.manifest(d).unwrap().new_stored_bytes < 2_000);
    for p in pack_files(&root) {
        pgsnapman_store::pack::scan_pack(&p, |_, _, _| Ok(())).unwrap();
    }
}
