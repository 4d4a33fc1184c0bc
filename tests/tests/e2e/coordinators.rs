//! Two coordinators on one external catalog, four workers configured with
//! both URLs (`coordinator.urls`). While they lease, dump (dump-now tasks and
//! scheduled runs on a fast test clock) and upload events, one coordinator
//! is killed with SIGKILL: every task runs exactly once, every dump reaches
//! the catalog exactly once, the workers move to the survivor, and `pgsnap`
//! given both URLs works while the first is dead (docs/coordinators.md).
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pgsnapman_tests::{
    Coordinator, CoordinatorOptions, PgCluster, Pgsnap, PkiSource, Worker, WorkerOptions, wait,
};

use crate::common::*;

/// Names whose FNV-1a hash puts w-ha-1 and w-ha-3 first on the first URL,
/// w-ha-2 and w-ha-4 on the second (`worker/src/agent/failover.rs`).
const WORKERS: [&str; 4] = ["w-ha-1", "w-ha-2", "w-ha-3", "w-ha-4"];
/// Dump-now tasks per worker queued before the kill, and after it.
const TASKS_BEFORE: usize = 3;
const TASKS_AFTER: usize = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_coordinators_loses_and_repeats_nothing() {
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let source = PgCluster::start(PG_MAJOR).unwrap();
    source.create_database("small").unwrap();
    source
        .script(
            "small",
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 2000) g;",
        )
        .unwrap();
    let opts = CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        pki: PkiSource::Own,
        ..Default::default()
    };
    let mut a = Coordinator::start(opts.clone()).await.unwrap();
    // One CA for both (docs/coordinators.md): b starts with a copy of a's.
    let mut b = Coordinator::start(CoordinatorOptions {
        pki: PkiSource::From(a.data_dir.clone()),
        ..opts
    })
    .await
    .unwrap();
    let both = a.access().with_url(format!("{},{}", a.url(), b.url()));
    let cli = Pgsnap::new(both.clone());
    let cli_b = Pgsnap::new(a.access().with_url(b.url()));

    let mut jobs = BTreeMap::new();
    let mut instances = Vec::new();
    for name in WORKERS {
        register_worker(&cli, name);
        let inst = add_instance(&cli, &format!("src-{name}"), source.port, name, None);
        instances.push(inst);
        jobs.insert(name, add_job(&cli, inst, "small"));
        // Every 5 simulated minutes: every 5 s at clock speed 60.
        let scheduled = [
            "job",
            "add",
            "--instance",
            &inst.to_string(),
            "--database",
            "small",
            "--cron",
            "*/5 * * * *",
        ];
        cli.json(&scheduled).expect("add a scheduled job");
    }
    let urls = format!("{},{}", a.url(), b.url());
    let mut workers: Vec<Worker> = WORKERS
        .iter()
        .map(|name| {
            Worker::start(WorkerOptions {
                name: name.to_string(),
                coordinator: a.access(),
                env: vec![
                    ("PGSNAPMAN_COORDINATOR__URLS".into(), urls.clone()),
                    ("PGSNAPMAN_SCHEDULER__CLOCK_SPEED".into(), "60".into()),
                ],
                ..Default::default()
            })
            .unwrap()
        })
        .collect();
    for name in WORKERS {
        b.wait_worker_connected(name).await;
    }
    // The name hash spread them: two hold their lease stream on a.
    let on_a = |w: &Worker| lease_streams_on(w, &a.addr);
    wait::until(
        "w-ha-1 and w-ha-3 to open their lease stream on a",
        Duration::from_secs(60),
        || async { (on_a(&workers[0]) > 0 && on_a(&workers[2]) > 0).then_some(()) },
    )
    .await;

    // The schedule fires (every 5 s of real time) before the kill, so
    // scheduled uploads are under way on both sides of it.
    let before_kill = wait_scheduled_dumps(&catalog, 1).await;

    let mut tasks = BTreeSet::new();
    for round in 0..TASKS_BEFORE {
        for name in WORKERS {
            // Alternate: pgsnap with both URLs lands on a; b directly.
            let via = if round % 2 == 0 { &cli } else { &cli_b };
            tasks.insert(dump_now(via, jobs[name]));
        }
    }
    // While those are leased and running, and scheduled dumps upload.
    a.process.kill9().await.unwrap();

    // pgsnap given both URLs moves past the dead one.
    for _ in 0..TASKS_AFTER {
        for name in WORKERS {
            tasks.insert(dump_now(&cli, jobs[name]));
        }
    }
    assert_eq!(tasks.len(), WORKERS.len() * (TASKS_BEFORE + TASKS_AFTER));
    for &t in &tasks {
        let done = wait_task_done(&cli_b, t).await;
        assert_eq!(done["state"], "SUCCEEDED", "{done}");
    }
    // Those that were on a reconnected to the survivor and lease there.
    for w in &workers {
        b.wait_worker_connected(&w.name).await;
        assert!(
            lease_streams_on(w, &b.addr) > 0,
            "{} has no lease stream on the survivor",
            w.name
        );
    }

    // Scheduled runs after the kill reach the catalog through the survivor.
    wait_scheduled_dumps(&catalog, before_kill + 1).await;

    // Stop the scheduled runs, then let the outboxes drain.
    for inst in &instances {
        cli.json(&["instance", "halt", &inst.to_string()])
            .expect("halt instance");
    }
    for name in WORKERS {
        wait_schedule_confirmed(&cli_b, name).await;
    }
    let stored = wait::until(
        "every stored dump to be in the catalog, twice in a row",
        Duration::from_secs(120),
        || {
            let workers = &workers;
            let catalog = &catalog;
            async move {
                let first = stores_and_catalog(workers, catalog);
                tokio::time::sleep(Duration::from_secs(2)).await;
                let second = stores_and_catalog(workers, catalog);
                (first == second && first.0 == first.1).then_some(first.0)
            }
        },
    )
    .await;
    // Each dump is in exactly one store (sum of the stores = their union)…
    let total: usize = workers
        .iter()
        .map(|w| dumps_on_disk(&w.data_dir).len())
        .sum();
    assert_eq!(total, stored.len(), "a dump is in two stores");
    // …and each task made exactly one dump.
    let per_task = catalog
        .query(
            "postgres",
            "SELECT task_id || ':' || count(*) FROM dumps WHERE task_id IS NOT NULL GROUP BY task_id",
        )
        .unwrap();
    let per_task: BTreeMap<i64, i64> = per_task
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(t, n)| (t.parse().unwrap(), n.parse().unwrap()))
        .collect();
    assert_eq!(per_task.keys().copied().collect::<BTreeSet<_>>(), tasks);
    assert!(per_task.values().all(|&n| n == 1), "{per_task:?}");
    let scheduled = stored.len() - tasks.len();
    assert!(scheduled > 0, "no scheduled dump ran during the test");
    // Every applied event is recorded once per (worker, event id).
    let dup_events = catalog
        .query(
            "postgres",
            "SELECT count(*) FROM (SELECT event_id FROM applied_events GROUP BY event_id HAVING count(*) > 1) d",
        )
        .unwrap();
    assert_eq!(dup_events, "0");

    for w in &mut workers {
        w.process.stop_clean().await;
    }
    b.process.stop_clean().await;
    b.process.assert_no_unexpected_errors(&[]);
    for w in &workers {
        w.process.assert_no_unexpected_errors(&[]);
    }
}

