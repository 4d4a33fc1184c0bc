//! The real worker aborted at 22 named crash points of the pack store
//! (`PGSNAPMAN_CRASH_AT`, docs/store.md) while it stores a real pg_dump,
//! while it deletes a dump and collects garbage, and while gc repacks: after
//! each crash the store
//! verifies, every dump complete before is listed and extracts
//! byte-identical, no half dump is listed or in the catalog, and the
//! restarted worker cleans up and completes the retried task; at the end
//! every stored dump restores with pg_restore. The store's
//! own test (`store/tests/store/crash.rs`) covers every point; this one
//! proves the hook and the recovery in the real process.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pgsnapman_tests::{Worker, WorkerOptions, wait};
use serde_json::Value;

use crate::common::*;

const NAME: &str = "w-crash";
/// 1 MiB packs, so a few MB of new data seal several; a pack that lost
/// any of its data is repacked, so a deletion reaches the repack points.
/// Every chunk compressed while the dump runs: the compression after the
/// dump rewrites packs through the same `pack.*` and `repack.*` points at
/// times of its own, which would take the hits meant for the dump and the
/// gc here (its own crash points are covered by the store's crash test,
/// `store/tests/store/crash.rs`).
const ENV: &[(&str, &str)] = &[
    ("PGSNAPMAN_STORE__PACK_TARGET_BYTES", "1048576"),
    ("PGSNAPMAN_STORE__REPACK_BELOW_LIVE_FRACTION", "0.95"),
    ("PGSNAPMAN_STORE__COMPRESS_LATER_MAX_BYTES", "0"),
];

/// Every file of every stored dump, by dump uuid and file name.
type Contents = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// Extracts every stored dump (`pgsnapman-worker store extract`).
fn extract_all(worker: &Worker, scratch: &Path) -> Contents {
    let mut out = Contents::new();
    for dump in worker.stored_dumps().unwrap() {
        let dir = scratch.join(uuid::Uuid::new_v4().to_string());
        worker
            .extract(&dump, &dir)
            .unwrap_or_else(|e| panic!("extract {dump}: {e:#}"));
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(&path).unwrap());
        }
        std::fs::remove_dir_all(&dir).unwrap();
        out.insert(dump, files);
    }
    out
}

fn start_worker(stack: &Stack, crash_at: Option<&str>) -> Worker {
    let mut env: Vec<(String, String)> = ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(point) = crash_at {
        env.push(("PGSNAPMAN_CRASH_AT".to_string(), point.to_string()));
    }
    Worker::start(WorkerOptions {
        name: NAME.into(),
        coordinator: stack.coordinator.access(),
        data_dir: Some(stack.worker.data_dir.clone()),
        env,
    })
    .unwrap()
}

/// Replaces the running worker by one armed with `point`, queues work with
/// `queue` and waits until the worker aborts there. Returns the task.
async fn crash_at(stack: &mut Stack, point: &str, queue: impl FnOnce(&Stack) -> i64) -> i64 {
    stack.worker.process.stop_clean().await;
    stack.worker = start_worker(stack, Some(point));
    stack.coordinator.wait_worker_connected(NAME).await;
    let task = queue(stack);
    let what = format!("the worker to abort at {point}");
    wait::until(&what, Duration::from_secs(120), || {
        let running = stack.worker.process.is_running();
        async move { (!running).then_some(()) }
    })
    .await;
    let log = std::fs::read_to_string(stack.worker.process.log_path()).unwrap();
    let name = point.split(':').next().unwrap();
    assert!(
        log.contains(&format!("PGSNAPMAN_CRASH_AT: aborting at {name}")),
        "the worker died, but not at {point}:\n{}",
        pgsnapman_tests::logs::tail(stack.worker.process.log_path(), 30)
    );
    task
}

