//! Offline-first worker (issue 5): scheduled dumps run from the worker's own
//! mirror and clock while the coordinator and its catalog are down; every
//! event reaches the catalog exactly once when they return.
//!
//! Test-only faster tick: `scheduler.clock_speed = 30` makes the worker's
//! scheduler clock run 30× fast, so a job scheduled `* * * * *` (every
//! minute) fires every 2 s of real time. Nothing else changes (documented in
//! docs/worker.md).
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use pgsnapman_tests::{
    Coordinator, CoordinatorOptions, PgCluster, Pgsnap, Worker, WorkerOptions, wait,
};
use serde_json::Value;

use crate::common::*;

const EVERY_MINUTE: &str = "* * * * *";

struct Rig {
    source: PgCluster,
    catalog: PgCluster,
    coordinator: Option<Coordinator>,
    coordinator_opts: CoordinatorOptions,
    worker: Option<Worker>,
    worker_dir: PathBuf,
    _dir: tempfile::TempDir,
    cli: Pgsnap,
    name: String,
}

impl Rig {
    async fn start(name: &str) -> Rig {
        let (catalog, coordinator, coordinator_opts) = restartable_coordinator().await;
        let cli = coordinator.cli();
        register_worker(&cli, name);
        let dir = pgsnapman_tests::shared_tempdir("pgsnapman-offline-");
        let source = PgCluster::start(PG_MAJOR).unwrap();
        source.create_database("app").unwrap();
        source
            .script(
                "app",
                "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g;",
            )
            .unwrap();
        let mut rig = Rig {
            source,
            catalog,
            coordinator: Some(coordinator),
            coordinator_opts,
            worker: None,
            worker_dir: dir.path().join("worker"),
            _dir: dir,
            cli,
            name: name.to_string(),
        };
        rig.start_worker(&[]);
        rig.coordinator().wait_worker_connected(name).await;
        rig
    }

    fn coordinator(&self) -> &Coordinator {
        self.coordinator.as_ref().expect("coordinator running")
    }

    fn start_worker(&mut self, extra: &[(&str, &str)]) {
        let mut env = vec![(
            "PGSNAPMAN_SCHEDULER__CLOCK_SPEED".to_string(),
            "30".to_string(),
        )];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.worker = Some(
            Worker::start(WorkerOptions {
                name: self.name.clone(),
                coordinator: self.cli.access.clone(),
                data_dir: Some(self.worker_dir.clone()),
                env,
            })
            .unwrap(),
        );
    }

    async fn stop_coordinator_and_catalog(&mut self) {
        let mut c = self.coordinator.take().expect("coordinator running");
        c.process.stop_clean().await;
        c.process.assert_no_unexpected_errors(&[]);
        self.catalog.stop().unwrap();
    }

    async fn restart_coordinator_and_catalog(&mut self) {
        self.catalog.start_again().unwrap();
        self.coordinator = Some(
            Coordinator::start(self.coordinator_opts.clone())
                .await
                .unwrap(),
        );
    }

    /// Uuids of the dumps in the worker's store (one manifest each).
    fn dumps_on_disk(&self) -> BTreeSet<String> {
        dumps_on_disk(&self.worker_dir)
    }

    async fn wait_dumps_on_disk(&self, at_least: usize, what: &str) -> BTreeSet<String> {
        wait::until(what, Duration::from_secs(120), || async {
            let d = self.dumps_on_disk();
            (d.len() >= at_least).then_some(d)
        })
        .await
    }

    fn worker_json(&self) -> Value {
        self.cli.json(&["worker", "show", &self.name]).unwrap()
    }

    /// Waits until the worker confirmed the catalog's current schedule version.
    async fn wait_schedule_confirmed(&self) -> u64 {
        wait_schedule_confirmed(&self.cli, &self.name).await
    }

    /// Catalog rows of a job, straight from the catalog database: (dump uuid,
    /// row id, started_at) in row id order.
    fn catalog_rows(&self, job: i64) -> Vec<(String, i64, String)> {
        let out = self
            .catalog
            .query(
                "postgres",
                &format!(
                    "SELECT string_agg(dump_uuid || ' ' || id || ' ' || \
                     to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), ',' ORDER BY id) \
                     FROM dumps WHERE job_id = {job}"
                ),
            )
            .unwrap();
        out.split(',')
            .filter(|s| !s.is_empty())
            .map(|r| {
                let mut p = r.split(' ');
                (
                    p.next().unwrap().to_string(),
                    p.next().unwrap().parse().unwrap(),
                    p.next().unwrap().to_string(),
                )
            })
            .collect()
    }

