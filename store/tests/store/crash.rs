//! Crash safety, proved by crashing: for every named crash point the
//! workload example (`examples/crash_workload.rs`: ingest dump C, part
//! of it uncompressed, delete dump A, gc with repack, compress C's
//! uncompressed chunks) runs in its own process until it aborts there
//! (`PGSNAPMAN_CRASH_AT`); then the store must open, verify clean, list
//! every dump that was complete before and no half one, read each back
//! byte-identical, and the next run must finish the work and leave no
//! leftover (no unsealed pack, no manifest `.tmp`, no pack without index
//! entries).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use pgsnapman_store::{CRASH_AT_ENV, CrashPoint, Store};
use uuid::Uuid;

use crate::helpers::{copy_dir, meta, opts, random_bytes, read_back, text_rows};

/// Which dumps the store lists after a crash at a point.
#[derive(Clone, Copy, Debug)]
struct Expect {
    a_listed: bool,
    c_listed: bool,
}

/// Before C's manifest is renamed: A and B only. From the rename on (no
/// power loss, so a renamed file stays even before its directory fsync): C
/// too. From A's unlink on: B and C.
const INGESTING: Expect = Expect {
    a_listed: true,
    c_listed: false,
};
const INGESTED: Expect = Expect {
    a_listed: true,
    c_listed: true,
};
const DELETED: Expect = Expect {
    a_listed: false,
    c_listed: true,
};

type Spec = (CrashPoint, u64, Expect);

/// Crash points of opening, ingesting and writing the manifest, with the
/// hit to crash on and what must be listed after. `pack.*` points are first
/// reached by C's ingest; a later hit crashes at a later pack or record.
fn ingest_specs() -> Vec<Spec> {
    use CrashPoint::*;
    vec![
        (OpenLeftoversRemoved, 1, INGESTING),
        (OpenLeftoversRemoved, 2, INGESTING),
        (PackAppend, 1, INGESTING),
        (PackAppend, 40, INGESTING),
        (PackFsync, 1, INGESTING),
        (PackFsync, 2, INGESTING),
        (PackRename, 1, INGESTING),
        (PackRename, 3, INGESTING),
        (PackDirFsync, 1, INGESTING),
        (IndexSealedBatch, 1, INGESTING),
        (IndexSealedBatch, 2, INGESTING),
        (IngestSealed, 1, INGESTING),
        (ManifestTmpWritten, 1, INGESTING),
        (ManifestRenamed, 1, INGESTED),
        (ManifestDurable, 1, INGESTED),
        (IngestSummary, 1, INGESTED),
    ]
}

/// Crash points of the deletion, gc and repack.
fn gc_specs() -> Vec<Spec> {
    use CrashPoint::*;
    vec![
        (DeleteUnlinked, 1, DELETED),
        (DeleteDirFsync, 1, DELETED),
        (GcMarked, 1, DELETED),
        (GcIndexBatch, 1, DELETED),
        (GcFeaturesSwept, 1, DELETED),
        (GcPackRemoved, 1, DELETED),
        (GcPacksDirFsync, 1, DELETED),
        (RepackCopied, 1, DELETED),
        (RepackCopied, 30, DELETED),
        (RepackSealed, 1, DELETED),
        (RepackIndexed, 1, DELETED),
        (RepackOldRemoved, 1, DELETED),
        (RepackOldRemoved, 2, DELETED),
        (RepackDirFsync, 1, DELETED),
        (LaterOldRemoved, 1, DELETED),
        (LaterOldRemoved, 2, DELETED),
        (LaterDirFsync, 1, DELETED),
        (LaterMarksForgotten, 1, DELETED),
    ]
}

/// Every crash point is in one of the lists: at least 20.
#[test]
fn every_crash_point_is_tested() {
    let names: BTreeSet<&str> = ingest_specs()
        .into_iter()
        .chain(gc_specs())
        .map(|(p, _, _)| p.name())
        .collect();
    assert!(names.len() >= 20, "{names:?}");
    assert_eq!(
        names.len(),
        CrashPoint::ALL.len(),
        "a crash point is not tested"
    );
}

