//! `pgsnap task cancel`: a running dump is stopped on its worker (its
//! pg_dump killed, nothing stored), a queued restore ends ABORTED and stops
//! protecting its dump, an ended task or an unknown id is a clear error.
use std::time::Duration;

use pgsnapman_tests::wait;
use sqlx::Connection;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_dump_stops_its_pg_dump_and_stores_nothing() {
    let stack = Stack::start("w-cancel").await;
    stack.source.create_database("shop").unwrap();
    stack
        .source
        .script(
            "shop",
            "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note \
             FROM generate_series(1, 5000) g;",
        )
        .unwrap();
    let instance = add_instance(&stack.cli, "src", stack.source.port, "w-cancel", None);
    let job = add_job(&stack.cli, instance, "shop");

    // pg_dump waits for its ACCESS SHARE lock as long as this is held.
    let mut holder = sqlx::PgConnection::connect(&stack.source.url("shop"))
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();

    let task = dump_now(&stack.cli, job);
    wait::until(
        "pg_dump to wait for the lock",
        Duration::from_secs(60),
        || async { (pg_dumps_waiting(&stack, task) > 0).then_some(()) },
    )
    .await;
    let shown = stack
        .cli
        .json(&["task", "show", &task.to_string()])
        .unwrap();
    assert_eq!(shown["state"], "LEASED", "{shown}");

    let cancelled = stack
        .cli
        .json(&["task", "cancel", &task.to_string()])
        .unwrap();
    assert_eq!(cancelled["state"], "CANCELLED", "{cancelled}");
    let error = cancelled["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("cancelled by "), "{cancelled}");

    // The worker was told and killed its pg_dump, with the lock still held.
    wait::until(
        "the worker to stop its pg_dump",
        Duration::from_secs(60),
        || async { (pg_dumps_waiting(&stack, task) == 0).then_some(()) },
    )
    .await;
    wait::until(
        "the worker to log the cancellation",
        Duration::from_secs(30),
        || async {
            let log = std::fs::read_to_string(stack.worker.process.log_path()).ok()?;
            log.contains("coordinator cancelled the task").then_some(())
        },
    )
    .await;
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    drop(holder);

    // Nothing was stored or recorded, and the task stays cancelled.
    assert!(dumps_on_disk(&stack.worker.data_dir).is_empty());
    assert!(catalog_of_job(&stack.cli, job).is_empty());
    let after = stack
        .cli
        .json(&["task", "show", &task.to_string()])
        .unwrap();
    assert_eq!(after["state"], "CANCELLED", "{after}");

    // The next dump of the job runs as usual.
    let row = dump_and_show(&stack.cli, job);
    assert_eq!(row["status"], "SUCCEEDED", "{row}");

    // Ended and unknown tasks are refused, each with one clear line.
    let again = stack
        .cli
        .run(&["task", "cancel", &task.to_string()])
        .unwrap();
    assert!(!again.success());
    assert!(
        again
            .stderr
            .contains(&format!("task {task} has already ended (CANCELLED)")),
        "{again:?}"
    );
    assert_eq!(again.stderr.trim().lines().count(), 1, "{again:?}");
    let unknown = stack.cli.run(&["task", "cancel", "987654"]).unwrap();
    assert!(!unknown.success());
    assert!(
        unknown.stderr.contains("task 987654 not found"),
        "{unknown:?}"
    );

    stack.stop_clean(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_queued_restore_aborts_its_run() {
    let stack = Stack::start("w-cancel-r").await;
    stack.source.create_database("shop").unwrap();
    stack
        .source
        .script("shop", "CREATE TABLE t AS SELECT 1 AS id;")
        .unwrap();
    let instance = add_instance(&stack.cli, "src", stack.source.port, "w-cancel-r", None);
    let job = add_job(&stack.cli, instance, "shop");
    let dump = id_of(&dump_and_show(&stack.cli, job));

    // Restores of w-cancel-r's dumps run on a worker that is not running:
    // the restore stays queued.
    register_worker(&stack.cli, "w-absent");
    stack
        .cli
        .json(&["worker", "set-restore-worker", "w-cancel-r", "w-absent"])
        .expect("set restore worker");
    let t = stack
        .cli
        .json(&[
            "restore",
            "now",
            "--dump",
            &dump.to_string(),
            "--to-instance",
            &instance.to_string(),
            "--to-database",
            "shop_copy",
        ])
        .expect("restore now");
    let task = id_of(&t);
    assert_eq!(t["state"], "QUEUED", "{t}");
    let run_status = || {
        stack
            ._catalog
            .query(
                "postgres",
                &format!("SELECT status FROM restore_runs WHERE task_id = {task}"),
            )
            .unwrap()
    };
    assert_eq!(run_status(), "QUEUED");

    let cancelled = stack
        .cli
        .json(&["task", "cancel", &task.to_string()])
        .unwrap();
    assert_eq!(cancelled["state"], "CANCELLED", "{cancelled}");
    assert_eq!(run_status(), "ABORTED");
    // The cancellation is in the audit log under the test's admin token.
    let audit = stack.cli.json(&["audit", "list"]).unwrap();
    assert!(
        audit
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["method"] == "CancelTask")),
        "{audit}"
    );

    stack.stop_clean(&[]).await;
}

/// Backends of the source cluster run by the pg_dump of `task` (the
/// worker names them) and waiting for a lock.
fn pg_dumps_waiting(stack: &Stack, task: i64) -> usize {
    stack
        .source
        .query(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'pgsnapman-dump-{task}' AND wait_event_type = 'Lock'"
            ),
        )
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
