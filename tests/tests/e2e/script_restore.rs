//! Script restores and script versions (issue 14 item 5): a registered
//! script restores a dump (archive on stdin, or an extracted directory) with
//! the target's environment; a failing script, a timeout and a worker without
//! scripts end the run FAILED saying why; the catalog records which script
//! version made a dump and ran a restore. And the race of a restore against
//! retention: a dump being read, or named by a restore still queued, is
//! never removed under it.
use std::time::Duration;

use pgsnapman_tests::{Pgsnap, wait};
use serde_json::Value;

use crate::common::*;
use crate::scripts::{ENABLED, add_script_job, register, scratch_left, wait_process_gone};

/// The newest restore run (JSON) and its log lines' texts.
fn newest_run(cli: &Pgsnap) -> (Value, Vec<String>) {
    let runs = cli.json(&["restore-log", "list", "--limit", "1"]).unwrap();
    let id = runs[0]["id"].as_i64().expect("a restore run");
    let log = cli.json(&["restore-log", "show", &id.to_string()]).unwrap();
    let lines = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap_or_default().to_string())
        .collect();
    (log["run"].clone(), lines)
}

/// Restores stdin (a custom archive) or `$PGSNAPMAN_ARCHIVE_DIR` (a
/// directory dump) into a new database `$PGDATABASE` with pg_restore,
/// checking the environment first.
const RESTORE: &str = r#"#!/bin/sh
set -eu
echo "restoring $PGSNAPMAN_DUMP_UUID ($PGSNAPMAN_DUMP_TYPE $PGSNAPMAN_FORMAT of $PGSNAPMAN_SOURCE_DATABASE) into $PGDATABASE on $PGHOST:$PGPORT, run $PGSNAPMAN_RESTORE_RUN_ID" >&2
[ "$(pwd)" = "$PGSNAPMAN_SCRATCH_DIR" ] || { echo "cwd is not the scratch dir" >&2; exit 9; }
[ -z "${PGPASSWORD:-}" ] || { echo "PGPASSWORD is set" >&2; exit 9; }
[ "$(dirname "$(command -v pg_restore)")" = "$PGSNAPMAN_PG_BINDIR" ] || { echo "pg_restore not from PGSNAPMAN_PG_BINDIR" >&2; exit 9; }
[ "$PGSNAPMAN_DATABASE" = "$PGDATABASE" ] || exit 9
createdb --maintenance-db="$PGSNAPMAN_MAINTENANCE_DB" "$PGDATABASE"
if [ "$PGSNAPMAN_FORMAT" = directory ]; then
  pg_restore --no-owner --exit-on-error -d "$PGDATABASE" "$PGSNAPMAN_ARCHIVE_DIR"
else
  pg_restore --no-owner --exit-on-error -d "$PGDATABASE"
