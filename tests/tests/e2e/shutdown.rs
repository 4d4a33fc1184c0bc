//! SIGTERM during a running dump: the worker exits 0, no pg_dump is left
//! behind, and nothing is recorded as a success.
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use pgsnapman_tests::cluster::conninfo_dbname;
use pgsnapman_tests::wait;

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
    // A session holding an ACCESS EXCLUSIVE lock makes pg_dump wait inside
    // its run for as long as we like.
    let mut locker = Command::new(stack.source.bindir.join("psql"))
        .args(["-X", "-q", "-U", "postgres", "-h"])
        .arg(stack.source.socket_dir())
        .arg("-p")
        .arg(stack.source.port.to_string())
        .arg("-d")
        .arg(conninfo_dbname(db))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = locker.stdin.take().unwrap();
    stdin
        .write_all(b"BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE; SELECT 1;\n")
        .unwrap();
    stdin.flush().unwrap();
    wait::until("the lock to be held", Duration::from_secs(30), || async {
        let n = stack
            .source
            .query(
                "postgres",
                "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation IS NOT NULL AND granted",
            )
            .ok()?;
        (n != "0").then_some(())
    })
    .await;

    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-term", None);
    let job = add_job(&stack.cli, inst, db);
    let task = dump_now(&stack.cli, job);
    // pg_dump is running and waiting for the lock.
    wait::until("pg_dump to wait for the lock", Duration::from_secs(60), || async {
        let n = stack
            .source
            .query(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgsnapman%' AND wait_event_type = 'Lock'",
            )
            .ok()?;
        (n != "0").then_some(())
    })
    .await;
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
    assert!(files_with_suffix(&stack.worker.data_dir, ".dump").is_empty());
    assert!(files_with_suffix(&stack.worker.data_dir, ".partial").is_empty());

    drop(stdin);
    let _ = locker.kill();
    let _ = locker.wait();
    stack.coordinator.process.stop_clean().await;
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
    stack.worker.process.assert_no_unexpected_errors(&[]);
}
