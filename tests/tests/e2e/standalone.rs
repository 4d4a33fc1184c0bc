//! Standalone worker (issue 18, part 1): a worker with no coordinator runs
//! the jobs of a local TOML file with the scheduler, store and retention of
//! a managed one; `dump now` (beside the running service too), `restore`
//! and `messages` work locally; a file
//! with a password or a bad cron is refused with file, line and key; then
//! the same data directory joins a coordinator: its history comes into the
//! catalog, its messages arrive once, and `pgsnap job import` twice makes
//! one set of jobs.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pgsnapman_tests::{Access, Worker, WorkerOptions, wait};
use serde_json::Value;

use crate::common::*;

/// One simulated day every 2 s of real time (a daily cron fires every 2 s).
const SPEED: &str = "43200";
const ROWS: u32 = 500;

fn jobs_toml(port: u16, cron: &str, extra_instance_key: &str) -> String {
    format!(
        "# standalone jobs (test)\n\
         [instances.src]\n\
         host = \"127.0.0.1\"\n\
         port = {port}\n\
         user = \"postgres\"\n\
         {extra_instance_key}\n\
         sslmode = \"disable\"\n\
         \n\
         [jobs.app]\n\
         instance = \"src\"\n\
         database = \"app\"\n\
         cron = \"{cron}\"\n\
         retention = {{ daily = 2 }}\n"
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `pgsnapman-worker ARGS` on the standalone data directory.
fn worker_cmd(name: &str, data_dir: &Path, jobs: &Path, args: &[&str]) -> Output {
    Command::new(pgsnapman_tests::binary("pgsnapman-worker"))
        .env("PGSNAPMAN_WORKER__NAME", name)
        .env("PGSNAPMAN_WORKER__DATA_DIR", data_dir)
        .env("PGSNAPMAN_STANDALONE__JOBS_FILE", jobs)
        .env("PGSNAPMAN_RETENTION__ENABLED", "true")
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn succeeded_uuids(cli: &pgsnapman_tests::Pgsnap, worker: &str) -> BTreeSet<String> {
    let all = cli.json(&["catalog", "list", "--worker", worker]).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "SUCCEEDED")
        .map(|r| r["dump_uuid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_worker_runs_alone_then_joins_a_coordinator() {
    let name = "w-standalone";
    let source = source_with_app(ROWS);
    let dir = pgsnapman_tests::shared_tempdir("pgsnapman-standalone-");
    let data_dir = dir.path().join("worker");
    let jobs = write(
        dir.path(),
        "jobs.toml",
        &jobs_toml(source.port, "0 2 * * *", ""),
    );

    // 1. Refused files: one line naming file, line and key; no secret shown.
    let refused = |file: &str, cron: &str, extra: &str| {
        let path = write(dir.path(), file, &jobs_toml(source.port, cron, extra));
        let out = worker_cmd(name, &data_dir, &path, &["--standalone"]);
        let (_, err) = text(&out);
        assert!(!out.status.success(), "{err}");
        err
    };
    let err = refused("bad.toml", "0 2 * * *", "password = \"s3cret-pw\"");
    assert!(
        err.contains("bad.toml:6: instances.src.password: passwords are never read"),
        "{err}"
    );
    assert!(!err.contains("s3cret-pw"), "{err}");
    let err = refused("cron.toml", "0 25 * * *", "");
    assert!(err.contains("cron.toml:12: jobs.app.cron:"), "{err}");
    assert!(
        !data_dir.join("state").exists(),
        "a refused file opens nothing"
    );

    // 2. Alone: dumps on schedule, retention deletes.
    let standalone_env = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        [
            ("PGSNAPMAN_STANDALONE__ENABLED", "true"),
            ("PGSNAPMAN_STANDALONE__JOBS_FILE", jobs.to_str().unwrap()),
            ("PGSNAPMAN_COORDINATOR__URL", "https://127.0.0.1:7431"),
            ("PGSNAPMAN_RETENTION__ENABLED", "true"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let mut worker = Worker::start(WorkerOptions {
        name: name.into(),
        coordinator: Access::default(),
        data_dir: Some(data_dir.clone()),
        env: standalone_env(&[
            ("PGSNAPMAN_SCHEDULER__CLOCK_SPEED", SPEED),
            ("PGSNAPMAN_SCHEDULER__CLOCK_START", "2024-01-01T00:00:00Z"),
        ]),
    })
    .unwrap();
    let log = worker.process.log_path().to_path_buf();
    let scheduled = wait::until(
        "five scheduled dumps and a dump deleted by retention",
        Duration::from_secs(180),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let n = text.matches("scheduled dump succeeded").count();
            let (msgs, _) = text_of(worker_cmd(name, &data_dir, &jobs, &["messages"]));
            (n >= 5 && msgs.contains("RETENTION")).then_some(n)
        },
    )
    .await;
    // While it runs, `dump now` goes through the service's control socket
    // (owner only) and waits for the dump; an unknown job is one line.
    {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let socket = std::fs::metadata(data_dir.join("control.sock")).unwrap();
        assert!(socket.file_type().is_socket());
        assert_eq!(socket.permissions().mode() & 0o777, 0o600);
    }
    let out = worker_cmd(name, &data_dir, &jobs, &["dump", "now", "app"]);
    let (now, err) = text(&out);
    assert!(out.status.success(), "{now}{err}");
    let beside = now.trim().to_string();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("dump now starting"),
        "the service ran it: {logged}"
    );
    let out = worker_cmd(name, &data_dir, &jobs, &["dump", "now", "nope"]);
    let (_, err) = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no job \"nope\""), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // `restore` still needs the service stopped.
    let out = worker_cmd(
        name,
        &data_dir,
        &jobs,
        &["restore", &beside, "--to", "src/x"],
    );
    let (_, err) = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("stop it first"), "{err}");
    worker.process.stop_clean().await;
    assert!(
        !data_dir.join("control.sock").exists(),
        "the socket goes with the service"
    );
    worker.process.assert_no_unexpected_errors(&[]);
    let on_disk = dumps_on_disk(&data_dir);
    assert!(
        on_disk.len() < scheduled,
        "retention deleted none of {scheduled} dumps: {on_disk:?}"
    );
    let (msgs, _) = text_of(worker_cmd(name, &data_dir, &jobs, &["messages"]));
    assert!(
        msgs.lines()
            .any(|l| l.contains("\tapp\tdump ") && l.contains("stored")),
        "{msgs}"
    );
    let (warn, _) = text_of(worker_cmd(
        name,
        &data_dir,
        &jobs,
        &["messages", "--level", "warning"],
    ));
    assert!(
        !warn.contains("RETENTION"),
        "INFO lines are filtered out: {warn}"
    );

    // 3. dump now and restore, in the foreground.
    let (out, err) = text_of(worker_cmd(name, &data_dir, &jobs, &["dump", "now", "app"]));
    let uuid = out.trim().to_string();
    assert!(dumps_on_disk(&data_dir).contains(&uuid), "{out}{err}");
    let to = "src/app_copy";
    let out = worker_cmd(
        name,
        &data_dir,
        &jobs,
        &["restore", &uuid, "--to", to, "--existing", "drop-before"],
    );
    let (_, err) = text(&out);
    assert!(
        !out.status.success(),
        "a destructive policy needs --yes: {err}"
    );
    assert!(err.contains("--yes"), "{err}");
    let out = worker_cmd(name, &data_dir, &jobs, &["restore", &uuid, "--to", to]);
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{stdout}{err}");
    assert_eq!(
        source
            .query("app_copy", "SELECT count(*) FROM t")
            .unwrap()
            .trim(),
        ROWS.to_string()
    );
    let history = dumps_on_disk(&data_dir);

    // 4. Joins a coordinator: history into the catalog, messages once.
    let (_catalog, coordinator, _) = restartable_coordinator().await;
    let cli = coordinator.cli();
    register_worker(&cli, name);
    let mut worker = Worker::start(WorkerOptions {
        name: name.into(),
        coordinator: cli.access.clone(),
        data_dir: Some(data_dir.clone()),
        // The imported job's retention is checked below. The worker runs
        // on the real clock now: its job's daily 02:00 fire, missed since
        // the simulated days, would run at start when the test runs
        // within `missed_grace` after 02:00 UTC and add a dump to the
        // history compared below (it failed CI that way at 02:30).
        env: vec![
            ("PGSNAPMAN_RETENTION__ENABLED".into(), "true".into()),
            ("PGSNAPMAN_SCHEDULER__MISSED_GRACE".into(), "0s".into()),
        ],
    })
    .unwrap();
    coordinator.wait_worker_connected(name).await;
    cli.json(&["catalog", "rebuild", "--worker", name, "--wait"])
        .unwrap();
    wait::until(
        "the history in the catalog",
        Duration::from_secs(60),
        || async { (succeeded_uuids(&cli, name) == history).then_some(()) },
    )
    .await;
    let restores = |msgs: &Value| {
        msgs.as_array()
            .unwrap()
            .iter()
            .filter(|m| {
                m["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("local restore of dump")
            })
            .count()
    };
    wait::until("the outbox delivered", Duration::from_secs(60), || async {
        let m = cli.json(&["messages", "--limit", "10000"]).ok()?;
        (restores(&m) == 1).then_some(())
    })
    .await;
    // A second rebuild duplicates nothing.
    cli.json(&["catalog", "rebuild", "--worker", name, "--wait"])
        .unwrap();
    assert_eq!(succeeded_uuids(&cli, name), history);
    let m = cli.json(&["messages", "--limit", "10000"]).unwrap();
    assert_eq!(restores(&m), 1, "{m}");

    // 5. job import twice: one set of jobs.
    let jobs_arg = jobs.to_str().unwrap();
    let first = cli
        .json(&["job", "import", "--worker", name, jobs_arg])
        .unwrap();
    assert_eq!(first["changed"], true, "{first}");
    let second = cli
        .json(&["job", "import", "--worker", name, jobs_arg])
        .unwrap();
    assert_eq!(second["changed"], false, "{second}");
    let listed = cli.json(&["job", "list", "--worker", name]).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let instances = cli.json(&["instance", "list"]).unwrap();
    assert_eq!(instances.as_array().unwrap().len(), 1, "{instances}");
    let people = cli
        .run(&["job", "import", "--worker", name, jobs_arg])
        .unwrap();
    assert!(
        people.stdout.contains("nothing changed"),
        "{}",
        people.stdout
    );
    // The imported job has the file's id: the standalone dumps are its
    // dumps, and its retention (run by the worker after this dump) removes
    // the standalone `dump now` of step 3, an older dump of the same day.
    let job_id = listed[0]["id"].as_i64().unwrap();
    let of_job: BTreeSet<String> = catalog_of_job(&cli, job_id)
        .iter()
        .filter(|r| r["status"] == "SUCCEEDED")
        .map(|r| r["dump_uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        of_job, history,
        "the standalone dumps belong to job {job_id}"
    );
    assert_eq!(
        instances[0]["id"].as_i64(),
        listed[0]["instance_id"].as_i64()
    );
    assert!(job_id >= 1 << 40, "{listed}");
    // An id is taken only once, and only in the standalone range.
    let mut admin = coordinator.admin().await.unwrap();
    let taken = admin
        .add_instance(pgsnapman_proto::v1::AddInstanceRequest {
            name: "another".into(),
            host: "127.0.0.1".into(),
            id: listed[0]["instance_id"].as_i64().unwrap(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
    assert!(taken.message().contains("is taken"), "{taken:?}");
    let outside = admin
        .add_dump_job(pgsnapman_proto::v1::AddDumpJobRequest {
            instance_id: listed[0]["instance_id"].as_i64().unwrap(),
            database: "app".into(),
            cron: "0 3 * * *".into(),
            id: 5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(outside.code(), tonic::Code::InvalidArgument, "{outside:?}");
    assert!(
        outside.message().contains("outside the standalone range"),
        "{outside:?}"
    );
    wait_schedule_confirmed(&cli, name).await;
    let run = cli
        .run(&["dump", "now", &job_id.to_string(), "--wait"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    wait::until(
        "the imported job's retention to remove the standalone dump now",
        Duration::from_secs(60),
        || async { (!succeeded_uuids(&cli, name).contains(&uuid)).then_some(()) },
    )
    .await;
    assert!(
        !dumps_on_disk(&data_dir).contains(&uuid),
        "removed from the store too"
    );

    // The same file with a copy and a cron restore: two restore jobs of the
    // imported job, once.
    let with_restores = write(
        dir.path(),
        "with-restores.toml",
        &format!(
            "{}\n[copies.app_copy]\njob = \"app\"\nto = \"src\"\ndatabase = \"app_copy\"\n\
             \n[restores.qa]\njob = \"app\"\nto = \"src\"\ndatabase = \"app qa\"\n\
             cron = \"0 6  * * 1\"\nstatus = \"halted\"\nexisting = \"drop\"\ndestructive = true\n",
            jobs_toml(source.port, "0 2 * * *", "")
        ),
    );
    let with_restores = with_restores.to_str().unwrap();
    let first = cli
        .json(&["job", "import", "--worker", name, with_restores])
        .unwrap();
    assert_eq!(first["changed"], true, "{first}");
    let created: Vec<&str> = first["created"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(created.len(), 2, "{first}");
    assert!(created[0].starts_with("copy app_copy ("), "{first}");
    assert!(created[1].starts_with("restore qa ("), "{first}");
    let second = cli
        .json(&["job", "import", "--worker", name, with_restores])
        .unwrap();
    assert_eq!(second["changed"], false, "{second}");
    let restore_jobs = cli.json(&["restore-job", "list"]).unwrap();
    let restore_jobs = restore_jobs.as_array().unwrap();
    assert_eq!(restore_jobs.len(), 2, "{restore_jobs:?}");
    let of_kind = |kind: &str| {
        restore_jobs
            .iter()
            .find(|j| j["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} job: {restore_jobs:?}"))
    };
    let copy = of_kind("TRIGGER");
    assert_eq!(copy["source_job_id"].as_i64(), Some(job_id), "{copy}");
    assert_eq!(copy["target"]["database"], "app_copy", "{copy}");
    assert_eq!(copy["target"]["existing_database"], "RENAME", "{copy}");
    assert_eq!(copy["status"], "ACTIVE", "{copy}");
    let qa = of_kind("REPEAT");
    assert_eq!(qa["source_job_id"].as_i64(), Some(job_id), "{qa}");
    assert_eq!(qa["cron"], "0 6 * * 1", "{qa}");
    assert_eq!(qa["status"], "HALTED", "{qa}");
    assert_eq!(qa["target"]["database"], "app qa", "{qa}");
    assert_eq!(qa["target"]["existing_database"], "DROP", "{qa}");

    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
}

fn text_of(out: Output) -> (String, String) {
    text(&out)
}

/// A copy in the jobs file: each successful scheduled dump of its job is
/// restored into the copy's database (here beside the source, `rename`
/// policy: the previous copy is swapped out), and recorded as a message.
/// A cron restore restores the job's newest dump at its own time; one of a
/// job with no dump yet is a warning that changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_and_cron_restores_in_the_jobs_file() {
    let name = "w-standalone-copy";
    let source = source_with_app(ROWS);
    let dir = pgsnapman_tests::shared_tempdir("pgsnapman-standalone-copy-");
    let data_dir = dir.path().join("worker");
    let file = format!(
        "{}\n[copies.app_copy]\njob = \"app\"\nto = \"src\"\ndatabase = \"app_copy\"\n\
         \n[jobs.july]\ninstance = \"src\"\ndatabase = \"app\"\ncron = \"0 3 1 7 *\"\n\
         \n[restores.nightly]\njob = \"app\"\nto = \"src\"\ndatabase = \"app_nightly\"\ncron = \"0 6 * * *\"\n\
         \n[restores.early]\njob = \"july\"\nto = \"src\"\ndatabase = \"app_early\"\ncron = \"30 0 * * *\"\n",
        jobs_toml(source.port, "0 2 * * *", "")
    );
    let jobs = write(dir.path(), "jobs.toml", &file);
    let mut worker = Worker::start(WorkerOptions {
        name: name.into(),
        coordinator: Access::default(),
        data_dir: Some(data_dir.clone()),
        env: [
            ("PGSNAPMAN_STANDALONE__ENABLED", "true"),
            ("PGSNAPMAN_STANDALONE__JOBS_FILE", jobs.to_str().unwrap()),
            ("PGSNAPMAN_COORDINATOR__URL", "https://127.0.0.1:7431"),
            ("PGSNAPMAN_SCHEDULER__CLOCK_SPEED", SPEED),
            ("PGSNAPMAN_SCHEDULER__CLOCK_START", "2024-01-01T00:00:00Z"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    })
    .unwrap();
    let log = worker.process.log_path().to_path_buf();
    wait::until(
        "two scheduled dumps, each copied, and two cron restores",
        Duration::from_secs(180),
        || async {
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            (logged.matches("copy app_copy of dump").count() >= 2
                && logged.matches("restore nightly of dump").count() >= 2
                && logged.contains("restore early: its job has no stored dump yet"))
            .then_some(())
        },
    )
    .await;
    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    assert_eq!(
        source.query("app_copy", "SELECT count(*) FROM t").unwrap(),
        ROWS.to_string()
    );
    let (msgs, _) = text_of(worker_cmd(name, &data_dir, &jobs, &["messages"]));
    let copies: Vec<&str> = msgs
        .lines()
        .filter(|l| l.contains("copy app_copy of dump"))
        .collect();
    assert!(copies.len() >= 2, "{msgs}");
    assert!(copies.iter().all(|l| l.contains("SUCCEEDED")), "{copies:?}");
    assert_eq!(
        source
            .query("app_nightly", "SELECT count(*) FROM t")
            .unwrap(),
        ROWS.to_string()
    );
    let nightly: Vec<&str> = msgs
        .lines()
        .filter(|l| l.contains("restore nightly of dump"))
        .collect();
    assert!(nightly.len() >= 2, "{msgs}");
    assert!(
        nightly
            .iter()
            .all(|l| l.contains("\tINFO\tRESTORE\tapp\t") && l.contains("SUCCEEDED")),
        "{nightly:?}"
    );
    assert!(
        msgs.lines()
            .any(|l| l.contains("\tWARNING\tRESTORE\tjuly\trestore early:")),
        "{msgs}"
    );
    assert_eq!(
        source
            .query(
                "postgres",
                "SELECT count(*) FROM pg_database WHERE datname = 'app_early'"
            )
            .unwrap(),
        "0",
        "a restore with no dump changes nothing"
    );
    // A copy over its own source is refused before anything opens.
    let bad = format!(
        "{}\n[copies.over]\njob = \"app\"\nto = \"src\"\n",
        jobs_toml(source.port, "0 2 * * *", "")
    );
    let bad = write(dir.path(), "over.toml", &bad);
    let out = worker_cmd(name, &data_dir, &bad, &["--standalone"]);
    let (_, err) = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("copies.over: would restore the dumped database over itself"),
        "{err}"
    );
}