fi
echo "restore script done with arguments: $*" >&2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_script_restores_custom_and_directory_dumps() {
    let stack = Stack::start_with("w-srestore", &[ENABLED], None).await;
    let cli = &stack.cli;
    let db = "shop";
    stack.source.create_database(db).unwrap();
    fill_mixed(&stack.source, db, "t", 2, 5_000, 32);
    let src = add_instance(cli, "src", stack.source.port, "w-srestore", None);
    let dir = stack.scratch.path();
    let added = register(cli, dir, "restore.sh", RESTORE);
    let hash = added["hash"].as_str().unwrap().to_string();

    // A SCRIPT dump records the version of the script that made it.
    register(cli, dir, "dump.sh", "#!/bin/sh\nexec pg_dump -Fc -Z0\n");
    let sjob = add_script_job(cli, src, db, "dump.sh", &[]);
    let sdump = dump_and_show(cli, sjob);
    let listed = cli.json(&["script", "list"]).unwrap();
    let want = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "dump.sh")
        .map(|s| s["hash"].clone())
        .unwrap();
    assert_eq!(sdump["script_hash"], want, "{sdump}");
    let shown = cli
        .run(&["catalog", "show", &id_of(&sdump).to_string()])
        .unwrap();
    assert!(
        shown.stdout.contains(want.as_str().unwrap()),
        "{}",
        shown.stdout
    );

    // Custom format: the archive arrives on the script's stdin; --option
    // values are its arguments.
    let run = restore_now(
        cli,
        id_of(&sdump),
        src,
        "copy one",
        &[
            "--script",
            "restore.sh",
            "--option=--first",
            "--option",
            "two words",
        ],
    );
    assert!(run.success(), "{run:?}");
    for t in ["t0", "t1"] {
        let n = stack
            .source
            .query("copy one", &format!("SELECT count(*) FROM {t}"))
            .unwrap();
        assert_eq!(n, "5000");
    }
    let (r, lines) = newest_run(cli);
    assert_eq!(r["status"], "SUCCEEDED", "{r}");
    assert_eq!(r["script_hash"], hash.as_str(), "{r}");
    assert_eq!(r["target"]["script_name"], "restore.sh", "{r}");
    assert!(
        lines.iter().any(
            |l| l.contains("restoring ") && l.contains("(script custom of shop) into copy one")
        ),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("arguments: --first two words")),
        "{lines:?}"
    );

    // Directory format: extracted, its path in PGSNAPMAN_ARCHIVE_DIR; a
    // restore job names the script, and list/show say so.
    let djob = add_yearly_job(cli, src, &["--database", db, "--format", "directory"]);
    let ddump = dump_and_show(cli, djob);
    let rjob = cli
        .json(&[
            "restore-job",
            "add",
            "--from-dump",
            &id_of(&ddump).to_string(),
            "--to-instance",
            &src.to_string(),
            "--to-database",
            "copy two",
            "--script",
            "restore.sh",
            "--at",
            "2099-01-01T00:00:00Z",
        ])
        .unwrap();
    assert_eq!(rjob["target"]["script_name"], "restore.sh", "{rjob}");
    let table = cli.run(&["restore-job", "list"]).unwrap();
    assert!(
        table.stdout.contains("script restore.sh"),
        "{}",
        table.stdout
    );
    let rid = id_of(&rjob).to_string();
    let ran = cli.run(&["restore", "run", &rid, "--wait"]).unwrap();
    assert!(ran.success(), "{ran:?}");
    let n = stack
        .source
        .query("copy two", "SELECT count(*) FROM t1")
        .unwrap();
    assert_eq!(n, "5000");
    let listed = cli.run(&["restore-log", "list"]).unwrap();
    assert!(listed.stdout.contains("restore.sh"), "{}", listed.stdout);
    let (r, _) = newest_run(cli);
    let shown = cli
        .run(&["restore-log", "show", &r["id"].to_string()])
        .unwrap();
    assert!(
        shown.stdout.contains("restore.sh") && shown.stdout.contains(&hash),
        "{}",
        shown.stdout
    );

    // The coordinator refuses an unknown script and pg_restore-only options;
    // a script a restore job names is not removed.
    let bad = restore_now(cli, id_of(&ddump), src, "x", &["--script", "nosuch"]);
    assert!(!bad.success());
    assert!(
        bad.stderr.contains("script \"nosuch\" is not registered"),
        "{bad:?}"
    );
    let bad = restore_now(
        cli,
        id_of(&ddump),
        src,
        "x",
        &["--script", "restore.sh", "--jobs", "2"],
    );
    assert!(bad.stderr.contains("takes no --jobs"), "{bad:?}");
    let rm = cli.run(&["script", "remove", "restore.sh"]).unwrap();
    assert!(
        rm.stderr
            .contains("\"restore.sh\" is used by restore job(s)")
            && rm.stderr.contains(&rid),
        "{rm:?}"
    );
    let left = scratch_left(&stack);
    assert!(left.is_empty(), "scratch left: {left:?}");
    stack.stop_clean(&[]).await;
}

