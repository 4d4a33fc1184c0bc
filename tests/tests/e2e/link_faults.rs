//! Faults on the worker↔coordinator link, injected with the harness' TCP
//! proxy: the link cut for longer than the lease TTL right after a restore
//! (every policy that can destroy data) or a SINGLE dump finished, and
//! during a dump. Each ends with: nothing harmful ran twice, no catalog row
//! is missing or doubled, every complete dump restores.
use std::time::Duration;

use pgsnapman_tests::{
    Coordinator, CoordinatorOptions, PgCluster, Pgsnap, Proxy, Worker, WorkerOptions, wait,
};
use serde_json::Value;

use crate::common::*;

/// Long enough for the rest of a small restore or dump to finish after the
/// link is cut (the worker cancels a task at its lease's end), short enough
/// for a test.
const TTL: &str = "12s";

pub struct Rig {
    pub catalog: PgCluster,
    pub coordinator: Coordinator,
    pub coordinator_opts: CoordinatorOptions,
    /// Between the worker and the coordinator.
    pub link: Proxy,
    pub worker: Worker,
    pub source: PgCluster,
    pub cli: Pgsnap,
    pub name: String,
    pub worker_env: Vec<(String, String)>,
    /// Holds the worker's data directory (`worker`) and scratch space.
    pub scratch: tempfile::TempDir,
}

impl Rig {
    pub async fn start(name: &str, worker_env: &[(&str, &str)]) -> Rig {
        let catalog = PgCluster::start(PG_MAJOR).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let coordinator_opts = CoordinatorOptions {
            catalog_url: Some(catalog.url("postgres")),
            listen: Some(format!("127.0.0.1:{port}")),
            env: vec![("PGSNAPMAN_LEASE__TTL".into(), TTL.into())],
            ..Default::default()
        };
        let coordinator = Coordinator::start(coordinator_opts.clone()).await.unwrap();
        let cli = coordinator.cli();
        register_worker(&cli, name);
        let link = Proxy::to(&coordinator.addr).await.unwrap();
        let scratch = pgsnapman_tests::shared_tempdir("pgsnapman-faults-");
        let worker_env: Vec<(String, String)> = worker_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let worker = Worker::start(WorkerOptions {
            name: name.into(),
            coordinator: coordinator.access().with_url(link.url()),
            data_dir: Some(scratch.path().join("worker")),
            env: worker_env.clone(),
        })
        .unwrap();
        coordinator.wait_worker_connected(name).await;
        let source = PgCluster::start(PG_MAJOR).unwrap();
        source.create_database("app").unwrap();
        source
            .script(
                "app",
                "CREATE TABLE t (id int PRIMARY KEY, note text); \
                 INSERT INTO t SELECT g, 'dumped' FROM generate_series(1, 500) g;",
            )
            .unwrap();
        Rig {
            catalog,
            coordinator,
            coordinator_opts,
            link,
            worker,
            source,
            cli,
            name: name.into(),
            worker_env,
            scratch,
        }
    }

    /// Stops the worker, appends `bodies` to its outbox (as the worker
    /// would have, e.g. while its link was down) and starts it again.
    pub async fn restart_worker_with(&mut self, bodies: Vec<pgsnapman_proto::v1::event::Body>) {
        self.worker.process.stop_clean().await;
        {
            // Closed (both handles dropped) before the worker opens it.
            let state = self.worker.data_dir.join("state");
            let state = pgsnapman_worker::state::State::open(&state).unwrap();
            let outbox = pgsnapman_worker::outbox::Outbox::open(&state).unwrap();
            for chunk in bodies.chunks(1000) {
                outbox.append_all(chunk.to_vec()).unwrap();
            }
        }
        self.worker = Worker::start(WorkerOptions {
            name: self.name.clone(),
            coordinator: self.coordinator.access().with_url(self.link.url()),
            data_dir: Some(self.worker.data_dir.clone()),
            env: self.worker_env.clone(),
        })
        .unwrap();
    }

    /// One value from the catalog database.
    pub fn catalog_value(&self, sql: &str) -> String {
        self.catalog.query("postgres", sql).unwrap()
    }

    /// Waits until the reaper has queued the task again after its lease
    /// expired (the link being down).
    pub async fn wait_requeued(&self, task: i64) {
        wait::until(
            &format!("task {task} to be queued again"),
            Duration::from_secs(90),
            || async {
                let s = self
                    .catalog
                    .query(
                        "postgres",
                        &format!("SELECT state FROM tasks WHERE id = {task}"),
                    )
                    .ok()?;
                (s == "QUEUED").then_some(())
            },
        )
        .await;
    }

    /// The restore run of a RESTORE task.
    pub fn run_of(&self, task: i64) -> i64 {
        self.catalog_value(&format!(
            "SELECT restore_run_id FROM tasks WHERE id = {task}"
        ))
        .parse()
        .unwrap()
    }

