//! Restores and copies end to end through `pgsnap` (issue 7): an ad-hoc
//! restore onto another server with its log, existing-database policies,
//! a copy job with two targets after every scheduled dump, a server
//! restore, GLOBALS onto an empty cluster, and clear errors.
use std::time::Duration;

use pgsnapman_tests::cluster::quote_ident;
use pgsnapman_tests::{PgCluster, Pgsnap, wait};

use crate::common::*;

/// Waits until the restore log shows no running restore (before a stack
/// stops: a restore cut off by the stop would leave work behind).
async fn no_restore_running(cli: &Pgsnap) {
    wait::until("no restore running", Duration::from_secs(120), || async {
        let r = cli
            .json(&["restore-log", "list", "--status", "running"])
            .ok()?;
        r.as_array()?.is_empty().then_some(())
    })
    .await;
}

fn count(cluster: &PgCluster, db: &str, table: &str) -> String {
    cluster
        .query(db, &format!("SELECT count(*) FROM {table}"))
        .unwrap()
}

fn databases(cluster: &PgCluster) -> Vec<String> {
    cluster
        .query(
            "postgres",
            "SELECT string_agg(datname, '|' ORDER BY datname) FROM pg_database",
        )
        .unwrap()
        .split('|')
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_now_onto_another_server_with_policies_and_log() {
    let stack = Stack::start("w-restore").await;
    let target = PgCluster::start(PG_MAJOR).unwrap();
    let db = "Shop \"main\".ü";
    stack.source.create_database(db).unwrap();
    fill_mixed(&stack.source, db, "t", 2, 3_000, 64);
    let src = add_instance(&stack.cli, "src", stack.source.port, "w-restore", None);
    let dst = add_instance(&stack.cli, "dst", target.port, "w-restore", None);
    let job = add_job(&stack.cli, src, db);
    let dump = id_of(&dump_and_show(&stack.cli, job));

    // Onto the other server, under another odd name: progress, then the log.
    let copy = "copy of \"shop\" ü";
    let run = restore_now(&stack.cli, dump, dst, copy, &[]);
    assert!(run.success(), "{run:?}");
    assert!(run.stdout.contains("restore run"), "{run:?}");
    assert_eq!(count(&target, copy, "t0"), "3000");
    assert_eq!(count(&target, copy, "t1"), "3000");
    let runs = stack.cli.json(&["restore-log", "list"]).unwrap();
    assert_eq!(runs[0]["status"], "SUCCEEDED", "{runs}");
    assert_eq!(runs[0]["dump_id"], dump);
    assert!(runs[0]["bytes_total"].as_u64().unwrap() > 0, "{runs}");
    let log = stack
        .cli
        .json(&["restore-log", "show", &runs[0]["id"].to_string()])
        .unwrap();
    assert!(!log["lines"].as_array().unwrap().is_empty(), "{log}");

    // LEAVE: the target exists, nothing changes, the run is ABORTED, exit 1.
    target
        .query(copy, "INSERT INTO t0 (id, name) VALUES (-1, 'marker')")
        .unwrap();
    let run = restore_now(&stack.cli, dump, dst, copy, &["--existing", "leave"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(count(&target, copy, "t0"), "3001");
    let runs = stack
        .cli
        .json(&["restore-log", "list", "--limit", "1"])
        .unwrap();
    assert_eq!(runs[0]["status"], "ABORTED", "{runs}");

    // RENAME (the default): the old database is kept under the backup name.
    let run = restore_now(&stack.cli, dump, dst, copy, &[]);
    assert!(run.success(), "{run:?}");
    assert_eq!(count(&target, copy, "t0"), "3000");
    let dbs = databases(&target);
    let backup = dbs
        .iter()
        .find(|d| d.starts_with("copy of") && d.contains("pgsnapman") && d.as_str() != copy)
        .unwrap_or_else(|| panic!("no backup of the replaced database: {dbs:?}"));
    assert_eq!(count(&target, backup, "t0"), "3001");

    // DROP: swapped, and no second backup appears. A session on the
    // target is ended in the same psql as the rename, and counted.
    let mut holder = target
        .psql_cmd(copy)
        .args(["-c", "SELECT pg_sleep(600)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sleeping = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{copy}' \
         AND query = 'SELECT pg_sleep(600)'"
    );
    wait::until("the session on the target", Duration::from_secs(30), || {
        let n = target.query("postgres", &sleeping).ok();
        async move { (n.as_deref() == Some("1")).then_some(()) }
    })
    .await;
    let run = restore_now(&stack.cli, dump, dst, copy, &["--existing", "drop"]);
    assert!(run.success(), "{run:?}");
    let ended = wait::until("the session's psql to end", Duration::from_secs(30), || {
        let status = holder.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert!(!ended.success(), "its session was ended: {ended:?}");
    let runs = stack
        .cli
        .json(&["restore-log", "list", "--limit", "1"])
        .unwrap();
    let log = stack
        .cli
        .json(&["restore-log", "show", &runs[0]["id"].to_string()])
        .unwrap();
    assert!(
        log["lines"].as_array().unwrap().iter().any(|l| l["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("swapped:") && t.ends_with("(ended 1 session(s))"))),
        "{log}"
    );
    let after: Vec<String> = databases(&target)
        .into_iter()
        .filter(|d| d.starts_with("copy of"))
        .collect();
    assert_eq!(
        after.len(),
        2,
        "the copy and the one RENAME backup: {after:?}"
    );
    assert!(
        !databases(&target)
            .iter()
            .any(|d| d.contains("pgsnapman") && d.contains("tmp")),
        "no temporary database is left"
    );

    // Role handling off: the database belongs to the given owner and connects.
    target
        .query("postgres", "CREATE ROLE copy_owner LOGIN")
        .unwrap();
    let run = restore_now(
        &stack.cli,
        dump,
        dst,
        "plain copy",
        &["--no-roles", "--owner", "copy_owner"],
    );
    assert!(run.success(), "{run:?}");
    let owner = target
        .query(
            "postgres",
            "SELECT pg_get_userbyid(datdba) || ':' || datallowconn FROM pg_database WHERE datname = 'plain copy'",
        )
        .unwrap();
    assert_eq!(owner, "copy_owner:true");
    stack.stop_clean(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_job_with_two_targets_runs_after_every_scheduled_dump() {
    // The worker's clock runs 30 times fast: an every-minute job fires every 2 s.
    let stack = Stack::start_with(
        "w-copy",
        &[("PGSNAPMAN_SCHEDULER__CLOCK_SPEED", "30")],
        None,
    )
    .await;
    let other = PgCluster::start(PG_MAJOR).unwrap();
    stack.source.create_database("app").unwrap();
    fill_mixed(&stack.source, "app", "t", 1, 500, 32);
    let src = add_instance(&stack.cli, "src", stack.source.port, "w-copy", None);
    let dst = add_instance(&stack.cli, "other", other.port, "w-copy", None);
    let added = stack
        .cli
        .json(&[
            "copy",
            "add",
            "--instance",
            &src.to_string(),
            "--database",
            "app",
            "--cron",
            "* * * * *",
            "--to",
            &dst.to_string(),
            "--to",
            &format!("{src}:app_test"),
            "--existing",
            "drop",
        ])
        .unwrap();
    let job = added["dump_job"]["id"].as_i64().unwrap();
    assert_eq!(
        added["restore_jobs"].as_array().unwrap().len(),
        2,
        "{added}"
    );

    // Both targets get the data after a scheduled dump ...
    wait::until("both copies", Duration::from_secs(120), || async {
        let ok = other.query("app", "SELECT count(*) FROM t0").ok()? == "500"
            && stack
                .source
                .query("app_test", "SELECT count(*) FROM t0")
                .ok()?
                == "500";
        ok.then_some(())
    })
    .await;
    // ... and again after the next dumps, with the new rows.
    stack
        .source
        .query(
            "app",
            "INSERT INTO t0 (id, name) SELECT -g, 'new' FROM generate_series(1, 25) g",
        )
        .unwrap();
    wait::until(
        "both copies of the changed data",
        Duration::from_secs(120),
        || async {
            let ok = other.query("app", "SELECT count(*) FROM t0").ok()? == "525"
                && stack
                    .source
                    .query("app_test", "SELECT count(*) FROM t0")
                    .ok()?
                    == "525";
            ok.then_some(())
        },
    )
    .await;
    assert!(
        stack
            .cli
            .run(&["job", "halt", &job.to_string()])
            .unwrap()
            .success()
    );
    // The copy is visible before the worker's final event reaches the
    // catalog: wait for the runs to be recorded as finished. A scheduled
    // dump that fired just before the halt queues one more run per target:
    // QUEUED is not finished either.
    let list = wait::until("both runs recorded", Duration::from_secs(120), || async {
        let list = stack.cli.json(&["copy", "list"]).ok()?;
        let finished = list[0]["restore_jobs"].as_array()?.iter().all(|r| {
            matches!(
                r["last_run"]["status"].as_str(),
                Some("SUCCEEDED" | "FAILED" | "ABORTED")
            )
        });
        finished.then_some(list)
    })
    .await;
    let c = &list[0];
    assert_eq!(c["dump_job"]["id"], job);
    for r in c["restore_jobs"].as_array().unwrap() {
        assert_eq!(r["kind"], "TRIGGER", "{r}");
        assert_eq!(r["last_run"]["status"], "SUCCEEDED", "{r}");
    }
    let runs = stack
        .cli
        .json(&["restore-log", "list", "--status", "succeeded"])
        .unwrap();
    assert!(
        runs.as_array().unwrap().len() >= 4,
        "two rounds onto two targets: {runs}"
    );
    // Wait for what is still running before stopping.
    no_restore_running(&stack.cli).await;
    stack.stop_clean(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restore_and_globals_onto_an_empty_cluster() {
    let stack = Stack::start("w-server").await;
    let empty = PgCluster::start(PG_MAJOR).unwrap();
    stack
        .source
        .script(
            "postgres",
            "CREATE ROLE \"App Owner\" LOGIN; CREATE ROLE readers; GRANT readers TO \"App Owner\";",
        )
        .unwrap();
    for db in ["one", "two ü"] {
        stack.source.create_database(db).unwrap();
        stack
            .source
            .script(
                db,
                &format!(
                    "CREATE TABLE items AS SELECT g AS id FROM generate_series(1, 42) g;
                     ALTER TABLE items OWNER TO {};",
                    quote_ident("App Owner")
                ),
            )
            .unwrap();
    }
    let src = add_instance(&stack.cli, "src", stack.source.port, "w-server", None);
    let dst = add_instance(&stack.cli, "empty", empty.port, "w-server", None);
    for db in ["one", "two ü"] {
        let job = add_job(&stack.cli, src, db);
        dump_and_show(&stack.cli, job);
    }
    // GLOBALS first: the roles come back, with the membership.
    let globals = add_globals_job(&stack.cli, src);
    let g = dump_and_show(&stack.cli, globals);
    let run = restore_cluster_dump_now(&stack.cli, id_of(&g), dst, &[]);
    assert!(run.success(), "{run:?}");
    let member = empty
        .query(
            "postgres",
            "SELECT pg_has_role('App Owner', 'readers', 'MEMBER')",
        )
        .unwrap();
    assert_eq!(member, "t");

    // Every database of the source, from its latest good dump.
    let r = stack
        .cli
        .json(&[
            "restore",
            "server",
            "--from",
            &src.to_string(),
            "--to",
            &dst.to_string(),
        ])
        .unwrap();
    assert_eq!(r[0]["jobs"].as_array().unwrap().len(), 2, "{r}");
    wait::until(
        "both databases restored",
        Duration::from_secs(120),
        || async {
            let ok = empty.query("one", "SELECT count(*) FROM items").ok()? == "42"
                && empty.query("two ü", "SELECT count(*) FROM items").ok()? == "42";
            ok.then_some(())
        },
    )
    .await;
    let owner = empty
        .query(
            "two ü",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'items'",
        )
        .unwrap();
    assert_eq!(owner, "App Owner");
    wait::until(
        "the server restore's runs to end",
        Duration::from_secs(60),
        || async {
            let r = stack
                .cli
                .json(&["restore-log", "list", "--status", "succeeded"])
                .ok()?;
            (r.as_array()?.len() >= 3).then_some(())
        },
    )
    .await;
    stack.stop_clean(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_input_errors_are_clear() {
    let stack = Stack::start("w-rerr").await;
    stack.source.create_database("db").unwrap();
    let src = add_instance(&stack.cli, "src", stack.source.port, "w-rerr", None);
    let job = add_job(&stack.cli, src, "db");
    let dump = id_of(&dump_and_show(&stack.cli, job)).to_string();
    let inst = src.to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["restore", "now", "--dump", "99999", "--to-instance", &inst],
            "dump 99999 not found",
        ),
        (
            &["restore", "now", "--dump", &dump, "--to-instance", "424242"],
            "instance 424242",
        ),
        (
            &[
                "restore",
                "now",
                "--dump",
                &dump,
                "--to-instance",
                &inst,
                "--existing",
                "truncate",
            ],
            "goes with a DATA restore",
        ),
        (
            &[
                "restore",
                "now",
                "--dump",
                &dump,
                "--to-instance",
                &inst,
                "--option=--clean",
            ],
            "pg_restore option \"--clean\" is not allowed",
        ),
        (
            &[
                "restore",
                "now",
                "--dump",
                &dump,
                "--to-instance",
                &inst,
                "--map-tablespace",
                "nope",
            ],
            "write OLD=NEW",
        ),
        (
            &[
                "restore-job",
                "add",
                "--from-job",
                &job.to_string(),
                "--to-instance",
                &inst,
                "--kind",
                "repeat",
            ],
            "cron",
        ),
        (
            &[
                "restore-job",
                "add",
                "--from-job",
                "31337",
                "--to-instance",
                &inst,
            ],
            "31337",
        ),
        (&["restore-log", "show", "777"], "restore run 777 not found"),
        (
            &[
                "copy",
                "add",
                "--instance",
                &inst,
                "--database",
                "db",
                "--cron",
                "0 2 * * *",
                "--to",
                "x",
            ],
            "--to",
        ),
    ];
    for (args, expected) in cases {
        let run = stack.cli.run(args).unwrap();
        assert_ne!(run.code, 0, "{args:?} must fail: {run:?}");
        assert!(
            run.stderr.contains(expected),
            "{args:?}: expected {expected:?} in {run:?}"
        );
        assert_eq!(run.stderr.lines().count(), 1, "one line: {run:?}");
    }
    stack.stop_clean(&[]).await;
}

/// A SINGLE restore job whose time has passed runs at once, and only once; a
/// REPEAT job runs when its cron fires (the coordinator's clock, UTC).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_and_repeat_restore_jobs_fire_on_time() {
    let stack = Stack::start("w-rjobs").await;
    stack.source.create_database("app").unwrap();
    fill_mixed(&stack.source, "app", "t", 1, 100, 16);
    let src = add_instance(&stack.cli, "src", stack.source.port, "w-rjobs", None);
    let job = add_job(&stack.cli, src, "app");
    dump_and_show(&stack.cli, job);
    let (job, src) = (job.to_string(), src.to_string());
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let single = id_of(
        &stack
            .cli
            .json(&[
                "restore-job",
                "add",
                "--from-job",
                &job,
                "--to-instance",
                &src,
                "--to-database",
                "app_single",
                "--at",
                &past,
            ])
            .unwrap(),
    );
    let repeat = id_of(
        &stack
            .cli
            .json(&[
                "restore-job",
                "add",
                "--from-job",
                &job,
                "--to-instance",
                &src,
                "--to-database",
                "app_repeat",
                "--kind",
                "repeat",
                "--cron",
                "* * * * *",
                "--existing",
                "drop",
            ])
            .unwrap(),
    );
    let runs_of = |id: i64| {
        let v = stack
            .cli
            .json(&["restore-log", "list", "--job", &id.to_string()])
            .unwrap();
        v.as_array().cloned().unwrap_or_default()
    };
    wait::until("the SINGLE job's run", Duration::from_secs(60), || async {
        let r = runs_of(single);
        (r.first()?["status"] == "SUCCEEDED").then_some(())
    })
    .await;
    assert_eq!(count(&stack.source, "app_single", "t0"), "100");
    // The next minute boundary fires the REPEAT job.
    wait::until(
        "the REPEAT job's first run",
        Duration::from_secs(150),
        || async {
            let r = runs_of(repeat);
            (r.first()?["status"] == "SUCCEEDED").then_some(())
        },
    )
    .await;
    assert_eq!(count(&stack.source, "app_repeat", "t0"), "100");
    assert!(
        stack
            .cli
            .run(&["restore-job", "halt", &repeat.to_string()])
            .unwrap()
            .success()
    );
    assert_eq!(runs_of(single).len(), 1, "a SINGLE job runs once");
    // A minute boundary may have fired another run before the halt: wait
    // for the last run to finish.
    let shown = wait::until(
        "the last run finished",
        Duration::from_secs(120),
        || async {
            let shown = stack
                .cli
                .json(&["restore-job", "show", &repeat.to_string()])
                .ok()?;
            (shown["last_run"]["status"] != "RUNNING").then_some(shown)
        },
    )
    .await;
    assert_eq!(shown["status"], "HALTED");
    assert_eq!(shown["last_run"]["status"], "SUCCEEDED", "{shown}");
    no_restore_running(&stack.cli).await;
    stack.stop_clean(&[]).await;
}

/// A worker may hand restores of its dumps to a restore worker that reads
/// its store (restore.shared_stores); without that store configured the
/// restore is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_worker_reads_the_dump_workers_store() {
    let stack = Stack::start("w-a").await;
    stack.source.create_database("app").unwrap();
    fill_mixed(&stack.source, "app", "t", 1, 300, 16);
    let src = add_instance(&stack.cli, "src", stack.source.port, "w-a", None);
    let job = add_job(&stack.cli, src, "app");
    let dump = id_of(&dump_and_show(&stack.cli, job));

    // w-b reads w-a's store; w-c does not.
    let cfg_dir = pgsnapman_tests::shared_tempdir("pgsnapman-rw-");
    let cfg = cfg_dir.path().join("w-b.toml");
    std::fs::write(
        &cfg,
        format!(
            "[restore.shared_stores]\n\"w-a\" = {:?}\n",
            stack.worker.data_dir.to_string_lossy()
        ),
    )
    .unwrap();
    let mut workers = Vec::new();
    for (name, env) in [
        (
            "w-b",
            vec![(
                "PGSNAPMAN_CONFIG".to_string(),
                cfg.to_string_lossy().into_owned(),
            )],
        ),
        ("w-c", vec![]),
    ] {
        register_worker(&stack.cli, name);
        workers.push(
            pgsnapman_tests::Worker::start(pgsnapman_tests::WorkerOptions {
                name: name.into(),
                coordinator: stack.coordinator.access(),
                env,
                ..Default::default()
            })
            .unwrap(),
        );
        stack.coordinator.wait_worker_connected(name).await;
    }
    let set = stack
        .cli
        .json(&["worker", "set-restore-worker", "w-a", "w-b"])
        .unwrap();
    assert_eq!(set["restore_worker_name"], "w-b", "{set}");
    let run = restore_now(&stack.cli, dump, src, "app_by_b", &[]);
    assert!(run.success(), "{run:?}");
    assert_eq!(count(&stack.source, "app_by_b", "t0"), "300");
    let runs = stack
        .cli
        .json(&["restore-log", "list", "--limit", "1"])
        .unwrap();
    assert_eq!(runs[0]["worker_name"], "w-b", "{runs}");

    // w-c cannot read w-a's store: ABORTED, saying what to configure.
    stack
        .cli
        .json(&["worker", "set-restore-worker", "w-a", "w-c"])
        .unwrap();
    let run = restore_now(&stack.cli, dump, src, "app_by_c", &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("restore.shared_stores"), "{run:?}");
    assert!(!databases(&stack.source).contains(&"app_by_c".to_string()));

    // Cleared: w-a restores its own dumps again.
    let cleared = stack
        .cli
        .json(&["worker", "set-restore-worker", "w-a"])
        .unwrap();
    assert_eq!(cleared["restore_worker_name"], "");
    let run = restore_now(&stack.cli, dump, src, "app_by_a", &[]);
    assert!(run.success(), "{run:?}");
    let runs = stack
        .cli
        .json(&["restore-log", "list", "--limit", "1"])
        .unwrap();
    assert_eq!(runs[0]["worker_name"], "w-a", "{runs}");
    for mut w in workers {
        w.process.stop_clean().await;
        w.process.assert_no_unexpected_errors(&[]);
    }
    stack.stop_clean(&[]).await;
}

/// A restore into a new database, and a verification's scratch database,
/// commit without waiting for the WAL flush (`synchronous_commit = off` in
/// their sessions: nothing sees those databases before the swap's
/// synchronous commit, or ever); a restore into an existing database
/// stays one synchronous transaction. Seen by a CHECK constraint that
/// compares each row with the session's setting while the rows load: the
/// role's setting is `on`, and only the session's own option can say
/// `off`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_databases_restore_with_asynchronous_commits() {
    let stack = Stack::start("w-async").await;
    let target = PgCluster::start(PG_MAJOR).unwrap();
    let db = "async \"commit\" ü";
    stack.source.create_database(db).unwrap();
    // The test clusters run with synchronous_commit = off: the rows say so.
    stack
        .source
        .script(
            db,
            "CREATE TABLE probe (id int PRIMARY KEY, \
             setting text NOT NULL CHECK (setting = current_setting('synchronous_commit'))); \
             INSERT INTO probe SELECT g, current_setting('synchronous_commit') \
             FROM generate_series(1, 500) g;",
        )
        .unwrap();
    assert_eq!(
        count(&stack.source, db, "probe WHERE setting = 'off'"),
        "500"
    );
    let src = add_instance(&stack.cli, "src", stack.source.port, "w-async", None);
    let dst = add_instance(&stack.cli, "dst", target.port, "w-async", None);
    let custom = id_of(&dump_and_show(&stack.cli, add_job(&stack.cli, src, db)));
    let plain_job = add_yearly_job(&stack.cli, src, &["--database", db, "--format", "plain"]);
    let plain = id_of(&dump_and_show(&stack.cli, plain_job));
    // From now on every session of the worker's role says `on`, unless it
    // sets the option itself.
    for pg in [&stack.source, &target] {
        pg.query(
            "postgres",
            "ALTER ROLE CURRENT_USER SET synchronous_commit = on",
        )
        .unwrap();
        assert_eq!(
            pg.query("postgres", "SHOW synchronous_commit").unwrap(),
            "on"
        );
    }

    // Into a new database: custom (pg_restore), -j 2 (served) and plain (psql).
    for (dump, name, extra) in [
        (custom, "copy custom", &[][..]),
        (custom, "copy jobs", &["--jobs", "2"][..]),
        (plain, "copy plain", &[][..]),
    ] {
        let run = restore_now(&stack.cli, dump, dst, name, extra);
        assert!(run.success(), "{name}: {run:?}");
        assert_eq!(count(&target, name, "probe"), "500", "{name}");
    }
    // A verification's scratch database.
    let run = stack
        .cli
        .run(&[
            "verify",
            "now",
            &custom.to_string(),
            "--method",
            "restore",
            "--wait",
        ])
        .unwrap();
    assert!(run.success(), "{run:?}");

    // Into the existing database in one transaction: synchronous, so the
    // same rows fail the CHECK, and the database keeps what it had.
    let run = restore_now(
        &stack.cli,
        custom,
        dst,
        "copy custom",
        &["--existing", "truncate", "--restore-type", "data"],
    );
    assert_eq!(run.code, 1, "{run:?}");
    let (status, log) = newest_run(&stack.cli);
    assert_eq!(status, "FAILED", "{log}");
    assert!(
        log.contains("probe_setting_check"),
        "the CHECK refused the synchronous session: {log}"
    );
    assert_eq!(count(&target, "copy custom", "probe"), "500");
    stack.stop_clean(&[]).await;
}
