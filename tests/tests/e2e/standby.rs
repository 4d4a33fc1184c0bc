//! Standby sources (issue 6, item 6): a dump from a server in recovery, with
//! WAL replay paused for its duration (the pause confirmed first) and resumed
//! afterwards — also when the dump fails, and at the next start of a worker
//! killed during the dump.
use pgsnapman_tests::{Worker, WorkerOptions};

use crate::common::*;

/// A yearly job (so only ad-hoc runs happen) of `db` with `--pause-replay`.
fn add_pause_replay_job(cli: &pgsnapman_tests::Pgsnap, inst: &str, db: &str) -> i64 {
    id_of(
        &cli.json(&[
            "job",
            "add",
            "--instance",
            inst,
            "--database",
            db,
            "--cron",
            "0 3 1 1 *",
            "--pause-replay",
        ])
        .unwrap(),
    )
}

fn replay_state(standby: &pgsnapman_tests::PgCluster) -> String {
    standby
        .query("postgres", "SELECT pg_get_wal_replay_pause_state()")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_dump_pauses_and_always_resumes_replay() {
    let stack = Stack::start("w-standby").await;
    stack.source.create_database("replicated").unwrap();
    stack
        .source
        .script(
            "replicated",
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g;",
        )
        .unwrap();
    // Nothing left for pg_basebackup's spread checkpoint to pace.
    stack.source.query("postgres", "CHECKPOINT").unwrap();
    let standby = stack.source.start_standby().unwrap();
    assert_eq!(
        standby
            .query("postgres", "SELECT pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    pgsnapman_tests::wait::until(
        "the standby to replay the table",
        std::time::Duration::from_secs(60),
        || async {
            (standby.query("replicated", "SELECT count(*) FROM t").ok()? == "1000").then_some(())
        },
    )
    .await;
    let inst = add_instance(&stack.cli, "standby", standby.port, "w-standby", None).to_string();
    let add = |db: &str| add_pause_replay_job(&stack.cli, &inst, db);
    let job = add("replicated");
    let t = wait_task_done(&stack.cli, dump_now(&stack.cli, job)).await;
    assert_eq!(t["state"], "SUCCEEDED", "{t}");
    let dump = stack
        .cli
        .json(&[
            "catalog",
            "show",
            &t["dump_id"].as_i64().unwrap().to_string(),
        ])
        .unwrap();
    assert!(
        dump["message"]
            .as_str()
            .unwrap()
            .contains("WAL replay was paused"),
        "{dump}"
    );
    assert_eq!(replay_state(&standby), "not paused", "replay left paused");
    // The worker really paused it: the standby log records the pause.
    let log = std::fs::read_to_string(standby.log_path()).unwrap_or_default();
    assert!(
        log.contains("recovery has paused"),
        "no pause in the standby log"
    );

    // A failing dump (no such database) still resumes replay.
    let bad = add("missing_db");
    let t = wait_task_done(&stack.cli, dump_now(&stack.cli, bad)).await;
    assert_eq!(t["state"], "FAILED", "{t}");
    assert_eq!(
        replay_state(&standby),
        "not paused",
        "replay left paused after a failure"
    );
    stack.stop_clean(&[]).await;
}

/// A worker killed (SIGKILL) while its dump holds WAL replay paused leaves
/// the standby paused; its next start resumes replay (and says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_left_paused_by_a_killed_worker_is_resumed_at_start() {
    const NAME: &str = "w-standby-kill";
    let mut stack = Stack::start(NAME).await;
    stack.source.create_database("held").unwrap();
    stack
        .source
        .script("held", "CREATE TABLE t AS SELECT 1 AS id;")
        .unwrap();
    // Nothing left for pg_basebackup's spread checkpoint to pace.
    stack.source.query("postgres", "CHECKPOINT").unwrap();
    let standby = stack.source.start_standby().unwrap();
    let on_standby = |db: &'static str, sql: &'static str, want: &'static str| {
        let standby = &standby;
        pgsnapman_tests::wait::until(
            sql,
            std::time::Duration::from_secs(60),
            move || async move { (standby.query(db, sql).ok()? == want).then_some(()) },
        )
    };
    on_standby("held", "SELECT count(*) FROM t", "1").await;
    // A lock on the primary, replayed on the standby, holds the dump there
    // for as long as replay stays paused.
    let lock = TableLock::hold(&stack.source, "held", "t").await;
    stack
        .source
        .query("postgres", "SELECT pg_switch_wal()")
        .unwrap();
    on_standby(
        "held",
        "SELECT count(*) FROM pg_locks WHERE relation = to_regclass('t') AND mode = 'AccessExclusiveLock'",
        "1",
    )
    .await;
    let inst = add_instance(&stack.cli, "standby", standby.port, NAME, None).to_string();
    let job = add_pause_replay_job(&stack.cli, &inst, "held");
    dump_now(&stack.cli, job);
    TableLock::wait_dump_blocked(&standby).await;
    assert_eq!(replay_state(&standby), "paused");

    stack.worker.process.kill9().await.unwrap();
    // The lock goes, but replay (paused) cannot apply that.
    drop(lock);
    assert_eq!(replay_state(&standby), "paused");
    let data_dir = stack.worker.data_dir.clone();
    let worker = Worker::start(WorkerOptions {
        name: NAME.into(),
        coordinator: stack.coordinator.access(),
        data_dir: Some(data_dir),
        env: vec![],
    })
    .unwrap();
    let _killed = std::mem::replace(&mut stack.worker, worker);
    on_standby(
        "postgres",
        "SELECT pg_get_wal_replay_pause_state()",
        "not paused",
    )
    .await;
    let log = std::fs::read_to_string(stack.worker.process.log_path()).unwrap();
    assert!(
        log.contains("resumed WAL replay that this worker left paused"),
        "the restarted worker did not resume replay"
    );
    stack.stop_clean(&[]).await;
}