    async fn wait_catalog_matches_disk(&self, job: i64) -> Vec<(String, i64, String)> {
        wait::until(
            "every dump on disk to be in the catalog",
            Duration::from_secs(120),
            || async {
                let rows = self.catalog_rows(job);
                let on_disk = self.dumps_on_disk();
                let in_catalog: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
                (in_catalog == on_disk).then_some(rows)
            },
        )
        .await
    }

    fn add_repeat_job(&self) -> i64 {
        let inst = add_instance(&self.cli, "src", self.source.port, &self.name, None);
        let v = self
            .cli
            .json(&[
                "job",
                "add",
                "--instance",
                &inst.to_string(),
                "--database",
                "app",
                "--cron",
                EVERY_MINUTE,
            ])
            .unwrap();
        id_of(&v)
    }

    async fn stop_all(mut self) {
        if let Some(mut w) = self.worker.take() {
            w.process.stop_clean().await;
            w.process.assert_no_unexpected_errors(&[]);
        }
        if let Some(mut c) = self.coordinator.take() {
            c.process.stop_clean().await;
            c.process.assert_no_unexpected_errors(&[]);
        }
    }
}

fn assert_exactly_once_in_order(rows: &[(String, i64, String)]) {
    let uuids: BTreeSet<&String> = rows.iter().map(|r| &r.0).collect();
    assert_eq!(
        uuids.len(),
        rows.len(),
        "a dump was recorded twice: {rows:?}"
    );
    // Applied in event order: row ids follow the dumps' start times.
    let mut by_start = rows.to_vec();
    by_start.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(by_start, rows, "catalog rows out of event order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_dumps_run_while_coordinator_and_catalog_are_down() {
    let mut rig = Rig::start("w-offline").await;
    let job = rig.add_repeat_job();
    rig.wait_schedule_confirmed().await;
    rig.wait_dumps_on_disk(1, "a first scheduled dump").await;

    rig.stop_coordinator_and_catalog().await;
    let before = rig.dumps_on_disk().len();
    // Three more fires (2 s apart at clock speed 30) with nothing to talk to.
    let during = rig
        .wait_dumps_on_disk(before + 3, "three scheduled dumps while offline")
        .await;
    assert!(rig.worker.as_mut().unwrap().process.is_running());

    rig.restart_coordinator_and_catalog().await;
    rig.coordinator().wait_worker_connected("w-offline").await;
    // Stop the schedule, then everything on disk must arrive exactly once.
    assert!(
        rig.cli
            .run(&["job", "halt", &job.to_string()])
            .unwrap()
            .success()
    );
    rig.wait_schedule_confirmed().await;
    let rows = rig.wait_catalog_matches_disk(job).await;
    assert!(rows.len() >= during.len(), "{rows:?}");
    assert_exactly_once_in_order(&rows);
    let statuses = rig
        .catalog
        .query(
            "postgres",
            &format!("SELECT string_agg(DISTINCT status, ',') FROM dumps WHERE job_id = {job}"),
        )
        .unwrap();
    assert_eq!(statuses, "SUCCEEDED");
    // Nothing is left in the outbox, and the catalog knows it.
    let w = wait::until(
        "the outbox backlog to reach 0",
        Duration::from_secs(30),
        || async {
            let w = rig.worker_json();
            (w["outbox_backlog"].as_u64() == Some(0)).then_some(w)
        },
    )
    .await;
    assert!(w["last_seen_at"].is_string(), "{w}");
    rig.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_upload_loses_and_duplicates_nothing() {
    let mut rig = Rig::start("w-kill").await;
    let job = rig.add_repeat_job();
    rig.wait_schedule_confirmed().await;
    rig.stop_coordinator_and_catalog().await;
    rig.wait_dumps_on_disk(6, "a backlog of dumps").await;
    // Upload one event per batch so that the kill lands mid-upload.
    let mut w = rig.worker.take().unwrap();
    w.process.stop_clean().await;
    rig.start_worker(&[("PGSNAPMAN_OUTBOX__MAX_BATCH", "1")]);
    rig.restart_coordinator_and_catalog().await;
    // As soon as the first events are applied, kill the worker.
    wait::until(
        "the first events to be applied",
        Duration::from_secs(60),
        || async { (!rig.catalog_rows(job).is_empty()).then_some(()) },
    )
    .await;
    rig.worker.as_mut().unwrap().process.kill9().await.unwrap();
    let applied_at_kill = rig.catalog_rows(job).len();
    rig.start_worker(&[("PGSNAPMAN_OUTBOX__MAX_BATCH", "1")]);
    assert!(
        rig.cli
            .run(&["job", "halt", &job.to_string()])
            .unwrap()
            .success()
    );
    rig.wait_schedule_confirmed().await;
    let rows = rig.wait_catalog_matches_disk(job).await;
    assert!(rows.len() >= applied_at_kill);
    assert_exactly_once_in_order(&rows);
    // Every DumpFinished applied is one row (the outbox also carries store
    // figures, so applied_events counts more than dump rows).
    let events: i64 = rig
        .catalog
        .query("postgres", "SELECT count(*) FROM applied_events")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        events as usize >= rows.len(),
        "{events} events, {} rows",
        rows.len()
    );
    rig.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_restarted_without_coordinator_resumes_from_its_mirror() {
    let mut rig = Rig::start("w-mirror").await;
    let job = rig.add_repeat_job();
    rig.wait_schedule_confirmed().await;
    rig.stop_coordinator_and_catalog().await;
    let mut w = rig.worker.take().unwrap();
    w.process.stop_clean().await;
    w.process.assert_no_unexpected_errors(&[]);
    let before = rig.dumps_on_disk().len();

    // Coordinator unreachable from the start: the mirror is all it has.
    rig.start_worker(&[]);
    rig.wait_dumps_on_disk(before + 2, "scheduled dumps from the mirror")
        .await;

    rig.restart_coordinator_and_catalog().await;
    assert!(
        rig.cli
            .run(&["job", "halt", &job.to_string()])
            .unwrap()
            .success()
    );
    rig.wait_schedule_confirmed().await;
    let rows = rig.wait_catalog_matches_disk(job).await;
    assert_exactly_once_in_order(&rows);
    rig.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_halted_while_worker_offline_stops_after_sync() {
    let mut rig = Rig::start("w-halt").await;
    let job = rig.add_repeat_job();
    rig.wait_schedule_confirmed().await;
    rig.wait_dumps_on_disk(1, "a first scheduled dump").await;
    let mut w = rig.worker.take().unwrap();
    w.process.stop_clean().await;

    // Halted while the worker is away.
    assert!(
        rig.cli
            .run(&["job", "halt", &job.to_string()])
            .unwrap()
            .success()
    );
    let halted_version = rig.worker_json()["schedule_version"].as_u64().unwrap();
    rig.start_worker(&[]);
    let confirmed = rig.wait_schedule_confirmed().await;
    assert!(confirmed >= halted_version);
    let at_sync = rig.dumps_on_disk().len();
    // Four fire times pass (8 s at clock speed 30). A dump that had already
    // started when the sync landed may still finish; nothing new starts.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = rig.dumps_on_disk().len();
    assert!(
        after <= at_sync + 1,
        "the halted job kept firing: {at_sync} → {after}"
    );
    rig.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_job_runs_once_despite_reconnects() {
    let mut rig = Rig::start("w-single").await;
    let inst = add_instance(&rig.cli, "src", rig.source.port, "w-single", None);
    let job = crate::link_faults::add_single_job(&rig.cli, inst, "app", EVERY_MINUTE);
    // The worker reconnects over and over (killed and restarted, and the
    // coordinator restarted) until well after the job's time has come.
    let deadline = std::time::Instant::now() + Duration::from_secs(75);
    let mut round = 0;
    while std::time::Instant::now() < deadline {
        round += 1;
        let mut w = rig.worker.take().unwrap();
        if round % 2 == 0 {
            w.process.kill9().await.unwrap();
        } else {
            w.process.stop_clean().await;
        }
        if round % 3 == 0 {
            let mut c = rig.coordinator.take().unwrap();
            c.process.stop_clean().await;
            rig.coordinator = Some(
                Coordinator::start(rig.coordinator_opts.clone())
                    .await
                    .unwrap(),
            );
        }
        rig.start_worker(&[]);
        rig.coordinator().wait_worker_connected("w-single").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let done = wait::until(
        "the SINGLE job's run to finish",
        Duration::from_secs(120),
        || async {
            let rows = catalog_of_job(&rig.cli, job);
            (!rows.is_empty()).then_some(rows)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rows = catalog_of_job(&rig.cli, job);
    assert_eq!(
        rows.len(),
        1,
        "a SINGLE job ran more than once: {rows:?} (first seen {done:?})"
    );
    assert_eq!(rows[0]["status"], "SUCCEEDED");
    let tasks = rig
        .cli
        .json(&["task", "list", "--job", &job.to_string()])
        .unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{tasks}");
    assert_eq!(
        rig.dumps_on_disk().len(),
        1,
        "the worker's own scheduler fired a SINGLE job"
    );
    rig.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_failures_become_filterable_messages() {
    let rig = Rig::start("w-msgs").await;
    let inst = add_instance(&rig.cli, "src", rig.source.port, "w-msgs", None);
    let bad = id_of(
        &rig.cli
            .json(&[
                "job",
                "add",
                "--instance",
                &inst.to_string(),
                "--database",
                "no_such_db",
                "--cron",
                EVERY_MINUTE,
            ])
            .unwrap(),
    );
    let msgs = wait::until(
        "a message about the failed scheduled dump",
        Duration::from_secs(60),
        || async {
            let m = rig
                .cli
                .json(&[
                    "messages",
                    "--job",
                    &bad.to_string(),
                    "--class",
                    "DUMP",
                    "--level",
                    "error",
                ])
                .ok()?;
            let list = m.as_array()?.clone();
            (!list.is_empty()).then_some(list)
        },
    )
    .await;
    let m = &msgs[0];
    assert_eq!(m["level"], "ERROR", "{m}");
    assert_eq!(m["class"], "DUMP");
    assert_eq!(m["job_id"].as_i64(), Some(bad));
    assert_eq!(m["worker_name"], "w-msgs");
    assert!(m["logged_at"].is_string());
    assert!(m["text"].as_str().unwrap().contains("no_such_db"), "{m}");
    // Filters narrow the list.
    let none = rig
        .cli
        .json(&["messages", "--job", &bad.to_string(), "--level", "critical"])
        .unwrap();
    assert!(none.as_array().unwrap().is_empty(), "{none}");
    let other = rig
        .cli
        .json(&["messages", "--worker", "w-msgs", "--class", "SCHEDULE"])
        .unwrap();
    assert!(other.as_array().unwrap().is_empty(), "{other}");
    // The failures are catalog rows too.
    let rows = catalog_of_job(&rig.cli, bad);
    assert!(rows.iter().all(|r| r["status"] == "FAILED"), "{rows:?}");
    assert!(
        rig.cli
            .run(&["job", "halt", &bad.to_string()])
            .unwrap()
            .success()
    );
    rig.stop_all().await;
}

/// Dump on demand (issue 6, item 5): scheduled runs skip until the source's
/// `pgsnapman.metainfo` asks for a dump, dump once, and reset the marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_on_demand_skips_then_dumps_as_the_marker_says() {
    let rig = Rig::start("w-demand").await;
    let inst = add_instance(&rig.cli, "src", rig.source.port, "w-demand", None);
    let job = id_of(
        &rig.cli
            .json(&[
                "job",
                "add",
                "--instance",
                &inst.to_string(),
                "--database",
                "app",
                "--cron",
                EVERY_MINUTE,
                "--on-demand",
            ])
            .unwrap(),
    );
    let skipped = |what: &'static str| {
        let cli = &rig.cli;
        async move {
            wait::until(what, Duration::from_secs(60), || async {
                let m = cli
                    .json(&["messages", "--job", &job.to_string(), "--class", "DUMP"])
                    .ok()?;
                let texts: Vec<String> = m
                    .as_array()?
                    .iter()
                    .filter_map(|m| m["text"].as_str().map(str::to_string))
                    .collect();
                texts.iter().any(|t| t.contains(what)).then_some(texts)
            })
            .await
        }
    };
    // No marker table: runs are skipped, with a message saying why.
    skipped("has no table pgsnapman.metainfo").await;
    assert!(rig.dumps_on_disk().is_empty());
    // The marker says NO: still skipped.
    rig.source
        .script(
            "app",
            "CREATE SCHEMA pgsnapman; CREATE TABLE pgsnapman.metainfo (key text PRIMARY KEY, val text);
             INSERT INTO pgsnapman.metainfo VALUES ('TAKE_BACKUP', 'NO');",
        )
        .unwrap();
    skipped("TAKE_BACKUP is NO").await;
    assert!(rig.dumps_on_disk().is_empty());
    // Asked for: exactly one dump, then the marker is back to NO.
    rig.source
        .script(
            "app",
            "UPDATE pgsnapman.metainfo SET val = 'YES' WHERE key = 'TAKE_BACKUP';",
        )
        .unwrap();
    rig.wait_dumps_on_disk(1, "the requested dump").await;
    wait::until(
        "the marker to be reset",
        Duration::from_secs(30),
        || async {
            let v = rig
                .source
                .query(
                    "app",
                    "SELECT val FROM pgsnapman.metainfo WHERE key = 'TAKE_BACKUP'",
                )
                .ok()?;
            (v == "NO").then_some(())
        },
    )
    .await;
    // Three more fire times pass without another dump.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(rig.dumps_on_disk().len(), 1);
    let rows = rig.wait_catalog_matches_disk(job).await;
    assert_eq!(rows.len(), 1);
    // An ad-hoc dump ignores the marker.
    let t = wait_task_done(&rig.cli, dump_now(&rig.cli, job)).await;
    assert_eq!(t["state"], "SUCCEEDED", "{t}");
    assert!(
        rig.cli
            .run(&["job", "halt", &job.to_string()])
            .unwrap()
            .success()
    );
    rig.stop_all().await;
}

/// Auto-discovery while the coordinator is down: the list the worker takes
/// at start waits in its outbox and adds the job once the coordinator is
/// back. With the default `discovery.interval` (1h) and an unchanged
/// schedule after the reconnect, that offline list is the only one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_listed_offline_reach_the_catalog() {
    let mut rig = Rig::start("w-disc-off").await;
    let inst = add_instance(&rig.cli, "src", rig.source.port, &rig.name, None).to_string();
    let on = ["--auto-discover", "true", "--discovered-status", "halted"];
    rig.cli
        .json(&[&["instance", "edit", &inst][..], &on[..]].concat())
        .unwrap();
    let databases = |cli: &Pgsnap| -> BTreeSet<String> {
        let jobs = cli.json(&["job", "list", "--instance", &inst]).unwrap();
        jobs.as_array()
            .unwrap()
            .iter()
            .map(|j| j["database"].as_str().unwrap().to_string())
            .collect()
    };
    wait::until(
        "jobs for app and postgres",
        Duration::from_secs(60),
        || async {
            let have = databases(&rig.cli);
            (have.len() == 2 && have.contains("app")).then_some(())
        },
    )
    .await;
    rig.wait_schedule_confirmed().await;
    rig.stop_coordinator_and_catalog().await;
    let mut w = rig.worker.take().unwrap();
    w.process.stop_clean().await;
    w.process.assert_no_unexpected_errors(&[]);

    rig.source.create_database("offline_db").unwrap();
    rig.start_worker(&[]);
    let log = rig
        .worker
        .as_ref()
        .unwrap()
        .process
        .log_path()
        .to_path_buf();
    wait::until("the offline list", Duration::from_secs(60), || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("databases listed").then_some(())
    })
    .await;

    rig.restart_coordinator_and_catalog().await;
    wait::until("the job of offline_db", Duration::from_secs(60), || async {
        databases(&rig.cli).contains("offline_db").then_some(())
    })
    .await;
    let listed = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        listed.matches("databases listed").count(),
        1,
        "only the offline list was taken"
    );
    rig.stop_all().await;
}