/// The dumps of the template store and of the workload, with their files.
struct World {
    template: tempfile::TempDir,
    /// C's files, as the workload reads them.
    c_dir: tempfile::TempDir,
    a: Uuid,
    b: Uuid,
    c: Uuid,
    files: HashMap<Uuid, Vec<(String, Vec<u8>)>>,
}

/// `text` with one byte changed every `every` bytes: similar chunks, stored
/// as deltas against the original's.
fn edited(text: &[u8], every: usize, seed: u8) -> Vec<u8> {
    let mut t = text.to_vec();
    for (i, b) in t.iter_mut().enumerate().step_by(every) {
        *b = b'a' + ((i as u8) ^ seed) % 26;
    }
    t
}

/// A: random bytes, text and bytes of its own; B: most of A's random bytes plus its own, and
/// A's text lightly edited (deltas against A's chunks, so deleting A leaves
/// A's packs partly live: repack, and bases kept); C (stored by the
/// workload): several packs of its own and more deltas. A leftover unsealed
/// pack and manifest `.tmp` wait for the workload's `open`.
fn world() -> World {
    let a_rand = random_bytes(1, 1_500_000);
    let a_text = text_rows(2, 20_000);
    let mut b_rand = a_rand[..1_000_000].to_vec();
    b_rand.extend(random_bytes(3, 300_000));
    let b_text = edited(&a_text, 20_000, 1);
    let c_rand = random_bytes(4, 2_500_000);
    let c_text = edited(&a_text, 30_000, 2);
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut files = HashMap::new();
    // A's own bytes fill packs that only A uses: gc deletes them whole.
    let a_own = random_bytes(5, 1_500_000);
    files.insert(
        a,
        vec![
            ("rand".to_string(), a_rand),
            ("text".to_string(), a_text),
            ("zown".to_string(), a_own),
        ],
    );
    files.insert(
        b,
        vec![("rand".to_string(), b_rand), ("text".to_string(), b_text)],
    );
    files.insert(
        c,
        vec![("rand".to_string(), c_rand), ("text".to_string(), c_text)],
    );

    let template = tempfile::tempdir().unwrap();
    let store = Store::open(template.path(), opts()).unwrap();
    for dump in [a, b] {
        let mut ingest = store.begin(dump).unwrap();
        for (name, data) in &files[&dump] {
            ingest.add_file(name, std::io::Cursor::new(data)).unwrap();
        }
        ingest.finish(meta("crash")).unwrap();
    }
    drop(store);
    std::fs::write(
        template
            .path()
            .join("packs")
            .join(format!("{}.pack.open", Uuid::now_v7().simple())),
        b"PGSNPACK half a pack",
    )
    .unwrap();
    std::fs::write(
        template
            .path()
            .join("manifests")
            .join(format!("{}.json.tmp", Uuid::now_v7())),
        b"{\"half\":",
    )
    .unwrap();
    let c_dir = tempfile::tempdir().unwrap();
    for (name, data) in &files[&c] {
        std::fs::write(c_dir.path().join(name), data).unwrap();
    }
    World {
        template,
        c_dir,
        a,
        b,
        c,
        files,
    }
}

