//! Standby sources (issue 6, item 6): a dump from a server in recovery, with
//! WAL replay paused for its duration (the pause confirmed first) and resumed
//! afterwards — also when the dump fails.
use crate::common::*;

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
    let add = |db: &str| {
        id_of(
            &stack
                .cli
                .json(&[
                    "job",
                    "add",
                    "--instance",
                    &inst,
                    "--database",
                    db,
                    "--cron",
                    "0 3 1 1 *",
                    "--pause-replay",
                ])
                .unwrap(),
        )
    };
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