/// The store after a crash, before the restart: verifies, and holds every
/// dump of `before` unchanged (`may_add` more, each complete, if the crash
/// came after a manifest's rename).
fn check_crashed_store(stack: &Stack, before: &Contents, may_add: bool, point: &str) -> Contents {
    let report = stack
        .worker
        .store_tool(&["verify"])
        .unwrap_or_else(|e| panic!("{point}: the store does not verify: {e:#}"));
    assert!(report.contains(" 0 problem(s)"), "{point}: {report}");
    let now = extract_all(&stack.worker, stack.scratch.path());
    for (dump, files) in before {
        assert!(
            now.get(dump) == Some(files),
            "{point}: dump {dump} changed or vanished"
        );
    }
    if !may_add {
        assert_eq!(now.len(), before.len(), "{point}: a half dump is listed");
    }
    now
}

/// Restarts the worker without the hook; the retried task completes, and
/// nothing an interrupted write left remains on disk.
async fn recover(stack: &mut Stack, task: i64, point: &str) {
    stack.worker = start_worker(stack, None);
    let done = wait_task_done(&stack.cli, task).await;
    assert_eq!(done["state"], "SUCCEEDED", "{point}: {done}");
    let data = &stack.worker.data_dir;
    for (dir, suffix) in [("packs", ".pack.open"), ("manifests", ".tmp")] {
        let left = files_with_suffix(&data.join(dir), suffix);
        assert!(left.is_empty(), "{point}: leftovers {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_aborted_at_store_crash_points_loses_nothing() {
    // Owned here, not by the first worker: workers are replaced below.
    let dir = pgsnapman_tests::shared_tempdir("pgsnapman-crash-");
    let mut stack = Stack::start_with(NAME, ENV, Some(dir.path().join("data"))).await;
    stack.source.create_database("crashdb").unwrap();
    fill_mixed(&stack.source, "crashdb", "t", 1, 1_500, 512);
    let inst = add_instance(&stack.cli, "src", stack.source.port, NAME, None);
    let job = add_job(&stack.cli, inst, "crashdb");
    let first: Value = dump_and_show(&stack.cli, job);
    let mut stored = extract_all(&stack.worker, stack.scratch.path());
    assert_eq!(stored.len(), 1);

    // Points of a dump's ingest: each round adds new rows, so new chunks
    // fill new packs; `manifest.renamed` leaves a complete manifest.
    let points = [
        ("pack.append:3", false),
        ("pack.fsync", false),
        ("pack.rename:1", false),
        ("pack.dir_fsync", false),
        ("index.sealed_batch", false),
        ("ingest.sealed", false),
        ("manifest.tmp_written", false),
        ("manifest.renamed", true),
        ("manifest.durable", true),
        ("ingest.summary", true),
    ];
    for (round, (point, may_add)) in points.into_iter().enumerate() {
        fill_mixed(
            &stack.source,
            "crashdb",
            &format!("r{round}_"),
            1,
            2_000,
            512,
        );
        let rows_before = catalog_of_job(&stack.cli, job).len();
        let task = crash_at(&mut stack, point, |s| dump_now(&s.cli, job)).await;
        let t = stack
            .cli
            .json(&["task", "show", &task.to_string()])
            .unwrap();
        assert_ne!(t["state"], "SUCCEEDED", "{point}: {t}");
        assert_eq!(
            catalog_of_job(&stack.cli, job).len(),
            rows_before,
            "{point}"
        );
        stored = check_crashed_store(&stack, &stored, may_add, point);
        recover(&mut stack, task, point).await;
        assert_eq!(
            catalog_of_job(&stack.cli, job).len(),
            rows_before + 1,
            "{point}"
        );
        stored = check_crashed_store(&stack, &stored, true, point);
        // A dump stored just before the crash is reported at the restart
        // (under its task, which then needs no second run): the catalog
        // and the store hold the same dumps.
        let in_catalog: std::collections::BTreeSet<String> = catalog_of_job(&stack.cli, job)
            .iter()
            .map(|d| d["dump_uuid"].as_str().unwrap().to_string())
            .collect();
        let in_store: std::collections::BTreeSet<String> = stored.keys().cloned().collect();
        assert_eq!(in_catalog, in_store, "{point}");
    }

    // Points of a deletion and its gc: each round deletes a dump of a
    // database of its own, so its packs hold nothing else (gc removes them).
    let points = [
        "delete.unlinked",
        "delete.dir_fsync",
        "gc.marked",
        "gc.index_batch",
        "gc.features_swept",
        "gc.pack_removed",
        "gc.packs_dir_fsync",
    ];
    for (round, point) in points.into_iter().enumerate() {
        let db = format!("gone{round}");
        stack.source.create_database(&db).unwrap();
        fill_mixed(&stack.source, &db, "g", 1, 1_000, 512);
        let gone_job = add_job(&stack.cli, inst, &db);
        let victim = dump_and_show(&stack.cli, gone_job);
        stored = delete_and_crash(&mut stack, stored, &victim, point).await;
        assert!(catalog_of_job(&stack.cli, gone_job).is_empty(), "{point}");
        stored = check_crashed_store(&stack, &stored, false, point);
    }
    // Points of a repack: the deleted dump's first pack also holds chunks
    // a later dump of the same database shares (table `a0`, dumped first),
    // so gc copies those into a new pack before removing the old one.
    for (round, point) in [
        "repack.copied",
        "repack.sealed",
        "repack.indexed",
        "repack.old_removed",
        "repack.dir_fsync",
    ]
    .into_iter()
    .enumerate()
    {
        let db = format!("repack{round}");
        stack.source.create_database(&db).unwrap();
        fill_mixed(&stack.source, &db, "a", 1, 1_200, 512);
        fill_mixed(&stack.source, &db, "z", 1, 2_000, 512);
        let rp_job = add_job(&stack.cli, inst, &db);
        let victim = dump_and_show(&stack.cli, rp_job);
        stack.source.script(&db, "DROP TABLE z0").unwrap();
        let kept = dump_and_show(&stack.cli, rp_job);
        stored = delete_and_crash(&mut stack, stored, &victim, point).await;
        let rows: Vec<i64> = catalog_of_job(&stack.cli, rp_job)
            .iter()
            .map(id_of)
            .collect();
        assert_eq!(rows, [id_of(&kept)], "{point}");
        stored = check_crashed_store(&stack, &stored, false, point);
    }
    let keep = first["dump_uuid"].as_str().unwrap().to_string();
    assert!(stored.contains_key(&keep));
    every_dump_restores(&stack);
    stack.stop_clean(&[]).await;
}

/// Deletes `victim` (`pgsnap catalog delete`) with the worker armed to abort
/// at `point`, checks the crashed store without it, restarts the worker and
/// waits for the delete to complete. Returns the store's dumps.
async fn delete_and_crash(
    stack: &mut Stack,
    stored: Contents,
    victim: &Value,
    point: &str,
) -> Contents {
    let stored = check_crashed_store(stack, &stored, true, point);
    let id = id_of(victim).to_string();
    let task = crash_at(stack, point, |s| {
        id_of(&s.cli.json(&["catalog", "delete", &id]).unwrap())
    })
    .await;
    let mut stored = stored;
    stored.remove(victim["dump_uuid"].as_str().unwrap());
    let stored = check_crashed_store(stack, &stored, false, point);
    recover(stack, task, point).await;
    stored
}

/// Every dump the crashes left in the store restores with pg_restore into
/// a new database.
fn every_dump_restores(stack: &Stack) {
    let dumps = stack.worker.stored_dumps().unwrap();
    assert!(!dumps.is_empty());
    for (n, dump) in dumps.iter().enumerate() {
        let dir = stack.scratch.path().join(format!("restore-{n}"));
        stack
            .worker
            .extract(dump, &dir)
            .unwrap_or_else(|e| panic!("extract {dump}: {e:#}"));
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{dump}: {files:?}");
        let db = format!("restored_{n}");
        stack.source.create_database(&db).unwrap();
        pg_restore(&stack.source, &db, files[0].to_str().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