    pub async fn wait_connected(&self) {
        self.coordinator.wait_worker_connected(&self.name).await;
    }

    pub fn task(&self, task: i64) -> Value {
        self.cli.json(&["task", "show", &task.to_string()]).unwrap()
    }

    /// Every catalog row of `job` is complete: it restores with pg_restore
    /// into a fresh database and holds the dumped rows.
    pub fn assert_dumps_restore(&self, job: i64) {
        for (i, row) in catalog_of_job(&self.cli, job).iter().enumerate() {
            assert_eq!(row["status"], "SUCCEEDED", "{row}");
            let full = self
                .cli
                .json(&["catalog", "show", &id_of(row).to_string()])
                .unwrap();
            let archive = extract_dump(&self.worker, &full, self.scratch.path());
            let db = format!("check_{job}_{i}");
            self.source.create_database(&db).unwrap();
            pg_restore(&self.source, &db, &archive.to_string_lossy());
            let n = self
                .source
                .query(&db, "SELECT count(*) FROM t WHERE note = 'dumped'")
                .unwrap();
            assert_eq!(n, "500", "dump {} restores whole", full["dump_uuid"]);
        }
    }

    /// How many times the restore of `run` started, by its log.
    pub fn restore_starts(&self, run: i64) -> usize {
        let log = self
            .cli
            .json(&["restore-log", "show", &run.to_string()])
            .unwrap();
        assert_eq!(log["run"]["status"], "SUCCEEDED", "{log}");
        log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| {
                l["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("restoring dump"))
            })
            .count()
    }

    pub async fn stop(mut self, allowed: &[&str]) {
        self.worker.process.stop_clean().await;
        self.coordinator.process.stop_clean().await;
        self.worker.process.assert_no_unexpected_errors(allowed);
        self.coordinator
            .process
            .assert_no_unexpected_errors(allowed);
    }
}

/// Adds a SINGLE dump job of `database` whose one run comes at `cron`'s
/// first fire; returns its id.
pub fn add_single_job(cli: &Pgsnap, instance: i64, database: &str, cron: &str) -> i64 {
    let v = cli
        .json(&[
            "job",
            "add",
            "--instance",
            &instance.to_string(),
            "--database",
            database,
            "--cron",
            cron,
            "--single",
        ])
        .unwrap();
    assert_eq!(v["kind"], "SINGLE");
    id_of(&v)
}

/// `SELECT count(*) FROM t WHERE note = …` in `db` of `cluster`.
fn notes(cluster: &PgCluster, db: &str, note: &str) -> String {
    cluster
        .query(db, &format!("SELECT count(*) FROM t WHERE note = '{note}'"))
        .unwrap_or_else(|e| format!("{e:#}"))
}

