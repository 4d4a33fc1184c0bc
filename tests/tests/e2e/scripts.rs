//! Script jobs (issue 14 item 5): a registered script that pipes pg_dump
//! through a filter is stored, deduplicated, listed and restorable; a
//! failing script leaves a FAILED row with its stderr as messages; a
//! timeout kills the script's whole process group; a worker that did not
//! enable scripts refuses; bad names, sizes and references are refused.
use std::path::Path;
use std::time::Duration;

use pgsnapman_tests::{Pgsnap, wait};
use serde_json::Value;

use crate::common::*;

/// True when process `pid` no longer runs (gone, or a zombie waiting for
/// its reaper).
fn process_gone(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    stat.is_none_or(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// Waits (at most 30 s) until process `pid` is gone.
pub(crate) async fn wait_process_gone(pid: &str, what: &str) {
    wait::until(what, Duration::from_secs(30), || {
        let gone = process_gone(pid);
        async move { gone.then_some(()) }
    })
    .await;
}

/// What is left in the worker's tmp directory (script scratch dirs).
pub(crate) fn scratch_left(stack: &Stack) -> Vec<std::path::PathBuf> {
    let tmp = stack.worker.data_dir.join("tmp");
    std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

pub(crate) const ENABLED: (&str, &str) = ("PGSNAPMAN_SCRIPTS__ENABLED", "true");

/// Writes `body` as a script file in `dir` and registers it as `name`.
pub(crate) fn register(cli: &Pgsnap, dir: &Path, name: &str, body: &str) -> Value {
    let file = dir.join(format!("{name}.src"));
    std::fs::write(&file, body).unwrap();
    cli.json(&["script", "add", name, file.to_str().unwrap()])
        .unwrap()
}

/// `pgsnap job add` of a yearly SCRIPT job running `script` on `db`.
fn script_job_args(instance: i64, db: &str, script: &str, extra: &[&str]) -> Vec<String> {
    let instance = instance.to_string();
    let mut args: Vec<String> = [
        "job",
        "add",
        "--instance",
        &instance,
        "--cron",
        "0 3 1 1 *",
        "--type",
        "script",
        "--script",
        script,
        "--database",
        db,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub(crate) fn add_script_job(
    cli: &Pgsnap,
    instance: i64,
    db: &str,
    script: &str,
    extra: &[&str],
) -> i64 {
    let args = script_job_args(instance, db, script, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    id_of(&cli.json(&args).expect("add script job"))
}

/// Texts of the SCRIPT messages of `job`.
fn script_messages(cli: &Pgsnap, job: i64) -> Vec<String> {
    let v = cli
        .json(&["messages", "--class", "SCRIPT", "--job", &job.to_string()])
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A filter script: checks its environment (libpq variables, a private
/// password file in its scratch directory, no password in the
/// environment, cwd), then pipes pg_dump through `cat`.
const FILTER: &str = r#"#!/bin/sh
set -eu
echo "dumping $PGSNAPMAN_DATABASE of $PGHOST:$PGPORT as $PGUSER, format $PGSNAPMAN_FORMAT" >&2
[ "$(pwd)" = "$PGSNAPMAN_SCRATCH_DIR" ] || { echo "cwd is not the scratch dir" >&2; exit 9; }
case "$PGPASSFILE" in "$PGSNAPMAN_SCRATCH_DIR"/*) ;; *) echo "PGPASSFILE outside scratch" >&2; exit 9;; esac
[ -z "${PGPASSWORD:-}" ] || { echo "PGPASSWORD is set" >&2; exit 9; }
[ -z "${PGSNAPMAN_COORDINATOR__ENROLL_TOKEN:-}" ] || { echo "worker env leaked" >&2; exit 9; }
[ "$(dirname "$(command -v pg_dump)")" = "$PGSNAPMAN_PG_BINDIR" ] || { echo "pg_dump not from PGSNAPMAN_PG_BINDIR" >&2; exit 9; }
pg_dump -Fc -Z0 | cat
echo "filter done for dump $PGSNAPMAN_DUMP_UUID" >&2
"#;

const DIRECTORY: &str = r#"#!/bin/sh
set -eu
pg_dump -Fd -Z0 -f "$PGSNAPMAN_OUTPUT_DIR"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_dump_is_stored_deduplicated_listed_and_restorable() {
    let stack = Stack::start_with("w-script", &[ENABLED], None).await;
    let cli = &stack.cli;
    let db = "scripted";
    stack.source.create_database(db).unwrap();
    fill_mixed(&stack.source, db, "t", 2, 20_000, 64);
    let src = add_instance(cli, "src", stack.source.port, "w-script", None);
    let dir = stack.scratch.path();

    let added = register(cli, dir, "filter.sh", FILTER);
    let hash = added["hash"].as_str().unwrap().to_string();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{added}");
    let listed = cli.json(&["script", "list"]).unwrap();
    assert_eq!(listed[0]["name"], "filter.sh", "{listed}");
    assert_eq!(listed[0]["hash"], hash.as_str());
    let shown = cli.run(&["script", "show", "filter.sh"]).unwrap();
    assert!(shown.success(), "{shown:?}");
    assert!(
        shown.stdout.contains(&hash) && shown.stdout.contains("pg_dump -Fc -Z0 | cat"),
        "{shown:?}"
    );

    let job = add_script_job(cli, src, db, "filter.sh", &[]);
    let j = cli.json(&["job", "show", &job.to_string()]).unwrap();
    assert_eq!(j["script_name"], "filter.sh", "{j}");
    assert_eq!(j["dump_type"], "SCRIPT", "{j}");

    // Twice: both stored; the second adds few new bytes (deduplicated).
    let first = dump_and_show(cli, job);
    let second = dump_and_show(cli, job);
    for d in [&first, &second] {
        assert_eq!(d["status"], "SUCCEEDED", "{d}");
        assert_eq!(d["dump_type"], "SCRIPT", "{d}");
        assert_eq!(d["format"], "CUSTOM", "{d}");
    }
    let size = second["dump_bytes"].as_u64().unwrap();
    let stored = second["stored_bytes"].as_u64().unwrap();
    assert!(size > 1_000_000, "{second}");
    assert!(
        stored * 10 < size,
        "second run stored {stored} of {size} bytes"
    );
    assert_eq!(catalog_of_job(cli, job).len(), 2);
    let msgs = script_messages(cli, job);
    assert!(
        msgs.iter()
            .any(|m| m.contains("dumping scripted of 127.0.0.1") && m.contains("format custom")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.contains("filter done for dump")),
        "{msgs:?}"
    );

    // Restorable with pgsnap restore, like a pg_dump archive.
    let run = restore_now(cli, id_of(&second), src, "scripted copy", &[]);
    assert!(run.success(), "{run:?}");
    for t in ["t0", "t1"] {
        let n = stack
            .source
            .query("scripted copy", &format!("SELECT count(*) FROM {t}"))
            .unwrap();
        assert_eq!(n, "20000");
    }

    // A directory-format script writes into its output directory.
    register(cli, dir, "dir.sh", DIRECTORY);
    let djob = add_script_job(cli, src, db, "dir.sh", &["--format", "directory"]);
    let d = dump_and_show(cli, djob);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    assert_eq!(d["format"], "DIRECTORY", "{d}");
    let extracted = stack.extract(&d);
    assert!(extracted.join("toc.dat").exists());

    // The manifest names the script version; a new version (same name,
    // new content) gets a new hash, and the next dump runs it.
    let manifest = |d: &Value| {
        let uuid = d["dump_uuid"].as_str().unwrap();
        let path = stack
            .worker
            .data_dir
            .join("manifests")
            .join(format!("{uuid}.manifest"));
        pgsnapman_store::manifest::read_manifest(&path)
            .unwrap()
            .meta
            .script_hash
    };
    assert!(manifest(&second).contains(&hash), "{}", manifest(&second));
    let v2 = register(
        cli,
        dir,
        "filter.sh",
        &FILTER.replace("filter done", "filter v2 done"),
    );
    let hash2 = v2["hash"].as_str().unwrap().to_string();
    assert_ne!(hash, hash2);
    let third = dump_and_show(cli, job);
    assert!(manifest(&third).contains(&hash2), "{}", manifest(&third));
    let msgs = script_messages(cli, job);
    assert!(
        msgs.iter().any(|m| m.contains("filter v2 done")),
        "{msgs:?}"
    );

    // job edit --script: only for SCRIPT jobs, only registered scripts.
    let full = add_job(cli, src, db);
    let bad = cli
        .run(&["job", "edit", &full.to_string(), "--script", "dir.sh"])
        .unwrap();
    assert!(
        bad.stderr
            .contains("only a SCRIPT job runs a script, not a FULL job"),
        "{bad:?}"
    );
    let bad = cli
        .run(&["job", "edit", &djob.to_string(), "--script", "nosuch"])
        .unwrap();
    assert!(
        bad.stderr.contains("script \"nosuch\" is not registered"),
        "{bad:?}"
    );
    let edited = cli
        .json(&[
            "job",
            "edit",
            &djob.to_string(),
            "--script",
            "filter.sh",
            "--format",
            "custom",
        ])
        .unwrap();
    assert_eq!(edited["script_name"], "filter.sh", "{edited}");

    // A script in use is not removed; the scratch directories are gone.
    let rm = cli.run(&["script", "remove", "filter.sh"]).unwrap();
    assert!(!rm.success());
    assert!(
        rm.stderr.contains("\"filter.sh\" is used by dump job(s)")
            && rm.stderr.contains(&job.to_string()),
        "{rm:?}"
    );
    let left = scratch_left(&stack);
    assert!(left.is_empty(), "{left:?}");

    stack.stop_clean(&[]).await;
}

/// Bad input: odd names, oversize and interpreter-less scripts, unknown
/// scripts, a script for a non-SCRIPT job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_scripts_timeouts_and_bad_input() {
    let stack = Stack::start_with(
        "w-script-fail",
        &[ENABLED, ("PGSNAPMAN_SCRIPTS__TIMEOUT", "4s")],
        None,
    )
    .await;
    let cli = &stack.cli;
    stack.source.create_database("d").unwrap();
    let src = add_instance(cli, "src", stack.source.port, "w-script-fail", None);
    let dir = stack.scratch.path();

    // A failing script: FAILED row with the stderr tail, lines as messages.
    register(
        cli,
        dir,
        "fail.sh",
        "#!/bin/sh\necho 'first complaint' >&2\necho 'pg_dump: error: made up' >&2\nexit 3\n",
    );
    let job = add_script_job(cli, src, "d", "fail.sh", &[]);
    let task = wait_task_done(cli, dump_now(cli, job)).await;
    assert_eq!(task["state"], "FAILED", "{task}");
    let rows = catalog_of_job(cli, job);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "FAILED");
    let row = cli
        .json(&["catalog", "show", &id_of(&rows[0]).to_string()])
        .unwrap();
    let error = row["message"].as_str().unwrap_or_default();
    assert!(
        error.contains("script fail.sh failed (exit status: 3)") && error.contains("made up"),
        "{row}"
    );
    let msgs = script_messages(cli, job);
    assert!(
        msgs.iter().any(|m| m.contains("first complaint")),
        "{msgs:?}"
    );

    // A timeout kills the whole process group: the forked child goes too.
    let pid_file = dir.join("child.pid");
    register(
        cli,
        dir,
        "hang.sh",
        "#!/bin/sh\nsleep 3600 &\necho $! > \"$1\"\nsleep 3600\n",
    );
    let pid_arg = format!("--option={}", pid_file.display());
    let hang = add_script_job(cli, src, "d", "hang.sh", &[&pid_arg]);
    let task = wait_task_done(cli, dump_now(cli, hang)).await;
    assert_eq!(task["state"], "FAILED", "{task}");
    let rows = catalog_of_job(cli, hang);
    let row = cli
        .json(&["catalog", "show", &id_of(&rows[0]).to_string()])
        .unwrap();
    assert!(
        row["message"]
            .as_str()
            .unwrap_or_default()
            .contains("scripts.timeout = 4s"),
        "{row}"
    );
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(!pid.is_empty());
    wait_process_gone(&pid, "the script's child to be gone").await;

    // A script that exits leaving a background child (holding stdout
    // open): the run ends, the child is killed with the group.
    let bg_pid = dir.join("bg.pid");
    register(
        cli,
        dir,
        "background.sh",
        "#!/bin/sh\nsleep 3600 &\necho $! > \"$1\"\nexec pg_dump -Fc -Z0\n",
    );
    let bg_arg = format!("--option={}", bg_pid.display());
    let bg = add_script_job(cli, src, "d", "background.sh", &[&bg_arg]);
    let task = wait_task_done(cli, dump_now(cli, bg)).await;
    assert_eq!(task["state"], "SUCCEEDED", "{task}");
    let pid = std::fs::read_to_string(&bg_pid).unwrap().trim().to_string();
    wait_process_gone(&pid, "the background child to be gone").await;

    // Input errors, each a one-line reason.
    let bad = cli
        .run(&[
            "script",
            "add",
            "x;rm -rf",
            dir.join("fail.sh.src").to_str().unwrap(),
        ])
        .unwrap();
    assert!(!bad.success());
    assert!(bad.stderr.contains("invalid script name"), "{bad:?}");
    let big = dir.join("big.sh");
    let mut content = b"#!/bin/sh\n".to_vec();
    content.resize(1024 * 1024 + 1, b'#');
    std::fs::write(&big, &content).unwrap();
    let bad = cli
        .run(&["script", "add", "big.sh", big.to_str().unwrap()])
        .unwrap();
    assert!(!bad.success());
    assert!(
        bad.stderr
            .contains("more than the limit of 1048576 bytes (1 MiB)"),
        "{bad:?}"
    );
    // The coordinator enforces the same rules for a client that skips
    // pgsnap's checks.
    let mut admin = stack.coordinator.admin().await.unwrap();
    for (name, content, reason) in [
        ("big.sh", content.clone(), "1 MiB"),
        ("../etc", b"#!/bin/sh\n".to_vec(), "invalid script name"),
        ("noshebang", b"echo\n".to_vec(), "interpreter line"),
    ] {
        let err = admin
            .add_script(pgsnapman_proto::v1::AddScriptRequest {
                name: name.into(),
                content,
                comment: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(reason), "{err:?}");
    }
    let plain = dir.join("plain.txt");
    std::fs::write(&plain, "echo no interpreter\n").unwrap();
    let bad = cli
        .run(&["script", "add", "plain", plain.to_str().unwrap()])
        .unwrap();
    assert!(
        bad.stderr
            .contains("does not start with an interpreter line"),
        "{bad:?}"
    );
    let src_s = src.to_string();
    let base = [
        "job",
        "add",
        "--instance",
        &src_s,
        "--cron",
        "0 3 1 1 *",
        "--database",
        "d",
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        cli.run(&a).unwrap()
    };
    let bad = with(&["--type", "script", "--script", "nosuch"]);
    assert!(
        bad.stderr.contains("script \"nosuch\" is not registered"),
        "{bad:?}"
    );
    let bad = with(&["--type", "script"]);
    assert!(bad.stderr.contains("needs --script NAME"), "{bad:?}");
    let bad = with(&["--script", "fail.sh"]);
    assert!(
        bad.stderr.contains("--script is only for --type script"),
        "{bad:?}"
    );
    let bad = cli.run(&["script", "show", "nosuch"]).unwrap();
    assert!(bad.stderr.contains("not registered"), "{bad:?}");

    // Removable once no job runs it.
    cli.run(&["job", "remove", &job.to_string()]).unwrap();
    let rm = cli.run(&["script", "remove", "fail.sh"]).unwrap();
    assert!(rm.success(), "{rm:?}");

    stack
        .stop_clean(&["failed", "scripts.timeout", "made up"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_scripts_enabled_refuses() {
    let stack = Stack::start("w-noscript").await;
    let cli = &stack.cli;
    stack.source.create_database("d").unwrap();
    let src = add_instance(cli, "src", stack.source.port, "w-noscript", None);
    let marker = stack.scratch.path().join("ran");
    register(
        cli,
        stack.scratch.path(),
        "touch.sh",
        &format!("#!/bin/sh\ntouch '{}'\n", marker.display()),
    );
    let job = add_script_job(cli, src, "d", "touch.sh", &[]);
    let task = wait_task_done(cli, dump_now(cli, job)).await;
    assert_eq!(task["state"], "FAILED", "{task}");
    let error = task["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "scripts are disabled on worker w-noscript: set scripts.enabled = true in its config"
        ),
        "{task}"
    );
    assert!(!marker.exists(), "the script ran");

    // A worker's jobs may use at most 8 MiB of scripts (its schedule
    // carries them): with touch.sh, seven 1 MiB scripts fit, an eighth
    // is refused.
    let mut big = b"#!/bin/sh\n".to_vec();
    big.resize(1024 * 1024, b'#');
    let file = stack.scratch.path().join("big");
    std::fs::write(&file, &big).unwrap();
    for i in 0..8 {
        let name = format!("big{i}.sh");
        cli.json(&["script", "add", &name, file.to_str().unwrap()])
            .unwrap();
        let owned = script_job_args(src, "d", &name, &[]);
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        if i < 7 {
            cli.json(&args).unwrap();
        } else {
            let bad = cli.run(&args).unwrap();
            assert!(
                bad.stderr.contains("the scripts of worker w-noscript's jobs would hold 8388660 bytes, more than the 8388608 bytes (8 MiB)"),
                "{bad:?}"
            );
        }
    }
    stack.stop_clean(&["scripts are disabled"]).await;
}

/// Scheduled SCRIPT runs take their script from the worker's mirrored
/// schedule: they keep running while the coordinator is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_script_dumps_run_with_the_coordinator_down() {
    // The scheduler clock runs 30x fast: "* * * * *" fires every 2 s.
    let mut stack = Stack::start_with(
        "w-script-sched",
        &[ENABLED, ("PGSNAPMAN_SCHEDULER__CLOCK_SPEED", "30")],
        None,
    )
    .await;
    let cli = &stack.cli;
    stack.source.create_database("d").unwrap();
    let src = add_instance(cli, "src", stack.source.port, "w-script-sched", None);
    register(
        cli,
        stack.scratch.path(),
        "sched.sh",
        "#!/bin/sh\necho scheduled >&2\nexec pg_dump -Fc -Z0\n",
    );
    let instance = src.to_string();
    let job = id_of(
        &cli.json(&[
            "job",
            "add",
            "--instance",
            &instance,
            "--cron",
            "* * * * *",
            "--type",
            "script",
            "--script",
            "sched.sh",
            "--database",
            "d",
        ])
        .unwrap(),
    );
    let row = wait::until(
        "a scheduled script dump",
        Duration::from_secs(120),
        || async {
            let rows = catalog_of_job(cli, job);
            rows.into_iter().find(|r| r["status"] == "SUCCEEDED")
        },
    )
    .await;
    assert_eq!(row["dump_type"], "SCRIPT", "{row}");

    // Coordinator down: the worker keeps dumping from its mirror.
    stack.coordinator.process.stop_clean().await;
    let manifests = stack.worker.data_dir.join("manifests");
    let before = manifest_files(&manifests).len();
    wait::until(
        "two more dumps with the coordinator down",
        Duration::from_secs(120),
        || {
            let now = manifest_files(&manifests).len();
            async move { (now >= before + 2).then_some(()) }
        },
    )
    .await;
    stack.worker.process.stop_clean().await;
    stack.worker.process.assert_no_unexpected_errors(&[]);
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
}

/// The instance password reaches the script only through its private
/// PGPASSFILE: not in its environment, not in any argv, not in the catalog
/// or the logs; the scratch directory is private and removed afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_reaches_a_script_only_through_its_password_file() {
    let stack = Stack::start_with("w-script-pw", &[ENABLED], None).await;
    let cli = &stack.cli;
    let secret = format!("S3cr3t-{}", uuid::Uuid::new_v4().simple());
    let mut opts = pgsnapman_tests::PgOptions::new(PG_MAJOR);
    opts.superuser_password = Some(secret.clone());
    let source = pgsnapman_tests::PgCluster::start_with(opts).unwrap();
    source.create_database("app").unwrap();
    let inst = add_instance(cli, "pw", source.port, "w-script-pw", Some(&secret));
    let out = stack.scratch.path().join("seen");
    std::fs::create_dir_all(&out).unwrap();
    register(
        cli,
        stack.scratch.path(),
        "pw.sh",
        "#!/bin/sh\nset -eu\nenv > \"$1/env\"\nstat -c %a \"$PGPASSFILE\" > \"$1/passfile-mode\"\n\
         stat -c %a \"$PGSNAPMAN_SCRATCH_DIR\" > \"$1/scratch-mode\"\n\
         echo \"$PGSNAPMAN_SCRATCH_DIR\" > \"$1/scratch\"\nexec pg_dump -Fc -Z0\n",
    );
    let arg = format!("--option={}", out.display());
    let job = add_script_job(cli, inst, "app", "pw.sh", &[&arg]);
    // Succeeds only if libpq found the password (the server wants one).
    let dump = dump_and_show(cli, job);
    assert_eq!(dump["status"], "SUCCEEDED", "{dump}");

    let env = std::fs::read_to_string(out.join("env")).unwrap();
    assert!(env.contains("PGPASSFILE="), "{env}");
    assert!(
        !env.contains(&secret),
        "the password is in the script's environment"
    );
    assert!(!env.contains("PGPASSWORD"), "{env}");
    assert_eq!(
        std::fs::read_to_string(out.join("passfile-mode"))
            .unwrap()
            .trim(),
        "600"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("scratch-mode"))
            .unwrap()
            .trim(),
        "700"
    );
    let scratch = std::fs::read_to_string(out.join("scratch")).unwrap();
    assert!(
        !Path::new(scratch.trim()).exists(),
        "scratch {scratch} left behind"
    );
    for (pid, line) in process_command_lines() {
        assert!(!line.contains(&secret), "password in argv of {pid}: {line}");
    }
    let msgs = cli.run(&["messages", "--limit", "10000"]).unwrap();
    assert!(!msgs.stdout.contains(&secret));
    let logs = [&stack.worker.data_dir, &stack.coordinator.data_dir];
    for dir in logs {
        for log in files_with_suffix(dir, ".log") {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(!text.contains(&secret), "password in {}", log.display());
        }
    }
    stack.stop_clean(&[]).await;
}

/// Cancellation (here: SIGTERM to the worker) kills the script's whole
/// process group, the child it forked too, and records no success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_script_kills_its_process_group() {
    let mut stack = Stack::start_with("w-script-term", &[ENABLED], None).await;
    let cli = &stack.cli;
    stack.source.create_database("d").unwrap();
    let src = add_instance(cli, "src", stack.source.port, "w-script-term", None);
    let pid_file = stack.scratch.path().join("child.pid");
    register(
        cli,
        stack.scratch.path(),
        "hang.sh",
        "#!/bin/sh\nsleep 3600 &\necho $! > \"$1.tmp\"\nmv \"$1.tmp\" \"$1\"\nsleep 3600\n",
    );
    let arg = format!("--option={}", pid_file.display());
    let job = add_script_job(cli, src, "d", "hang.sh", &[&arg]);
    let task = dump_now(cli, job);
    let pid = wait::until(
        "the script to start its child",
        Duration::from_secs(60),
        || {
            let pid = std::fs::read_to_string(&pid_file).ok();
            async move { pid.map(|p| p.trim().to_string()) }
        },
    )
    .await;
    assert!(!process_gone(&pid), "the child should be running");

    stack.worker.process.stop_clean().await;
    wait_process_gone(&pid, "the script's child to be gone").await;
    let t = cli.json(&["task", "show", &task.to_string()]).unwrap();
    assert_ne!(t["state"], "SUCCEEDED", "{t}");
    assert!(
        catalog_of_job(cli, job)
            .iter()
            .all(|r| r["status"] != "SUCCEEDED")
    );
    let left = scratch_left(&stack);
    assert!(left.is_empty(), "{left:?}");
    stack.worker.process.assert_no_unexpected_errors(&[]);
    stack.coordinator.process.stop_clean().await;
    stack.coordinator.process.assert_no_unexpected_errors(&[]);
}
