//! The worker's pack store end to end (issue 3): dedup across dumps, delete
//! and gc, verify naming damaged dumps, kill -9 mid-ingest, catalog rebuild
//! from the manifests, and a full disk.
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgsnapman_tests::tmpfs::Tmpfs;
use pgsnapman_tests::{Worker, WorkerOptions, wait};
use serde_json::Value;

use crate::common::*;

fn restore_count(stack: &Stack, dump: &Value, into: &str, table: &str) -> String {
    let archive = stack.extract(dump);
    stack.source.create_database(into).unwrap();
    pg_restore(&stack.source, into, &archive.to_string_lossy());
    stack
        .source
        .query(into, &format!("SELECT count(*) FROM {table}"))
        .unwrap()
}

/// The catalog's `stored_bytes` of `dump` once it is below `below`, or as
/// it is after 30 s. A dump's new chunks may be stored uncompressed and
/// compressed after it (docs/store.md): its row first counts them raw, then
/// takes the compressed figure (`DumpsCompressed`).
async fn stored_once_compressed(stack: &Stack, dump: &Value, below: u64) -> u64 {
    let id = id_of(dump).to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row = stack.cli.json(&["catalog", "show", &id]).unwrap();
        let now = row["stored_bytes"].as_u64().unwrap();
        if now < below || std::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn packs(data_dir: &Path, suffix: &str) -> Vec<PathBuf> {
    files_with_suffix(&data_dir.join("packs"), suffix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dumps_dedup_verify_and_gc_after_delete() {
    let stack = Stack::start("w-store").await;
    stack.source.create_database("shop").unwrap();
    fill_mixed(&stack.source, "shop", "t", 2, 8_000, 256);
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-store", None);
    let job = add_job(&stack.cli, inst, "shop");

    // Two dumps of an unchanged database: the second stores (nearly) nothing.
    let d1 = dump_and_show(&stack.cli, job);
    let d2 = dump_and_show(&stack.cli, job);
    let (logical1, stored1) = (
        d1["dump_bytes"].as_u64().unwrap(),
        d1["stored_bytes"].as_u64().unwrap(),
    );
    let logical2 = d2["dump_bytes"].as_u64().unwrap();
    assert!(logical1 > 4_000_000, "{d1}");
    // d1's new chunks were stored uncompressed and are compressed after the
    // dump (`store.compress_later_max_bytes`, docs/store.md): the catalog
    // counts what the dump wrote, raw frames and record headers included.
    assert!(
        stored1 > logical1 * 9 / 10 && stored1 < logical1 + logical1 / 50,
        "{d1}"
    );
    wait::until(
        "the store compressed what d1 stored uncompressed",
        Duration::from_secs(60),
        || async {
            let s = stack
                .cli
                .json(&["store", "stats", "--worker", "w-store"])
                .ok()?;
            let bytes = s[0]["pack_bytes"].as_u64()?;
            (bytes < stored1 * 3 / 4).then_some(())
        },
    )
    .await;
    // The catalog learns d1's stored bytes after the compression.
    let d1_id = id_of(&d1).to_string();
    wait::until(
        "the catalog's stored bytes of d1 after the compression",
        Duration::from_secs(60),
        || async {
            let row = stack.cli.json(&["catalog", "show", &d1_id]).ok()?;
            let now = row["stored_bytes"].as_u64()?;
            (now < stored1 * 3 / 4 && now > logical1 / 20).then_some(())
        },
    )
    .await;
    // Its log line follows the switch by a moment.
    let log_path = stack.worker.process.log_path();
    wait::until(
        "the worker's line about the compression",
        Duration::from_secs(30),
        || async {
            let log = std::fs::read_to_string(log_path).ok()?;
            log.lines()
                .any(|l| {
                    l.contains("compressed the chunks dumps stored uncompressed")
                        && l.contains("packs_left=0")
                })
                .then_some(())
        },
    )
    .await;
    let stored2 = stored_once_compressed(&stack, &d2, logical2 / 50).await;
    assert!(
        stored2 < logical2 / 50,
        "an unchanged database stored {stored2} of {logical2} bytes again"
    );
    // The second dump was stored following the job's first (positional
    // bases, docs/store.md).
    let log = std::fs::read_to_string(stack.worker.process.log_path()).unwrap();
    let (u1, u2) = (
        d1["dump_uuid"].as_str().unwrap(),
        d2["dump_uuid"].as_str().unwrap(),
    );
    assert!(
        log.lines()
            .any(|l| l.contains("storing after the job's previous dump")
                && l.contains(&format!("dump_id={u2}"))
                && l.contains(&format!("previous={u1}"))),
        "the second dump follows the first"
    );

    // New, unique data: the third dump stores it.
    fill_mixed(&stack.source, "shop", "extra", 1, 2_000, 512);
    let d3 = dump_and_show(&stack.cli, job);
    assert!(d3["stored_bytes"].as_u64().unwrap() > 1_000_000, "{d3}");

    // The worker reports its store's figures.
    let total = logical1 + logical2 + d3["dump_bytes"].as_u64().unwrap();
    let stats = wait_store_stats(&stack.cli, "w-store", 3).await;
    assert_eq!(
        stats[0]["logical_bytes"].as_u64().unwrap(),
        total,
        "{stats}"
    );
    assert!(stats[0]["dedup_ratio"].as_f64().unwrap() > 2.0, "{stats}");

    // Deleting the third dump reclaims its unique bytes.
    let d3_id = id_of(&d3).to_string();
    let del = stack
        .cli
        .json(&["catalog", "delete", &d3_id, "--wait"])
        .unwrap();
    assert_eq!(del["state"], "SUCCEEDED", "{del}");
    assert!(
        del["result"]["reclaimed_bytes"].as_u64().unwrap() > 1_000_000,
        "{del}"
    );
    let rows = catalog_of_job(&stack.cli, job);
    assert_eq!(rows.len(), 2, "{rows:?}");
    // The job's newest stored dump is gone: the next dump (of the database
    // as it was for d2, so it stores nearly nothing) is stored without
    // following it, and nothing fails.
    stack.source.query("shop", "DROP TABLE extra0").unwrap();
    let d4 = dump_and_show(&stack.cli, job);
    let stored4 = stored_once_compressed(&stack, &d4, logical2 / 50).await;
    assert!(stored4 < logical2 / 50, "{stored4}: {d4}");
    let log = std::fs::read_to_string(stack.worker.process.log_path()).unwrap();
    let gone3 = d3["dump_uuid"].as_str().unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("the previous dump is not in the store") && l.contains(gone3)),
        "the deleted dump is no hint"
    );
    assert!(stack.cli.json(&["catalog", "show", &d3_id]).is_err());
    let gone = d3["dump_uuid"].as_str().unwrap();
    assert!(
        !stack
            .worker
            .stored_dumps()
            .unwrap()
            .contains(&gone.to_string())
    );

    // Verify: every chunk reads back; both dumps are marked verified.
    let run = stack
        .cli
        .run(&["store", "verify", "--worker", "w-store", "--wait"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    let shown = stack
        .cli
        .json(&["catalog", "show", &id_of(&d1).to_string()])
        .unwrap();
    assert_eq!(shown["verified"], "YES", "{shown}");

    // The remaining dumps restore, with every row.
    assert_eq!(restore_count(&stack, &d1, "shop_r1", "t0"), "8000");
    assert_eq!(restore_count(&stack, &d2, "shop_r2", "t1"), "8000");

    // One flipped byte in a pack: verify fails and names the dumps.
    let mut all = packs(&stack.worker.data_dir, ".pack");
    all.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let biggest = all.last().expect("a pack").clone();
    let mut bytes = std::fs::read(&biggest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&biggest, bytes).unwrap();
    let run = stack
        .cli
        .run(&["store", "verify", "--worker", "w-store", "--wait"])
        .unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    let u1 = d1["dump_uuid"].as_str().unwrap();
    assert!(
        run.stderr.contains(u1),
        "the damaged dump must be named: {run:?}"
    );
    let shown = stack
        .cli
        .json(&["catalog", "show", &id_of(&d1).to_string()])
        .unwrap();
    assert_eq!(shown["verified"], "FAILED", "{shown}");
    let critical = stack
        .cli
        .json(&["messages", "--level", "critical", "--class", "VERIFY"])
        .unwrap();
    assert!(critical.to_string().contains(u1), "{critical}");
    stack.stop_clean(&[]).await;
}

/// Lines of the worker's log about its compression pass (`Runner::compress_later`).
fn pass_lines(stack: &Stack) -> Vec<String> {
    worker_log_lines(stack, "compressed the chunks dumps stored uncompressed")
}

/// A read-only open of the store (what `pgsnapman-worker store extract`
/// does) keeps the packs the compression pass rewrote, so it can still read
/// them; once it is gone, the worker's next try (every 30 s while packs are
/// kept) deletes them (docs/store.md, "Compression after the dump").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_kept_for_a_reader_go_once_it_is_gone() {
    let stack = Stack::start("w-readers").await;
    stack.source.create_database("shop").unwrap();
    fill_mixed(&stack.source, "shop", "t", 2, 8_000, 256);
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-readers", None);
    let job = add_job(&stack.cli, inst, "shop");
    let d1 = dump_and_show(&stack.cli, job);
    wait::until(
        "the pass after the first dump",
        Duration::from_secs(60),
        || async {
            pass_lines(&stack)
                .last()?
                .contains("packs_left=0")
                .then_some(())
        },
    )
    .await;

    // A reader opens the store, then a dump of new data is stored and
    // compressed: the raw packs it replaced stay for the reader.
    let reader = pgsnapman_store::Store::open_read_only(&stack.worker.data_dir).unwrap();
    fill_mixed(&stack.source, "shop", "u", 2, 8_000, 256);
    let _d2 = dump_and_show(&stack.cli, job);
    let kept_at = wait::until(
        "a pass that keeps packs for the reader",
        Duration::from_secs(60),
        || async {
            let lines = pass_lines(&stack);
            let i = lines
                .iter()
                .position(|l| !l.contains("packs_kept_for_readers=0"))?;
            Some(i)
        },
    )
    .await;
    let packs_kept = packs(&stack.worker.data_dir, ".pack");
    // The reader still reads what it saw when it opened: the first dump.
    let u1: uuid::Uuid = d1["dump_uuid"].as_str().unwrap().parse().unwrap();
    let out = stack.scratch.path().join("through-the-reader");
    reader.restore_dir(u1, &out).unwrap();
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "{out:?}");
    // Once the reader is gone, the worker's next try deletes them.
    drop(reader);
    wait::until(
        "a pass after the reader is gone deletes the kept packs",
        Duration::from_secs(90),
        || async {
            let lines = pass_lines(&stack);
            lines[kept_at + 1..]
                .iter()
                .any(|l| l.contains("packs_kept_for_readers=0") && l.contains("packs_left=0"))
                .then_some(())
        },
    )
    .await;
    let packs_after = packs(&stack.worker.data_dir, ".pack");
    assert!(
        packs_after.len() < packs_kept.len(),
        "{packs_kept:?} -> {packs_after:?}"
    );
    let run = stack
        .cli
        .run(&["store", "verify", "--worker", "w-readers", "--wait"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    stack.stop_clean(&[]).await;
}

/// The worker is killed (SIGKILL) while a dump streams into its store, at
/// several points; each time the store verifies, no partial dump exists
/// anywhere, and the restarted worker completes the retried task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_ingest_leaves_no_partial_dump() {
    const ENV: &[(&str, &str)] = &[("PGSNAPMAN_STORE__PACK_TARGET_BYTES", "1048576")];
    let mut stack = Stack::start_with("w-kill9", ENV, None).await;
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-kill9", None);
    let mut jobs = Vec::new();
    for (i, format) in ["custom", "custom", "directory"].iter().enumerate() {
        // Fresh data each round: unchanged data would dedup to nothing.
        let db = format!("big{i}");
        stack.source.create_database(&db).unwrap();
        fill_mixed(&stack.source, &db, "t", 6, 8_000, 512);
        let inst = inst.to_string();
        let mut args = vec![
            "job",
            "add",
            "--instance",
            &inst,
            "--database",
            &db,
            "--cron",
            "0 3 1 1 *",
            "--format",
            format,
        ];
        if *format == "directory" {
            args.extend(["--jobs", "2"]);
        }
        let v = stack.cli.json(&args).unwrap();
        jobs.push(id_of(&v));
    }
    let data_dir = stack.worker.data_dir.clone();
    let mut old_workers = Vec::new();
    for (round, &job) in jobs.iter().enumerate() {
        let sealed_before = packs(&data_dir, ".pack").len();
        let stored_before = stack.worker.stored_dumps().unwrap();
        let task = dump_now(&stack.cli, job);
        // Kill points: the first bytes of an open pack; several packs
        // sealed and indexed; a directory dump with files in the spool.
        let what = [
            "an open pack with data",
            "three new sealed packs",
            "a spool file and a new pack",
        ][round];
        // Each look stops the worker first (SIGSTOP) and lets it go on only
        // if the point is not reached; a look every 10 ms. Killed while
        // stopped, the worker cannot have ended the dump meanwhile, and its
        // manifest is not written when the point is reached (the
        // compression pass after a dump writes packs too). (Looking at a
        // running worker every 100 ms once made this test flaky.)
        let pid = Pid::from_raw(stack.worker.process.pid().expect("worker running") as i32);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            kill(pid, Signal::SIGSTOP).expect("stop the worker");
            let hit = match round {
                0 => !packs(&data_dir, ".pack.open").is_empty(),
                1 => packs(&data_dir, ".pack").len() >= sealed_before + 3,
                _ => {
                    !files_with_suffix(&data_dir.join("spool"), ".dat").is_empty()
                        && packs(&data_dir, ".pack").len() > sealed_before
                }
            };
            // Files, not `store list`: that would wait for the stopped worker.
            let ended = dumps_on_disk(&data_dir).len() != stored_before.len();
            if hit && !ended {
                break;
            }
            kill(pid, Signal::SIGCONT).expect("continue the worker");
            assert!(!ended, "round {round}: the dump ended before {what}");
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no {what} within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stack.worker.process.kill9().await.unwrap();
        let t = stack
            .cli
            .json(&["task", "show", &task.to_string()])
            .unwrap();
        assert_ne!(
            t["state"], "SUCCEEDED",
            "round {round}: killed mid-ingest, yet {t}"
        );

        // Offline: the store verifies and holds no new dump.
        let report = pgsnapman_tests::store_tool(&data_dir, &["verify"])
            .unwrap_or_else(|e| panic!("round {round}: store does not verify: {e:#}"));
        assert!(report.contains("0 problem(s)"), "{report}");
        assert_eq!(
            stack.worker.stored_dumps().unwrap(),
            stored_before,
            "round {round}"
        );
        assert!(
            catalog_of_job(&stack.cli, job).is_empty(),
            "round {round}: a partial dump is in the catalog"
        );

        // Restart: the lease expires, the task runs again and completes.
        let worker = Worker::start(WorkerOptions {
            name: "w-kill9".into(),
            coordinator: stack.coordinator.access(),
            data_dir: Some(data_dir.clone()),
            env: ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .unwrap();
        old_workers.push(std::mem::replace(&mut stack.worker, worker));
        let done = wait_task_done(&stack.cli, task).await;
        assert_eq!(done["state"], "SUCCEEDED", "round {round}: {done}");
        assert_eq!(done["attempts"], 2, "{done}");
        let rows = catalog_of_job(&stack.cli, job);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert!(files_with_suffix(&data_dir.join("spool"), "").is_empty());
    }
    // Everything verifies; the crash leftovers go with the next gc.
    let run = stack
        .cli
        .run(&["store", "verify", "--worker", "w-kill9", "--wait"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    let first = catalog_of_job(&stack.cli, jobs[0]);
    let del = stack
        .cli
        .json(&["catalog", "delete", &id_of(&first[0]).to_string(), "--wait"])
        .unwrap();
    assert!(
        del["result"]["reclaimed_bytes"].as_u64().unwrap() > 0,
        "{del}"
    );
    let last = catalog_of_job(&stack.cli, jobs[2]);
    let archive = stack.extract(&last[0]);
    assert!(archive.join("toc.dat").is_file());
    stack.stop_clean(&[]).await;
    drop(old_workers);
}

/// A new, empty catalog gets every dump back from the worker's manifests,
/// binary ones and a JSON one (format 1, as an older build wrote it) alike,
/// and a second rebuild changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_is_rebuilt_from_the_workers_manifests() {
    let mut stack = Stack::start("w-rebuild").await;
    stack.source.create_database("Re build ü").unwrap();
    fill_mixed(&stack.source, "Re build ü", "t", 1, 1_000, 64);
    stack
        .source
        .script(
            "Re build ü",
            "CREATE ROLE rebuild_owner; ALTER TABLE t0 OWNER TO rebuild_owner;",
        )
        .unwrap();
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-rebuild", None);
    let job = add_job(&stack.cli, inst, "Re build ü");
    dump_and_show(&stack.cli, job);
    dump_and_show(&stack.cli, job);
    let globals = add_globals_job(&stack.cli, inst);
    dump_and_show(&stack.cli, globals);
    let before: Vec<Value> = stack
        .cli
        .json(&["catalog", "list"])
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(before.len(), 3);

    // A brand-new catalog; the worker (same disk) is registered there again.
    let (_catalog2, mut coord2, cli2) = fresh_catalog("w-rebuild").await;
    stack.worker.process.stop_clean().await;
    // A mixed store: one dump's manifest rewritten in format 1 (JSON).
    let manifests = stack.worker.data_dir.join("manifests");
    let old_uuid: uuid::Uuid = before[0]["dump_uuid"].as_str().unwrap().parse().unwrap();
    let binary = pgsnapman_store::manifest::manifest_path(&manifests, old_uuid);
    let mut m = pgsnapman_store::manifest::read_manifest(&binary).unwrap();
    assert_eq!(m.format_version, 2);
    m.format_version = 1;
    pgsnapman_store::manifest::write_manifest(&manifests, &m).unwrap();
    std::fs::remove_file(&binary).unwrap();
    assert_eq!(manifest_files(&manifests).len(), 3);
    // The new catalog never issued the worker's certificate: it enrolls
    // again (docs/security-enroll.md, "a lost catalog"); its store stays.
    std::fs::remove_dir_all(stack.worker.data_dir.join("identity")).unwrap();
    let mut worker2 = Worker::start(WorkerOptions {
        name: "w-rebuild".into(),
        coordinator: coord2.access(),
        data_dir: Some(stack.worker.data_dir.clone()),
        ..Default::default()
    })
    .unwrap();
    coord2.wait_worker_connected("w-rebuild").await;
    assert!(
        cli2.json(&["catalog", "list"])
            .unwrap()
            .as_array()
            .unwrap()
            .is_empty()
    );

    for _ in 0..2 {
        let t = cli2
            .json(&["catalog", "rebuild", "--worker", "w-rebuild", "--wait"])
            .unwrap();
        assert_eq!(t["result"]["dumps_reported"], 3, "{t}");
        let after = wait::until("the rebuilt rows", Duration::from_secs(30), || async {
            let v = cli2.json(&["catalog", "list"]).ok()?;
            (v.as_array()?.len() == 3).then_some(v)
        })
        .await;
        for old in &before {
            let new = after
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["dump_uuid"] == old["dump_uuid"])
                .unwrap_or_else(|| panic!("dump {} not rebuilt", old["dump_uuid"]));
            let suffix = if new["dump_uuid"] == before[0]["dump_uuid"] {
                ".json"
            } else {
                ".manifest"
            };
            assert!(new["location"].as_str().unwrap().ends_with(suffix), "{new}");
            for key in [
                "job_id",
                "instance_id",
                "database",
                "dump_type",
                "format",
                "status",
                "dump_bytes",
                "stored_bytes",
                "server_version",
                "started_at",
                "database_bytes",
            ] {
                assert_eq!(new[key], old[key], "{key} of {}", old["dump_uuid"]);
            }
            let shown = cli2
                .json(&["catalog", "show", &id_of(new).to_string()])
                .unwrap();
            if old["dump_type"] == "FULL" {
                let roles = shown["restore_metadata"]["roles"].to_string();
                assert!(roles.contains("rebuild_owner"), "{shown}");
            }
        }
    }
    worker2.process.stop_clean().await;
    coord2.process.stop_clean().await;
    stack.coordinator.process.stop_clean().await;
    worker2.process.assert_no_unexpected_errors(&[]);
}

/// The store's disk fills up during a dump: the dump fails with the
/// reason, nothing partial is left, and the next dump (with room) works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_the_dump_clearly_and_loses_nothing() {
    let tmpfs = Tmpfs::mount(16).unwrap();
    let base = pgsnapman_tests::shared_tempdir("pgsnapman-full-");
    let data_dir = base.path().join("worker");
    std::fs::create_dir_all(&data_dir).unwrap();
    // The pack files live on the small file system.
    std::os::unix::fs::symlink(tmpfs.subdir("packs").unwrap(), data_dir.join("packs")).unwrap();
    let stack = Stack::start_with(
        "w-full",
        &[("PGSNAPMAN_STORE__PACK_TARGET_BYTES", "4194304")],
        Some(data_dir.clone()),
    )
    .await;
    stack.source.create_database("huge").unwrap();
    fill_mixed(&stack.source, "huge", "t", 2, 20_000, 1024);
    stack.source.create_database("tiny").unwrap();
    fill_mixed(&stack.source, "tiny", "t", 1, 200, 16);
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-full", None);
    let huge = add_job(&stack.cli, inst, "huge");
    let tiny = add_job(&stack.cli, inst, "tiny");

    let run = stack
        .cli
        .run(&["dump", "now", &huge.to_string(), "--wait"])
        .unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("No space left on device"),
        "the reason must be shown: {run:?}"
    );
    assert!(
        !run.stderr.contains("Broken pipe"),
        "the storing error comes first: {run:?}"
    );
    let rows = catalog_of_job(&stack.cli, huge);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "FAILED");
    assert!(stack.worker.stored_dumps().unwrap().is_empty());
    assert!(
        packs(&data_dir, ".open").is_empty(),
        "a half-written pack was left"
    );
    let report = stack.worker.store_tool(&["verify"]).unwrap();
    assert!(report.contains("0 problem(s)"), "{report}");

    // Room again (the failed ingest's open pack was removed): the next dump works.
    let d = dump_and_show(&stack.cli, tiny);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    stack.stop_clean(&[]).await;
    drop(tmpfs);
}
