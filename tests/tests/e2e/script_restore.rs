//! Script restores and script versions (issue 14 item 5): a registered
//! script restores a dump (archive on stdin, or an extracted directory) with
//! the target's environment; a failing script, a timeout and a worker without
//! scripts end the run FAILED saying why; the catalog records which script
//! version made a dump and ran a restore. And the race of a restore against
//! retention: a dump being read is never removed under it.
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
    let djob = id_of(
        &cli.json(&[
            "job",
            "add",
            "--instance",
            &src.to_string(),
            "--cron",
            "0 3 1 1 *",
            "--database",
            db,
            "--format",
            "directory",
        ])
        .unwrap(),
    );
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

/// Retention never removes a dump a restore is reading: the older of two
/// dumps is pinned, a restore of it starts (its script blocks on a file the
/// test controls), the pin goes; retention passes skip the dump while the
/// restore runs, the restore succeeds, and the next pass removes it.
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
    let job = id_of(
        &cli.json(&[
            "job",
            "add",
            "--instance",
            &src.to_string(),
            "--database",
            "d",
            "--cron",
            "0 3 1 1 *",
            "--keep-daily",
            "0",
            "--keep-weekly",
            "0",
            "--keep-monthly",
            "0",
            "--keep-yearly",
            "0",
        ])
        .unwrap(),
    );
    let old = dump_and_show(cli, job);
    let old_uuid = old["dump_uuid"].as_str().unwrap().to_string();
    cli.json(&["catalog", "pin", &id_of(&old).to_string()])
        .unwrap();
    wait_schedule_confirmed(cli, name).await;
    dump_and_show(cli, job);

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
    let restore = cli
        .json(&[
            "restore",
            "now",
            "--dump",
            &id_of(&old).to_string(),
            "--to-instance",
            &src.to_string(),
            "--to-database",
            "raced",
            "--script",
            "gated.sh",
        ])
        .unwrap();
    let task = id_of(&restore);
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
    cli.json(&["catalog", "unpin", &id_of(&old).to_string()])
        .unwrap();
    wait_schedule_confirmed(cli, name).await;
    let log = stack.worker.process.log_path().to_path_buf();
    let skipped = || {
        let text =
            pgsnapman_tests::logs::strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
        text.lines()
            .filter(|l| l.contains("retention applied") && l.contains("skipped_in_use=1"))
            .count()
    };
    wait::until(
        "two retention passes to skip the dump",
        Duration::from_secs(60),
        || {
            let n = skipped();
            async move { (n >= 2).then_some(()) }
        },
    )
    .await;
    assert!(
        dumps_on_disk(&stack.worker.data_dir).contains(&old_uuid),
        "retention removed a dump a restore was reading"
    );

    std::fs::write(&gate, b"").unwrap();
    let done = wait_task_done(cli, task).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let n = stack
        .source
        .query("raced", "SELECT count(*) FROM t")
        .unwrap();
    assert_eq!(n, "1000");
    wait::until(
        "the next pass to remove the dump",
        Duration::from_secs(60),
        || {
            let on_disk = dumps_on_disk(&stack.worker.data_dir).contains(&old_uuid);
            let listed = catalog_of_job(cli, job)
                .iter()
                .any(|d| d["dump_uuid"] == old_uuid.as_str());
            async move { (!on_disk && !listed).then_some(()) }
        },
    )
    .await;
    stack.stop_clean(&[]).await;
}