/// The workload example, built by `cargo test` beside this test binary.
fn workload_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples").join("crash_workload"))
        .unwrap();
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p pgsnapman-store --examples`",
        path.display()
    );
    path
}

/// Runs the workload on `root`, crashing at `spec` if given; returns
/// whether it aborted.
fn run_workload(w: &World, root: &Path, spec: Option<&str>) -> bool {
    let mut cmd = Command::new(workload_binary());
    cmd.arg(root)
        .arg(w.a.to_string())
        .arg(w.c.to_string())
        .arg(w.c_dir.path())
        .env_remove(CRASH_AT_ENV);
    if let Some(spec) = spec {
        cmd.env(CRASH_AT_ENV, spec);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    match out.status.signal() {
        Some(6) => {
            assert!(stderr.contains("aborting at"), "{stderr}");
            true
        }
        Some(sig) => panic!("workload died of signal {sig}: {stderr}"),
        None => {
            assert!(out.status.success(), "workload failed: {stderr}");
            false
        }
    }
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

/// The store verifies (every needed chunk decoded and hash-checked), lists
/// exactly `expected` and, with `read`, each reads back as it was stored;
/// nothing an interrupted write left is on disk.
fn check_store(w: &World, store: &Store, expected: &BTreeSet<Uuid>, read: bool, when: &str) {
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{when}: {:?}", report.problems);
    let listed: BTreeSet<Uuid> = store.dump_ids().unwrap().into_iter().collect();
    assert_eq!(
        &listed, expected,
        "{when}: listed dumps (a {}, b {}, c {})",
        w.a, w.b, w.c
    );
    for dump in listed.iter().filter(|_| read) {
        for (name, data) in &w.files[dump] {
            assert!(
                read_back(store, *dump, name) == *data,
                "{when}: {name} of {dump} reads back changed"
            );
        }
    }
    assert_eq!(
        store.stats().unwrap().manifests,
        listed.len() as u64,
        "{when}"
    );
    let root = store.root();
    assert!(
        files_ending(&root.join("packs"), ".open").is_empty(),
        "{when}"
    );
    assert!(
        files_ending(&root.join("manifests"), ".tmp").is_empty(),
        "{when}"
    );
}

/// After a full run: every pack file holds an indexed record (the crash's
/// orphans are gone).
fn check_no_orphan_packs(store: &Store, when: &str) {
    let mut indexed = BTreeSet::new();
    store
        .index()
        .for_each(|_, e| {
            indexed.insert(e.pack.sealed_name());
            Ok(())
        })
        .unwrap();
    let on_disk: BTreeSet<String> = files_ending(&store.root().join("packs"), ".pack")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(on_disk, indexed, "{when}: pack files vs. indexed packs");
}

/// Runs the workload once per spec, crashing there, and checks the store
/// after the crash and after a full rerun.
fn crash_at_each(specs: Vec<Spec>) {
    let w = world();
    let scratch = tempfile::tempdir().unwrap();
    for (i, (point, nth, expect)) in specs.into_iter().enumerate() {
        let spec = format!("{}:{nth}", point.name());
        let root = scratch.path().join(format!("store-{i}"));
        copy_dir(w.template.path(), &root);
        assert!(
            run_workload(&w, &root, Some(&spec)),
            "{spec}: never reached"
        );

        let store = Store::open(&root, opts()).unwrap();
        let mut expected = BTreeSet::from([w.b]);
        if expect.a_listed {
            expected.insert(w.a);
        }
        if expect.c_listed {
            expected.insert(w.c);
        }
        check_store(
            &w,
            &store,
            &expected,
            true,
            &format!("after a crash at {spec}"),
        );
        drop(store);

        assert!(!run_workload(&w, &root, None), "{spec}: the rerun crashed");
        let store = Store::open(&root, opts()).unwrap();
        // A second gc: what the first one's crash left (a repacked pack not
        // yet deleted, a new pack not yet indexed) goes now at the latest.
        store.gc(0.0).unwrap();
        let when = format!("after a crash at {spec} and a full rerun");
        check_store(&w, &store, &BTreeSet::from([w.b, w.c]), false, &when);
        check_no_orphan_packs(&store, &when);
        assert_eq!(
            store.later_packs().unwrap(),
            0,
            "{when}: packs left to compress"
        );
        assert_eq!(
            store.later_deltas().unwrap(),
            0,
            "{when}: deltas left to encode"
        );
        drop(store);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

/// Issue 12: kill -9 at points of ingest, seal and manifest write.
#[test]
fn crash_while_ingesting_leaves_a_consistent_store() {
    crash_at_each(ingest_specs());
}

/// Issue 12: kill -9 at points of delete, gc and repack (R2).
#[test]
fn crash_while_collecting_leaves_a_consistent_store() {
    crash_at_each(gc_specs());
}
