//! Bad input and broken servers give clear errors and no success rows:
//! wrong password, unreachable host, invalid cron, unknown ids.
use pgsnapman_tests::{PgCluster, PgOptions};

use crate::common::*;

const SECRET: &str = "s3cr3t-Correct-Horse";
const WRONG: &str = "wr0ng-Battery-Staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unreachable_host_fail_clearly() {
    let stack = Stack::start("w-fail").await;
    let mut opts = PgOptions::new(PG_MAJOR);
    opts.superuser_password = Some(SECRET.to_string());
    let guarded = PgCluster::start_with(opts).unwrap();
    guarded.create_database("guarded").unwrap();

    // Wrong password.
    let inst = add_instance(&stack.cli, "guarded", guarded.port, "w-fail", Some(WRONG));
    let job = add_job(&stack.cli, inst, "guarded");
    let run = stack
        .cli
        .run(&["dump", "now", &job.to_string(), "--wait"])
        .unwrap();
    assert_eq!(run.code, 1, "a failed dump must exit 1: {run:?}");
    assert!(
        run.stderr.contains("password authentication failed"),
        "the reason must be shown: {run:?}"
    );
    let rows = catalog_of_job(&stack.cli, job);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "FAILED");
    let failed = stack
        .cli
        .json(&["catalog", "show", &id_of(&rows[0]).to_string()])
        .unwrap();
    let msg = failed["message"].as_str().unwrap();
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(!msg.contains(WRONG), "the password leaked into the message");

    // The right password, set afterwards, works: the failure was the password.
    let run = stack
        .cli
        .run_with_stdin(
            &["instance", "edit", &inst.to_string(), "--password-stdin"],
            &format!("{SECRET}\n"),
        )
        .unwrap();
    assert!(run.success(), "{run:?}");
    let task = dump_now(&stack.cli, job);
    let t = wait_task_done(&stack.cli, task).await;
    assert_eq!(t["state"], "SUCCEEDED", "{t}");

    // Unreachable host: a port where nothing listens.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let inst2 = add_instance(&stack.cli, "nowhere", closed, "w-fail", None);
    let job2 = add_job(&stack.cli, inst2, "postgres");
    let task2 = dump_now(&stack.cli, job2);
    let t2 = wait_task_done(&stack.cli, task2).await;
    assert_eq!(t2["state"], "FAILED", "{t2}");
    let rows2 = catalog_of_job(&stack.cli, job2);
    assert_eq!(rows2.len(), 1);
    assert_eq!(rows2[0]["status"], "FAILED");
    let failed2 = stack
        .cli
        .json(&["catalog", "show", &id_of(&rows2[0]).to_string()])
        .unwrap();
    assert!(
        failed2["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("connection refused"),
        "{failed2}"
    );
    // No success rows beyond the one real success.
    let all = stack.cli.json(&["catalog", "list"]).unwrap();
    let ok = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "SUCCEEDED")
        .count();
    assert_eq!(ok, 1, "{all}");
    // Failures are also messages an operator can list.
    let msgs = stack.cli.json(&["messages", "--level", "error"]).unwrap();
    assert!(msgs.as_array().unwrap().len() >= 2, "{msgs}");

    // Secrets never reach logs.
    for log in [
        stack.worker.process.log_path(),
        stack.coordinator.process.log_path(),
    ] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            !text.contains(SECRET) && !text.contains(WRONG),
            "password in {}",
            log.display()
        );
    }
    stack.stop_clean(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_and_unknown_ids_are_clear_errors() {
    let stack = Stack::start("w-input").await;
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-input", None);
    let i = inst.to_string();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "job",
                "add",
                "--instance",
                &i,
                "--database",
                "postgres",
                "--cron",
                "61 * * * *",
            ],
            "cron",
        ),
        (
            vec![
                "job",
                "add",
                "--instance",
                &i,
                "--database",
                "postgres",
                "--cron",
                "every day",
            ],
            "cron",
        ),
        (
            vec![
                "job",
                "add",
                "--instance",
                "98765",
                "--database",
                "postgres",
                "--cron",
                "0 1 * * *",
            ],
            "98765",
        ),
        (
            vec![
                "job",
                "add",
                "--instance",
                &i,
                "--database",
                "postgres",
                "--cron",
                "0 1 * * *",
                "--option=-Z9",
            ],
            "-Z9",
        ),
        (vec!["dump", "now", "424242"], "424242"),
        (vec!["job", "show", "424242"], "424242"),
        (vec!["catalog", "show", "424242"], "424242"),
        (vec!["task", "show", "424242"], "424242"),
        (vec!["instance", "show", "424242"], "424242"),
        (vec!["worker", "show", "no-such-worker"], "no-such-worker"),
        (vec!["worker", "halt", "no-such-worker"], "no-such-worker"),
        (vec!["worker", "register", "w-input"], "w-input"),
        (vec!["worker", "register", "bad name"], "bad name"),
    ];
    for (args, needle) in cases {
        let run = stack.cli.run(&args).unwrap();
        assert_eq!(run.code, 1, "{args:?} should fail with exit 1: {run:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line expected: {run:?}");
        assert!(lines[0].starts_with("pgsnap: "), "{args:?}: {run:?}");
        assert!(
            lines[0].contains(needle),
            "{args:?}: reason should name {needle:?}: {run:?}"
        );
    }

    // Halted instance: dump now is refused with a reason.
    let job = add_job(&stack.cli, inst, "postgres");
    assert!(stack.cli.run(&["instance", "halt", &i]).unwrap().success());
    let run = stack.cli.run(&["dump", "now", &job.to_string()]).unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.to_lowercase().contains("halted"), "{run:?}");
    assert!(
        stack
            .cli
            .run(&["instance", "resume", &i])
            .unwrap()
            .success()
    );

    // An instance used by a job cannot be removed.
    let run = stack.cli.run(&["instance", "remove", &i]).unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(&job.to_string()), "{run:?}");

    // Unreachable coordinator.
    let nowhere =
        pgsnapman_tests::Pgsnap::new(pgsnapman_tests::Access::plain("http://127.0.0.1:1"));
    let run = nowhere.run(&["worker", "list"]).unwrap();
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("cannot reach coordinator"), "{run:?}");
    stack.stop_clean(&[]).await;
}