/// For each policy that can destroy data: the restore finishes while the
/// link is down, the link stays down until the task's lease expired and the
/// task was queued again; when the link is back the result is uploaded
/// before any new lease, so the restore ran exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_runs_once_when_its_result_waits_out_the_lease() {
    let rig = Rig::start("w-restore-once", &[]).await;
    let target = PgCluster::start(PG_MAJOR).unwrap();
    // The worker reaches the target through a proxy too, so that the
    // restore can be held until the coordinator link is cut.
    let to_target = Proxy::start(format!("127.0.0.1:{}", target.port).parse().unwrap())
        .await
        .unwrap();
    let src = add_instance(&rig.cli, "src", rig.source.port, &rig.name, None);
    let dst = add_instance(&rig.cli, "dst", to_target.port(), &rig.name, None);
    let job = add_job(&rig.cli, src, "app");
    let dump = id_of(&dump_and_show(&rig.cli, job));

    let mut last = (0, String::new());
    for (policy, data_only) in [
        ("rename", false),
        ("drop", false),
        ("drop-before", false),
        ("truncate", true),
    ] {
        let db = format!("copy_{}", policy.replace('-', "_"));
        target.create_database(&db).unwrap();
        target
            .script(
                &db,
                "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t VALUES (0, 'original');",
            )
            .unwrap();
        // Hold the restore's first connection to the target.
        to_target.blackhole();
        let held = to_target.accepted();
        let dump_id = dump.to_string();
        let instance = dst.to_string();
        let mut args = vec![
            "restore",
            "now",
            "--dump",
            &dump_id,
            "--to-instance",
            &instance,
            "--to-database",
            &db,
            "--existing",
            policy,
        ];
        if data_only {
            args.extend(["--restore-type", "data"]);
        }
        let task = id_of(&rig.cli.json(&args).unwrap());
        wait::until(
            "the restore to reach the target",
            Duration::from_secs(60),
            || async { (to_target.accepted() > held).then_some(()) },
        )
        .await;
        // Cut the coordinator link, then let the restore finish.
        rig.link.cut();
        to_target.restore();
        wait::until(
            &format!("the {policy} restore to finish"),
            Duration::from_secs(60),
            || async { (notes(&target, &db, "dumped") == "500").then_some(()) },
        )
        .await;
        // Written after the restore: lost if it ran a second time.
        target
            .query(&db, "INSERT INTO t VALUES (-1, 'after')")
            .unwrap();
        rig.wait_requeued(task).await;
        rig.link.restore();
        let done = wait_task_done(&rig.cli, task).await;
        assert_eq!(done["state"], "SUCCEEDED", "{policy}: {done}");
        assert_eq!(done["attempts"], 1, "{policy}: leased again: {done}");
        // The worker is still connected and has asked for work since.
        rig.wait_connected().await;
        assert_eq!(notes(&target, &db, "after"), "1", "{policy} ran twice");
        assert_eq!(notes(&target, &db, "dumped"), "500");
        if policy == "rename" {
            let backup = format!("{db}_pgsnapman_bak");
            assert_eq!(
                notes(&target, &backup, "original"),
                "1",
                "the backup holds the original database"
            );
        }
        assert_eq!(rig.restore_starts(rig.run_of(task)), 1, "{policy}");
        last = (task, db);
    }

    // Should the coordinator hand out a finished task again anyway, the
    // worker remembers it: it reports the result again and runs nothing.
    let (task, db) = last;
    rig.catalog_value(&format!(
        "UPDATE tasks SET state = 'QUEUED', finished_at = NULL WHERE id = {task} RETURNING id"
    ));
    let again = wait::until(
        "the finished task to be reported again",
        Duration::from_secs(60),
        || async {
            let t = rig.task(task);
            (t["state"] == "SUCCEEDED" && t["attempts"] == 2).then_some(t)
        },
    )
    .await;
    assert_eq!(notes(&target, &db, "after"), "1", "ran again: {again}");
    assert_eq!(rig.restore_starts(rig.run_of(task)), 1);
    rig.stop(&[]).await;
}

/// A SINGLE dump job's task: the dump finishes while the link is down, the
/// task is queued again; one dump in the catalog and in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_dump_runs_once_when_its_result_waits_out_the_lease() {
    let rig = Rig::start("w-single-once", &[]).await;
    let inst = add_instance(&rig.cli, "src", rig.source.port, &rig.name, None);
    let lock = TableLock::hold(&rig.source, "app", "t").await;
    let job = add_single_job(&rig.cli, inst, "app", "* * * * *");
    // Its time comes within a minute; the dump then waits for the lock.
    let task: i64 = wait::until(
        "the SINGLE job's task to be queued",
        Duration::from_secs(120),
        || async {
            rig.catalog_value(&format!("SELECT id FROM tasks WHERE job_id = {job}"))
                .parse()
                .ok()
        },
    )
    .await;
    TableLock::wait_dump_blocked(&rig.source).await;
    rig.link.cut();
    drop(lock);
    wait::until("the dump to be stored", Duration::from_secs(60), || async {
        (rig.worker.stored_dumps().ok()?.len() == 1).then_some(())
    })
    .await;
    rig.wait_requeued(task).await;
    rig.link.restore();
    let done = wait_task_done(&rig.cli, task).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["attempts"], 1, "leased again: {done}");
    rig.wait_connected().await;
    let rows = catalog_of_job(&rig.cli, job);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rig.worker.stored_dumps().unwrap().len(), 1);
    rig.assert_dumps_restore(job);
    rig.stop(&[]).await;
}

/// The link is down longer than the lease TTL while a dump runs: the worker
/// cancels it, the task runs again when the link is back, and exactly one
/// dump is recorded and stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_cut_off_by_a_long_link_outage_is_recorded_once() {
    let rig = Rig::start("w-dump-cut", &[]).await;
    let inst = add_instance(&rig.cli, "src", rig.source.port, &rig.name, None);
    let job = add_job(&rig.cli, inst, "app");
    let lock = TableLock::hold(&rig.source, "app", "t").await;
    let task = dump_now(&rig.cli, job);
    TableLock::wait_dump_blocked(&rig.source).await;
    rig.link.blackhole();
    rig.wait_requeued(task).await;
    rig.link.restore();
    // Leased again once the worker is back; it waits for the lock again.
    wait::until(
        "the task to be leased again",
        Duration::from_secs(60),
        || async { (rig.task(task)["attempts"] == 2).then_some(()) },
    )
    .await;
    drop(lock);
    let done = wait_task_done(&rig.cli, task).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let rows = catalog_of_job(&rig.cli, job);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rig.worker.stored_dumps().unwrap().len(), 1);
    rig.assert_dumps_restore(job);
    rig.stop(&[]).await;
}
