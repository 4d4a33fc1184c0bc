//! SIGTERM during a running dump: the worker exits 0, no pg_dump is left
//! behind, and nothing is recorded as a success.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_dump_leaves_no_process_and_no_success() {
    let mut stack = Stack::start("w-term").await;
    let db = "blocked_by_lock";
    stack.source.create_database(db).unwrap();
    stack
        .source
        .script(
            db,
            "CREATE TABLE held AS SELECT g AS id FROM generate_series(1, 100) g;",
        )
        .unwrap();
    // pg_dump waits inside its run for as long as the lock is held.
    let lock = TableLock::hold(&stack.source, db, "held").await;

    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-term", None);
    let job = add_job(&stack.cli, inst, db);
    let task = dump_now(&stack.cli, job);
    // pg_dump is running and waiting for the lock.
    TableLock::wait_dump_blocked(&stack.source).await;
    let dumps_before: Vec<u32> = process_command_lines()
        .into_iter()
        .filter(|(_, c)| c.contains("pg_dump") && c.contains(db))
        .map(|(p, _)| p)
        .collect();
    assert!(!dumps_before.is_empty(), "pg_dump should be running");

    stack.worker.process.stop_clean().await;

    let left: Vec<(u32, String)> = process_command_lines()
        .into_iter()
        .filter(|(_, c)| c.contains("pg_dump") && c.contains(db))
        .collect();
    assert!(
        left.is_empty(),
        "orphan pg_dump after worker shutdown: {left:?}"
    );
    let t = stack
        .cli
        .json(&["task", "show", &task.to_string()])
        .unwrap();
    assert_ne!(t["state"], "SUCCEEDED", "{t}");
    let rows = catalog_of_job(&stack.cli, job);
    assert!(
        rows.iter().all(|r| r["status"] != "SUCCEEDED"),
        "a cancelled dump was recorded as a success: {rows:?}"
    );
    // Nothing stored, nothing half written, nothing left in the spool.
    assert!(stack.worker.stored_dumps().unwrap().is_empty());
    assert!(files_with_suffix(&stack.worker.data_dir, ".open").is_empty());
    assert!(files_with_suffix(&stack.worker.data_dir.join("spool"), "").is_empty());

    drop(lock);
    stack.coordinator.process.stop_clean().await;
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
    stack.worker.process.assert_no_unexpected_errors(&[]);
}
