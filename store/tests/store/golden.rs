//! Golden fixtures written by earlier builds: they must keep reading forever
//! (never edit a file under tests/fixtures/).

use std::fs;
use std::path::Path;

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
