//! Auto-discovery: the instance's default worker lists its databases and the
//! coordinator adds a job for each new one at a minute inside the backup
//! window; a dropped database yields one WARNING and its job is kept; one
//! that comes back clears that memory; templates and databases that refuse
//! connections get no job.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pgsnapman_tests::cluster::quote_ident;
use pgsnapman_tests::{PgCluster, PgOptions, Pgsnap, wait};
use serde_json::Value;

use crate::common::*;

const SECRET: &str = "disc0very-Pass:word";
const ODD: &str = "My \"odd\" db.ünï 'x'";

/// The instance's jobs by database.
fn jobs_by_database(cli: &Pgsnap, instance: i64) -> BTreeMap<String, Value> {
    let v = cli
        .json(&["job", "list", "--instance", &instance.to_string()])
        .expect("job list");
    v.as_array()
        .unwrap()
        .iter()
        .map(|j| (j["database"].as_str().unwrap().to_string(), j.clone()))
        .collect()
}

/// Texts of the DISCOVERY messages at `level` or above.
fn discovery_messages(cli: &Pgsnap, level: &str) -> Vec<String> {
    let v = cli
        .json(&[
            "messages",
            "--class",
            "DISCOVERY",
            "--level",
            level,
            "--limit",
            "1000",
        ])
        .expect("messages");
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the instance's jobs cover exactly `databases`.
async fn wait_jobs(
    cli: &Pgsnap,
    instance: i64,
    databases: &BTreeSet<&str>,
) -> BTreeMap<String, Value> {
    wait::until(
        &format!("jobs for {databases:?}"),
        Duration::from_secs(60),
        || async {
            let jobs = jobs_by_database(cli, instance);
            let have: BTreeSet<&str> = jobs.keys().map(String::as_str).collect();
            (have == *databases).then_some(jobs)
        },
    )
    .await
}

/// Waits until `n` WARNING messages name `database` as gone.
async fn wait_gone_warnings(cli: &Pgsnap, database: &str, n: usize) -> Vec<String> {
    let needle = format!("database {database:?} on ");
    wait::until(
        &format!("{n} warning(s) that {database:?} is gone"),
        Duration::from_secs(60),
        || async {
            let hits: Vec<String> = discovery_messages(cli, "warning")
                .into_iter()
                .filter(|t| t.contains(&needle) && t.contains("no longer listed"))
                .collect();
            (hits.len() >= n).then_some(hits)
        },
    )
    .await
}

/// Waits until the worker has mirrored its current schedule.
async fn wait_schedule_confirmed(cli: &Pgsnap, worker: &str) {
    wait::until(
        "the schedule to be confirmed",
        Duration::from_secs(30),
        || async {
            let w = cli.json(&["worker", "show", worker]).ok()?;
            (w["confirmed_schedule_version"] == w["schedule_version"]).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_adds_spread_jobs_and_reports_dropped_databases() {
    let stack = Stack::start_with("w-disc", &[("PGSNAPMAN_DISCOVERY__INTERVAL", "1s")], None).await;
    let mut opts = PgOptions::new(PG_MAJOR);
    opts.superuser_password = Some(SECRET.to_string());
    let source = PgCluster::start_with(opts).unwrap();
    let plain = ["shop", "crm", "analytics", "reports", "billing"];
    for db in plain.iter().chain([&ODD]) {
        source.create_database(db).unwrap();
    }
    source
        .script(
            "postgres",
            "CREATE DATABASE tmpl IS_TEMPLATE true;\n\
             CREATE DATABASE closed ALLOW_CONNECTIONS false;\n",
        )
        .unwrap();

    // Discovery needs the default worker; the window is checked.
    let port = source.port.to_string();
    let base = [
        "instance",
        "add",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--user",
        "postgres",
    ];
    let run = stack
        .cli
        .run(&[&base[..], &["--name", "x", "--auto-discover"]].concat())
        .unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--worker"), "{run:?}");
    let run = stack
        .cli
        .run(
            &[
                &base[..],
                &[
                    "--name",
                    "x",
                    "--worker",
                    "w-disc",
                    "--backup-window",
                    "22-24",
                ],
            ]
            .concat(),
        )
        .unwrap();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("0-23"), "{run:?}");

    let args = [
        &base[..],
        &[
            "--name",
            "disc",
            "--worker",
            "w-disc",
            "--password-stdin",
            "--auto-discover",
            "--backup-window",
            "22-4",
            "--discovered-status",
            "halted",
            "--discovered-keep-daily",
            "7",
        ],
    ]
    .concat();
    let inst = stack
        .cli
        .json_with_stdin(&args, &format!("{SECRET}\n"))
        .unwrap();
    assert_eq!(inst["auto_discover"], true, "{inst}");
    assert_eq!(inst["backup_window_start"], 22);
    assert_eq!(inst["backup_window_end"], 4);
    assert_eq!(inst["discovered_status"], "HALTED");
    assert_eq!(inst["discovered_retention"]["keep_daily"], 7);
    assert_eq!(inst["discovered_retention"]["keep_weekly"], 2);
    let inst = id_of(&inst);
    let shown = stack
        .cli
        .run(&["instance", "show", &inst.to_string()])
        .unwrap();
    assert!(shown.stdout.contains("22:00-04:00"), "{shown:?}");

    // Every connectable, non-template database gets one job, spread over the
    // window (22:00 to 03:59).
    let mut expected: BTreeSet<&str> = plain.iter().copied().collect();
    expected.extend(["postgres", ODD]);
    let jobs = wait_jobs(&stack.cli, inst, &expected).await;
    let worker = stack.cli.json(&["worker", "show", "w-disc"]).unwrap();
    let mut crons = BTreeSet::new();
    for (db, j) in &jobs {
        assert_eq!(j["dump_type"], "FULL", "{db}: {j}");
        assert_eq!(j["format"], "CUSTOM", "{db}: {j}");
        assert_eq!(j["kind"], "REPEAT", "{db}: {j}");
        assert_eq!(j["status"], "HALTED", "{db}: {j}");
        assert_eq!(j["comment"], "auto-discovered", "{db}: {j}");
        assert_eq!(j["worker_id"], worker["id"], "{db}: {j}");
        assert_eq!(j["retention"]["keep_daily"], 7, "{db}: {j}");
        assert_eq!(j["retention"]["keep_monthly"], 5, "{db}: {j}");
        let cron = j["cron"].as_str().unwrap();
        let f: Vec<&str> = cron.split(' ').collect();
        assert_eq!(f[2..], ["*", "*", "*"], "{db}: daily cron {cron}");
        let minute: u32 = f[0].parse().unwrap();
        let hour: u32 = f[1].parse().unwrap();
        assert!(
            minute < 60 && !(4..22).contains(&hour),
            "{db}: {cron} outside 22-4"
        );
        crons.insert(cron.to_string());
    }
    assert_eq!(
        crons.len(),
        jobs.len(),
        "every database its own minute: {crons:?}"
    );
    // Seven databases over six hours: every hour of the window is used.
    let hours: BTreeSet<u32> = crons
        .iter()
        .map(|c| c.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(hours, BTreeSet::from([0, 1, 2, 3, 22, 23]), "{crons:?}");
    let added = discovery_messages(&stack.cli, "info");
    assert_eq!(
        added
            .iter()
            .filter(|t| t.contains("discovered: added FULL job"))
            .count(),
        expected.len(),
        "{added:#?}"
    );
    assert!(
        added.iter().any(|t| t.contains(&format!("{ODD:?}"))),
        "{added:#?}"
    );

    // The worker mirrors the jobs it was given.
    wait_schedule_confirmed(&stack.cli, "w-disc").await;

    // Dropped databases: one WARNING each, naming it; the jobs stay.
    source.query("postgres", "DROP DATABASE crm").unwrap();
    source
        .query("postgres", &format!("DROP DATABASE {}", quote_ident(ODD)))
        .unwrap();
    let gone = wait_gone_warnings(&stack.cli, "crm", 1).await;
    assert!(gone[0].contains(&jobs["crm"]["id"].to_string()), "{gone:?}");
    wait_gone_warnings(&stack.cli, ODD, 1).await;
    // A database created afterwards shows that later lists were applied...
    source.create_database("late").unwrap();
    expected.insert("late");
    let jobs_now = wait_jobs(&stack.cli, inst, &expected).await;
    assert_eq!(jobs_now["crm"]["id"], jobs["crm"]["id"], "the job is kept");
    assert_eq!(jobs_now[ODD]["id"], jobs[ODD]["id"], "the job is kept");
    // ... without repeating the warnings.
    assert_eq!(wait_gone_warnings(&stack.cli, "crm", 1).await.len(), 1);
    assert_eq!(wait_gone_warnings(&stack.cli, ODD, 1).await.len(), 1);

    // Back again: noted, no second job; gone again: warned again.
    source.create_database("crm").unwrap();
    wait::until(
        "crm to be listed again",
        Duration::from_secs(60),
        || async {
            discovery_messages(&stack.cli, "info")
                .iter()
                .any(|t| t.contains("database \"crm\" on ") && t.contains("listed again"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(jobs_by_database(&stack.cli, inst).len(), expected.len());
    source.query("postgres", "DROP DATABASE crm").unwrap();
    wait_gone_warnings(&stack.cli, "crm", 2).await;

    // Off: a new database gets no job.
    let i = inst.to_string();
    let off = stack
        .cli
        .json(&["instance", "edit", &i, "--auto-discover", "false"])
        .unwrap();
    assert_eq!(off["auto_discover"], false, "{off}");
    source.create_database("after_off").unwrap();
    // A sanity check only: nothing shows when the worker last listed, so
    // this waits for it to mirror the change (it stops listing) and looks.
    wait_schedule_confirmed(&stack.cli, "w-disc").await;
    assert!(!jobs_by_database(&stack.cli, inst).contains_key("after_off"));

    for log in [
        stack.worker.process.log_path(),
        stack.coordinator.process.log_path(),
    ] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains(SECRET), "password in {}", log.display());
    }
    let psql_args: Vec<(u32, String)> = process_command_lines()
        .into_iter()
        .filter(|(_, c)| c.contains(SECRET))
        .collect();
    assert!(psql_args.is_empty(), "password in argv: {psql_args:?}");
    stack.stop_clean(&[]).await;
}