/// A stack whose source has database `d` with table `t` of `rows` rows,
/// added as instance `src` (its id returned).
async fn with_table(worker: &str, env: &[(&str, &str)], rows: u32) -> (Stack, i64) {
    let stack = Stack::start_with(worker, env, None).await;
    stack.source.create_database("d").unwrap();
    stack
        .source
        .query(
            "d",
            &format!("CREATE TABLE t AS SELECT g FROM generate_series(1, {rows}) g"),
        )
        .unwrap();
    let src = add_instance(&stack.cli, "src", stack.source.port, worker, None);
    (stack, src)
}

/// A failing restore script, a timeout that kills its whole process group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_and_hanging_restore_scripts_fail_the_run() {
    let (stack, src) = with_table(
        "w-srestore-fail",
        &[ENABLED, ("PGSNAPMAN_SCRIPTS__TIMEOUT", "4s")],
        10,
    )
    .await;
    let cli = &stack.cli;
    let dump = id_of(&dump_and_show(cli, add_job(cli, src, "d")));
    let dir = stack.scratch.path();

    register(
        cli,
        dir,
        "fail.sh",
        "#!/bin/sh\necho 'first complaint' >&2\necho 'pg_restore: error: made up' >&2\nexit 3\n",
    );
    let run = restore_now(cli, dump, src, "r1", &["--script", "fail.sh"]);
    assert!(!run.success(), "{run:?}");
    let (r, lines) = newest_run(cli);
    assert_eq!(r["status"], "FAILED", "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("script fail.sh failed (exit status: 3)") && error.contains("made up"),
        "{r}"
    );
    assert!(
        lines.iter().any(|l| l == "script fail.sh: first complaint"),
        "{lines:?}"
    );

    let pid_file = dir.join("child.pid");
    register(
        cli,
        dir,
        "hang.sh",
        "#!/bin/sh\nsleep 3600 &\necho $! > \"$1\"\nsleep 3600\n",
    );
    let arg = format!("--option={}", pid_file.display());
    let run = restore_now(cli, dump, src, "r2", &["--script", "hang.sh", &arg]);
    assert!(!run.success(), "{run:?}");
    let (r, _) = newest_run(cli);
    assert_eq!(r["status"], "FAILED", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ran longer than scripts.timeout = 4s and was killed"),
        "{r}"
    );
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(!pid.is_empty());
    wait_process_gone(&pid, "the script's child to be gone").await;
    stack
        .stop_clean(&["failed", "scripts.timeout", "made up"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_scripts_refuses_a_script_restore() {
    let stack = Stack::start("w-srestore-off").await;
    let cli = &stack.cli;
    stack.source.create_database("d").unwrap();
    let src = add_instance(cli, "src", stack.source.port, "w-srestore-off", None);
    let dump = id_of(&dump_and_show(cli, add_job(cli, src, "d")));
    let marker = stack.scratch.path().join("ran");
    register(
        cli,
        stack.scratch.path(),
        "touch.sh",
        &format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    );
    let run = restore_now(cli, dump, src, "r", &["--script", "touch.sh"]);
    assert!(!run.success(), "{run:?}");
    let (r, _) = newest_run(cli);
    assert_eq!(r["status"], "FAILED", "{r}");
    assert!(
        r["error"].as_str().unwrap_or_default().contains(
            "scripts are disabled on worker w-srestore-off: set scripts.enabled = true in its config"
        ),
        "{r}"
    );
    assert!(!marker.exists(), "the script ran");
    stack.stop_clean(&["scripts are disabled"]).await;
}

/// A job keeping nothing but its newest dump (its cron never fires).
fn keep_nothing_job(cli: &Pgsnap, src: i64) -> i64 {
    let keep = ["--keep-daily", "0", "--keep-weekly", "0"];
    let keep_more = ["--keep-monthly", "0", "--keep-yearly", "0"];
    let src = src.to_string();
    let mut args = vec!["job", "add", "--instance", &src, "--database", "d"];
    args.extend(["--cron", "0 3 1 1 *"]);
    args.extend(keep);
    args.extend(keep_more);
    id_of(&cli.json(&args).unwrap())
}

/// A job keeping nothing with two dumps, the older (returned) pinned.
async fn old_pinned_and_newer(cli: &Pgsnap, worker: &str, src: i64) -> (i64, Value) {
    let job = keep_nothing_job(cli, src);
    let old = dump_and_show(cli, job);
    cli.json(&["catalog", "pin", &id_of(&old).to_string()])
        .unwrap();
    wait_schedule_confirmed(cli, worker).await;
    dump_and_show(cli, job);
    (job, old)
}

/// `pgsnap restore now` of `dump` into `database` on `src`; its task id.
fn queue_restore(cli: &Pgsnap, dump: i64, src: i64, database: &str, extra: &[&str]) -> i64 {
    let (dump, src) = (dump.to_string(), src.to_string());
    let mut args = vec!["restore", "now", "--dump", &dump, "--to-instance", &src];
    args.extend(["--to-database", database]);
    args.extend(extra);
    id_of(&cli.json(&args).unwrap())
}

/// The retention passes the worker logged so far.
fn retention_passes(stack: &Stack) -> usize {
    let log = stack.worker.process.log_path();
    pgsnapman_tests::logs::strip_ansi(&std::fs::read_to_string(log).unwrap_or_default())
        .lines()
        .filter(|l| l.contains("retention applied"))
        .count()
}

/// Unpins `dump`, waits until its worker has the schedule without the pin
/// and has run two retention passes with it, and checks the dump is still
/// in the store (`why`: what should have kept it).
async fn unpin_and_see_it_kept(stack: &Stack, worker: &str, dump: &Value, why: &str) {
    stack
        .cli
        .json(&["catalog", "unpin", &id_of(dump).to_string()])
        .unwrap();
    wait_schedule_confirmed(&stack.cli, worker).await;
    two_more_passes(stack, retention_passes(stack)).await;
    let uuid = dump["dump_uuid"].as_str().unwrap();
    assert!(
        dumps_on_disk(&stack.worker.data_dir).contains(uuid),
        "retention removed a dump {why}"
    );
}

/// Waits for two more retention passes than `before`.
async fn two_more_passes(stack: &Stack, before: usize) {
    wait::until("two more retention passes", Duration::from_secs(60), || {
        let n = retention_passes(stack);
        async move { (n >= before + 2).then_some(()) }
    })
    .await;
}

/// Waits until `uuid` is gone from the worker's store and the job's catalog.
async fn wait_removed(stack: &Stack, job: i64, uuid: &str) {
    wait::until(
        "the next pass to remove the dump",
        Duration::from_secs(60),
        || {
            let on_disk = dumps_on_disk(&stack.worker.data_dir).contains(uuid);
            let listed = catalog_of_job(&stack.cli, job)
                .iter()
                .any(|d| d["dump_uuid"] == uuid);
            async move { (!on_disk && !listed).then_some(()) }
        },
    )
    .await;
}

/// Retention never removes a dump a restore is reading: the older of two
/// dumps is pinned, a restore of it starts (its script blocks on a file the
/// test controls), the pin goes; retention passes keep the dump while the
/// restore runs (its RUNNING run protects it, and the worker holds it), the
/// restore succeeds, and the next pass removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_waits_for_a_restore_reading_the_dump() {
    let name = "w-srace";
    let (stack, src) = with_table(
        name,
        &[
            ENABLED,
            ("PGSNAPMAN_RETENTION__ENABLED", "true"),
            ("PGSNAPMAN_RETENTION__INTERVAL", "1s"),
        ],
        1000,
    )
    .await;
    let cli = &stack.cli;
    let (job, old) = old_pinned_and_newer(cli, name, src).await;
    let old_uuid = old["dump_uuid"].as_str().unwrap().to_string();

    let dir = stack.scratch.path();
    let (started, gate) = (dir.join("started"), dir.join("gate"));
    register(
        cli,
        dir,
        "gated.sh",
        &format!(
            "#!/bin/sh\nset -eu\ntouch '{}'\nwhile [ ! -e '{}' ]; do sleep 0.1; done\n\
             createdb \"$PGDATABASE\"\npg_restore --no-owner --exit-on-error -d \"$PGDATABASE\"\n",
            started.display(),
            gate.display()
        ),
    );
    let task = queue_restore(cli, id_of(&old), src, "raced", &["--script", "gated.sh"]);
    wait::until(
        "the restore script to start",
        Duration::from_secs(60),
        || {
            let s = started.exists();
            async move { s.then_some(()) }
        },
    )
    .await;

    // Unpinned: retention would remove it now, but the restore reads it.
    unpin_and_see_it_kept(&stack, name, &old, "a restore was reading").await;

    std::fs::write(&gate, b"").unwrap();
    let done = wait_task_done(cli, task).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let n = stack
        .source
        .query("raced", "SELECT count(*) FROM t")
        .unwrap();
    assert_eq!(n, "1000");
    wait_removed(&stack, job, &old_uuid).await;
    stack.stop_clean(&[]).await;
}

/// A restore still QUEUED protects its dump (issue 14 item 1): the dump
/// worker's restores go to a restore worker that is not running, so the run
/// of the older dump waits in the queue; retention on the dump worker keeps
/// the dump (the coordinator's protected list names it from the moment the
/// run is queued); the restore worker starts, the restore succeeds, and the
/// next pass removes the dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_dump_of_a_queued_restore() {
    let name = "w-squeue";
    let reader = "w-squeue-reader";
    let (stack, src) = with_table(
        name,
        &[
            ("PGSNAPMAN_RETENTION__ENABLED", "true"),
            ("PGSNAPMAN_RETENTION__INTERVAL", "1s"),
        ],
        500,
    )
    .await;
    let cli = &stack.cli;
    let (job, old) = old_pinned_and_newer(cli, name, src).await;
    let old_uuid = old["dump_uuid"].as_str().unwrap().to_string();

    register_worker(cli, reader);
    cli.json(&["worker", "set-restore-worker", name, reader])
        .unwrap();
    let task = queue_restore(cli, id_of(&old), src, "late", &[]);

    // Unpinned: only the queued run protects it now.
    unpin_and_see_it_kept(&stack, name, &old, "a restore was queued").await;
    let (run, _) = newest_run(cli);
    assert_eq!(run["status"], "QUEUED", "{run}");

    // The restore worker (it reads the dump worker's store) comes up.
    let cfg_dir = pgsnapman_tests::shared_tempdir("pgsnapman-sq-");
    let cfg = cfg_dir.path().join("reader.toml");
    std::fs::write(
        &cfg,
        format!(
            "[restore.shared_stores]\n{name:?} = {:?}\n",
            stack.worker.data_dir.to_string_lossy()
        ),
    )
    .unwrap();
    let mut worker = pgsnapman_tests::Worker::start(pgsnapman_tests::WorkerOptions {
        name: reader.into(),
        coordinator: stack.coordinator.access(),
        env: vec![(
            "PGSNAPMAN_CONFIG".to_string(),
            cfg.to_string_lossy().into_owned(),
        )],
        ..Default::default()
    })
    .unwrap();
    let done = wait_task_done(cli, task).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(
        stack
            .source
            .query("late", "SELECT count(*) FROM t")
            .unwrap(),
        "500"
    );
    wait_removed(&stack, job, &old_uuid).await;
    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    stack.stop_clean(&[]).await;
}
