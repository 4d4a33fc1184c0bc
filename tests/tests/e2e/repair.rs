//! Store repair on real processes (issue 14, item 6): dumps of every
//! archive format, the worker stopped, its index deleted, `store verify`
//! naming the repair, `store rebuild-index` (refused while the worker runs),
//! then verify clean, every dump's reassembled bytes identical to before,
//! and the restarted worker dumping into the rebuilt index.
use std::collections::BTreeMap;
use std::path::Path;

use pgsnapman_tests::service::store_tool;
use pgsnapman_tests::{Worker, WorkerOptions};

use crate::common::*;

const NAME: &str = "w-repair";

/// Every file under `dir` (relative name → bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        out.insert(name, std::fs::read(&p).unwrap());
    }
    out
}

/// The reassembled files of every dump, read with `store extract`.
fn extract_all(
    worker: &Worker,
    uuids: &[String],
    scratch: &Path,
) -> Vec<BTreeMap<String, Vec<u8>>> {
    uuids
        .iter()
        .map(|u| {
            let dir = scratch.join(format!("{u}-{}", uuid::Uuid::now_v7()));
            worker.extract(u, &dir).unwrap();
            files(&dir)
        })
        .collect()
}

/// A yearly FULL job of `db` in `format`.
fn add_format_job(stack: &Stack, inst: &str, db: &str, format: &str) -> i64 {
    let args = [
        "job",
        "add",
        "--cron",
        "0 3 1 1 *",
        "--instance",
        inst,
        "--database",
        db,
        "--format",
        format,
    ];
    id_of(&stack.cli.json(&args).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_index_is_rebuilt_and_every_dump_reads_back_identical() {
    let home = pgsnapman_tests::shared_tempdir("pgsnapman-repair-");
    let data_dir = home.path().join("data");
    let mut stack = Stack::start_with(NAME, &[], Some(data_dir.clone())).await;
    let db = "repair";
    stack.source.create_database(db).unwrap();
    fill_mixed(&stack.source, db, "t", 4, 3000, 1024);
    let inst = add_instance(&stack.cli, "src", stack.source.port, NAME, None).to_string();
    let mut uuids = Vec::new();
    for format in ["custom", "directory", "plain", "custom"] {
        let job = add_format_job(&stack, &inst, db, format);
        let row = dump_and_show(&stack.cli, job);
        uuids.push(row["dump_uuid"].as_str().unwrap().to_string());
    }
    let scratch = stack.scratch.path().to_path_buf();
    let before = extract_all(&stack.worker, &uuids, &scratch);
    assert!(before.iter().all(|f| !f.is_empty()));
    assert!(
        before[1].contains_key("toc.dat"),
        "directory format: {:?}",
        before[1].keys()
    );

    let err = store_tool(&data_dir, &["rebuild-index"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("stop it first"), "{err}");

    stack.worker.process.stop_clean().await;
    std::fs::remove_dir_all(data_dir.join("index")).unwrap();
    let err = store_tool(&data_dir, &["verify"]).unwrap_err().to_string();
    assert!(
        err.contains("run `pgsnapman-worker store rebuild-index`"),
        "{err}"
    );

    let out = store_tool(&data_dir, &["rebuild-index"]).unwrap();
    eprintln!("rebuild-index: {}", out.trim());
    assert!(
        out.contains("index rebuilt in") && out.contains("4 dump(s)"),
        "{out}"
    );
    let verified = store_tool(&data_dir, &["verify"]).unwrap();
    assert!(
        verified.contains("4 dump(s)") && verified.contains(" 0 problem(s)"),
        "{verified}"
    );

    stack.worker = Worker::start(WorkerOptions {
        name: NAME.into(),
        coordinator: stack.coordinator.access(),
        data_dir: Some(data_dir.clone()),
        env: Vec::new(),
    })
    .unwrap();
    stack.coordinator.wait_worker_connected(NAME).await;
    assert_eq!(extract_all(&stack.worker, &uuids, &scratch), before);

    // The worker writes into the rebuilt index: a new dump, then all clean.
    let job = add_format_job(&stack, &inst, db, "custom");
    dump_and_show(&stack.cli, job);
    let verified = store_tool(&data_dir, &["verify"]).unwrap();
    assert!(
        verified.contains("5 dump(s)") && verified.contains(" 0 problem(s)"),
        "{verified}"
    );
    stack.stop_clean(&[]).await;
}
