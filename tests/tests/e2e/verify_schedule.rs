//! Scheduled verification (issue 14 item 4): a job's verification cron
//! fires on the worker from its mirrored schedule, offline too, verifies the
//! job's newest dump with the dump-time counts from the manifest, and the
//! result reaches the catalog exactly once. Failing checks, the role needed
//! to set checks, `verify.timeout`, and the sweep of scratch databases a
//! killed worker left behind.
use std::time::Duration;

use pgsnapman_tests::{PgCluster, Pgsnap, Worker, WorkerOptions, wait};
use serde_json::Value;

use crate::common::*;

/// The scratch databases on `pg`, sorted.
fn scratch_dbs(pg: &PgCluster) -> Vec<String> {
    let out = pg
        .query(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database \
             WHERE datname LIKE 'pgsnapman_verify_%'",
        )
        .unwrap();
    out.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The dump's last verification (`catalog show` JSON), once it has one
/// whose `ok` is `ok`.
async fn wait_verified(cli: &Pgsnap, dump: i64, ok: bool) -> Value {
    wait::until(
        &format!("dump {dump} verified with ok={ok}"),
        Duration::from_secs(120),
        || async move {
            let d = cli.json(&["catalog", "show", &dump.to_string()]).ok()?;
            let v = d["restore_verified"].clone();
            (v["ok"] == ok).then_some(v)
        },
    )
    .await
}

/// Catalog messages of class VERIFY at `level` whose text holds `needle`.
fn messages(cli: &Pgsnap, level: &str, needle: &str) -> Vec<Value> {
    let all = cli
        .json(&["messages", "--class", "VERIFY", "--level", level])
        .unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|m| m["text"].as_str().unwrap_or("").contains(needle))
        .cloned()
        .collect()
}

async fn wait_message(cli: &Pgsnap, level: &str, needle: &str) -> Value {
    wait::until(
        &format!("a {level} VERIFY message holding {needle:?}"),
        Duration::from_secs(120),
        || async move { messages(cli, level, needle).into_iter().next() },
    )
    .await
}