/// Waits until the catalog holds at least `n` scheduled dumps (no task);
/// returns how many it holds.
async fn wait_scheduled_dumps(catalog: &PgCluster, n: usize) -> usize {
    wait::until(
        &format!("{n} scheduled dump(s) in the catalog"),
        Duration::from_secs(90),
        || async move {
            let count: usize = catalog
                .query(
                    "postgres",
                    "SELECT count(*) FROM dumps WHERE task_id IS NULL AND status = 'SUCCEEDED'",
                )
                .ok()?
                .trim()
                .parse()
                .ok()?;
            (count >= n).then_some(count)
        },
    )
    .await
}

/// Lease streams the worker opened on the coordinator at `addr` (its log).
fn lease_streams_on(w: &Worker, addr: &str) -> usize {
    let log = std::fs::read_to_string(w.process.log_path()).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("lease stream open") && l.contains(addr))
        .count()
}

/// (dumps in the workers' stores, dumps in the catalog) by uuid.
fn stores_and_catalog(
    workers: &[Worker],
    catalog: &PgCluster,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let stored = workers
        .iter()
        .flat_map(|w| dumps_on_disk(&w.data_dir))
        .collect();
    let rows = catalog
        .query("postgres", "SELECT dump_uuid FROM dumps")
        .unwrap_or_default();
    let in_catalog = rows.lines().map(str::to_string).collect();
    (stored, in_catalog)
}

/// The fleet load generator (`tests/src/bin/fleet.rs`, issue 16 item 5) at
/// N = 5, so that it cannot rot: five enrolled workers sync 3 jobs each,
/// lease and complete 10 tasks and upload 20 events each, against a real
/// coordinator with an embedded catalog. Figures are printed, not judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_load_generator_runs_a_small_fleet() {
    let out = tokio::process::Command::new(pgsnapman_tests::binary("fleet"))
        .args(["5", "3", "10", "20"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fleet failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("fleet N=5 jobs/worker=3 (15 jobs)")
            && stdout.contains("(10 DumpNow tasks;")
            && stdout.contains("(100 events)"),
        "{stdout}"
    );
}