/// Starts worker `name` on `data` with `env`.
fn start_worker(
    name: &str,
    coordinator: pgsnapman_tests::Access,
    data: std::path::PathBuf,
    env: &[(&str, &str)],
) -> Worker {
    Worker::start(WorkerOptions {
        name: name.to_string(),
        coordinator,
        data_dir: Some(data),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
    .unwrap()
}

/// `job add` of a yearly FULL dump of `app` on `inst`, with `extra`.
fn job_add_args(inst: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "job",
        "add",
        "--instance",
        inst,
        "--database",
        "app",
        "--cron",
        "0 3 1 1 *",
    ];
    args.extend_from_slice(extra);
    args.iter().map(|s| s.to_string()).collect()
}

/// How often the worker's log says its outbox backlog was acknowledged.
fn acknowledged(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("outbox backlog acknowledged")
        .count()
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn refused(run: pgsnapman_tests::pgsnap::Run, why: &str) {
    assert!(!run.success(), "{run:?}");
    assert!(run.stderr.contains(why), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_roles_timeout_and_leftover_scratch_databases() {
    let name = "w-vsched";
    let dir = pgsnapman_tests::shared_tempdir("pgsnapman-vsched-");
    let data = dir.path().join("worker");
    // 30×: "*/10 * * * *" fires every 20 s.
    let fast = [("PGSNAPMAN_SCHEDULER__CLOCK_SPEED", "30")];
    let mut stack = Stack::start_with(name, &fast, Some(data.clone())).await;
    stack.source.create_database("app").unwrap();
    stack
        .source
        .script(
            "app",
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 300) g;",
        )
        .unwrap();
    let inst = add_instance(&stack.cli, "src", stack.source.port, name, None).to_string();
    let add = |extra: &[&str]| job_add_args(&inst, extra);
    let created = stack
        .cli
        .json(&["token", "create", "ops", "--role", "operator"])
        .unwrap();
    let ops = Pgsnap::new(
        stack
            .coordinator
            .access()
            .with_token(Some(created["secret"].as_str().unwrap().to_string())),
    );

    // Clear errors: a bad verify cron; checks with read; checks by an operator.
    let bad = add(&["--verify-cron", "61 * * * *"]);
    refused(
        stack.cli.run(&argv(&bad)).unwrap(),
        "invalid cron expression \"61 * * * *\"",
    );
    let read_check = add(&[
        "--verify-cron",
        "0 4 * * *",
        "--verify-check",
        "SELECT true",
    ]);
    refused(
        stack.cli.run(&argv(&read_check)).unwrap(),
        "--verify-method restore only",
    );
    let with_check = add(&[
        "--verify-cron",
        "*/10 * * * *",
        "--verify-method",
        "restore",
        "--verify-check",
        "SELECT false",
    ]);
    refused(ops.run(&argv(&with_check)).unwrap(), "needs admin");
    refused(
        stack
            .cli
            .run(&argv(&add(&[
                "--verify-cron",
                "0 4 * * *",
                "--verify-instance",
                "nosuch",
            ])))
            .unwrap(),
        "no instance is named \"nosuch\"",
    );

    // An admin sets a failing check: the scheduled verification fails,
    // names the check, and is an ERROR message of the job.
    let job = id_of(&stack.cli.json(&argv(&with_check)).unwrap());
    let shown = stack.cli.run(&["job", "show", &job.to_string()]).unwrap();
    assert!(
        shown.stdout.contains("restore (*/10 * * * *)") && shown.stdout.contains("1 check(s)"),
        "{}",
        shown.stdout
    );
    let dump = id_of(&dump_and_show(&stack.cli, job));
    let v = wait_verified(&stack.cli, dump, false).await;
    assert_eq!(v["method"], "restore", "{v}");
    let m = wait_message(&stack.cli, "ERROR", "check failed: SELECT false").await;
    assert_eq!(m["job_id"], job, "{m}");
    assert!(
        m["text"]
            .as_str()
            .unwrap()
            .contains(&format!("scheduled verification (job {job})")),
        "{m}"
    );
    assert!(scratch_dbs(&stack.source).is_empty());

    // Job edits, checks above all (SQL run as the instance user), are
    // an admin's.
    let j = job.to_string();
    refused(
        ops.run(&["job", "edit", &j, "--verify-check", "SELECT true"])
            .unwrap(),
        "needs admin",
    );

    // A check that sleeps: the worker is killed while it runs, leaving
    // its scratch database behind.
    let slow = "SELECT pg_sleep(150) IS NOT NULL";
    let run = stack
        .cli
        .run(&["job", "edit", &j, "--verify-check", slow])
        .unwrap();
    assert!(run.success(), "{run:?}");
    let left = wait::until(
        "a verification to sleep in its check",
        Duration::from_secs(120),
        || async {
            let busy = stack
                .source
                .query(
                    "postgres",
                    "SELECT datname FROM pg_stat_activity WHERE query LIKE '%pg_sleep(150)%' \
                     AND datname LIKE 'pgsnapman_verify_%'",
                )
                .ok()?;
            let busy = busy.trim().to_string();
            (!busy.is_empty()).then_some(busy)
        },
    )
    .await;
    stack.worker.process.kill9().await.unwrap();
    assert!(scratch_dbs(&stack.source).contains(&left), "{left}");
    // Not this worker's: another tag, the old unsuffixed form, a lookalike.
    let decoys = [
        "pgsnapman_verify_00000000_0badcafe_abc123",
        "pgsnapman_verify_deadbeef",
        "pgsnapman_verify_keep_me",
    ];
    for d in decoys {
        stack.source.create_database(d).unwrap();
    }

    // Restarted with a short verify.timeout: the leftover is dropped, the
    // decoys are not, and the sleeping check now times out.
    let mut env = fast.to_vec();
    env.push(("PGSNAPMAN_VERIFY__TIMEOUT", "5s"));
    stack.worker = start_worker(name, stack.coordinator.access(), data.clone(), &env);
    wait::until(
        "the leftover scratch database to be dropped",
        Duration::from_secs(120),
        || async { (!scratch_dbs(&stack.source).contains(&left)).then_some(()) },
    )
    .await;
    let m = wait_message(&stack.cli, "ERROR", "verify.timeout (5s)").await;
    assert_eq!(m["job_id"], job, "{m}");
    wait::until(
        "the timed-out verification to drop its scratch database",
        Duration::from_secs(60),
        || async {
            let mut want: Vec<String> = decoys.iter().map(|d| d.to_string()).collect();
            want.sort();
            (scratch_dbs(&stack.source) == want).then_some(())
        },
    )
    .await;

    // Without checks the dump verifies OK on the next fire.
    let run = stack
        .cli
        .run(&["job", "edit", &j, "--clear-verify-checks"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    let v = wait_verified(&stack.cli, dump, true).await;
    assert_eq!(v["method"], "restore", "{v}");
    let run = stack.cli.run(&["job", "edit", &j, "--no-verify"]).unwrap();
    assert!(run.success(), "{run:?}");
    let shown = stack.cli.json(&["job", "show", &j]).unwrap();
    assert_eq!(shown["verify_cron"], "", "{shown}");
    assert_eq!(shown["verify_checks"], serde_json::json!([]), "{shown}");
    let mut left_now = scratch_dbs(&stack.source);
    left_now.sort();
    assert_eq!(left_now.len(), decoys.len(), "{left_now:?}");
    stack.stop_clean(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_offline_and_reaches_the_catalog_exactly_once() {
    let name = "w-vsched-off";
    let (mut catalog, coordinator, coordinator_opts) = restartable_coordinator().await;
    let cli = coordinator.cli();
    register_worker(&cli, name);
    let dir = pgsnapman_tests::shared_tempdir("pgsnapman-vsched-off-");
    let source = PgCluster::start(PG_MAJOR).unwrap();
    source.create_database("app").unwrap();
    source
        .script(
            "app",
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 400) g; \
             CREATE TABLE e (x int);",
        )
        .unwrap();
    // 30× from a fixed midnight: the verification due at 01:00 fires
    // about 120 s after the worker started, time enough to dump and stop
    // the coordinator first.
    let mut worker = start_worker(
        name,
        cli.access.clone(),
        dir.path().join("worker"),
        &[
            ("PGSNAPMAN_SCHEDULER__CLOCK_SPEED", "30"),
            ("PGSNAPMAN_SCHEDULER__CLOCK_START", "2026-01-01T00:00:00Z"),
        ],
    );
    coordinator.wait_worker_connected(name).await;
    let inst = add_instance(&cli, "src", source.port, name, None).to_string();
    let args = job_add_args(
        &inst,
        &[
            "--verify-cron",
            "0 1 * * *",
            "--verify-method",
            "restore",
            "--verify-instance",
            "src",
        ],
    );
    let job = id_of(&cli.json(&argv(&args)).unwrap());
    let dump = dump_and_show(&cli, job);
    let dump_id = id_of(&dump);
    let uuid = dump["dump_uuid"].as_str().unwrap().to_string();
    assert!(dump["restore_verified"].is_null(), "{dump}");
    wait_schedule_confirmed(&cli, name).await;

    // Down: the catalog cannot tell the worker anything, nor hear from it.
    let mut c = coordinator;
    c.process.stop_clean().await;
    c.process.assert_no_unexpected_errors(&[]);
    catalog.stop().unwrap();
    let log = worker.process.log_path().to_path_buf();
    wait::until(
        "the worker to verify the dump offline",
        Duration::from_secs(240),
        || async {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .any(|l| l.contains("dump verified") && l.contains(&uuid))
                .then_some(())
        },
    )
    .await;
    assert!(scratch_dbs(&source).is_empty());

    // Back: the result arrives, once.
    let acked_before = acknowledged(&log);
    catalog.start_again().unwrap();
    let coordinator = pgsnapman_tests::Coordinator::start(coordinator_opts)
        .await
        .unwrap();
    let cli = coordinator.cli();
    let v = wait_verified(&cli, dump_id, true).await;
    assert_eq!(v["method"], "restore", "{v}");
    assert_eq!(v["detail"]["tables_checked"], 2, "{v}");
    let needle = format!("scheduled verification (job {job}) of dump {uuid} by restore succeeded");
    wait_message(&cli, "INFO", &needle).await;
    // The worker's backlog (the verification's events) is acknowledged
    // after the reconnect; applied once, whatever was replayed.
    wait::until(
        "the worker's backlog to be acknowledged",
        Duration::from_secs(60),
        || async { (acknowledged(&log) > acked_before).then_some(()) },
    )
    .await;
    assert_eq!(messages(&cli, "INFO", &needle).len(), 1);
    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    let mut coordinator = coordinator;
    coordinator.process.stop_clean().await;
    coordinator.process.assert_no_unexpected_errors(&[]);
}
