//! A server of 1,000 databases with auto-discovery on: every one gets a job
//! and nothing errors. The names are 63 bytes long, so the listing (about
//! 66 KB of JSON) is longer than any 64 KiB output buffer. The databases
//! live in a tablespace on a tmpfs (so the test needs root): 1,000 copies of
//! template0 are 7 GB, which took 128 s to create and 174 s to delete on
//! this machine's disk, and take 20 s in memory.
use std::collections::BTreeSet;
use std::time::Duration;

use pgsnapman_tests::cluster::quote_ident;
use pgsnapman_tests::tmpfs::Tmpfs;
use pgsnapman_tests::{Pgsnap, wait};

use super::{database_names, timed, took};
use crate::common::*;

const DATABASES: usize = 1_000;

/// `tenant_0042_xxx…`: exactly 63 bytes.
fn name(i: usize) -> String {
    format!("tenant_{i:04}_{}", "x".repeat(63 - 12))
}

/// DISCOVERY messages at WARNING or above.
fn discovery_warnings(cli: &Pgsnap) -> Vec<String> {
    let v = cli
        .json(&["messages", "--class", "DISCOVERY", "--level", "warning"])
        .expect("messages");
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_gives_each_of_1000_databases_a_job() {
    let started = std::time::Instant::now();
    // Before the stack: unmounted after the cluster has stopped.
    let tmpfs = Tmpfs::mount(9_000).unwrap();
    let stack = Stack::start("w-dbs").await;
    let space = tmpfs.subdir("tablespace").unwrap();
    give_to_cluster_user(&space);
    stack
        .source
        .query(
            "postgres",
            &format!("CREATE TABLESPACE mem LOCATION '{}'", space.display()),
        )
        .unwrap();
    // One psql session; FILE_COPY copies template0's files instead of
    // writing them through the WAL (three times faster here, fsync is off).
    let strategy = if PG_MAJOR >= 15 {
        " STRATEGY FILE_COPY"
    } else {
        ""
    };
    let script: String = (0..DATABASES)
        .map(|i| {
            format!(
                "CREATE DATABASE {} TEMPLATE template0 TABLESPACE mem{strategy};\n",
                quote_ident(&name(i))
            )
        })
        .collect();
    timed("create 1000 databases", || {
        stack.source.script("postgres", &script).unwrap()
    });
    let listed = database_names(&stack.source);
    assert_eq!(listed.len(), DATABASES + 3, "and postgres, template0/1");

    let inst = add_instance(&stack.cli, "many", stack.source.port, "w-dbs", None).to_string();
    let on = stack
        .cli
        .json(&[
            "instance",
            "edit",
            &inst,
            "--auto-discover",
            "true",
            "--discovered-status",
            "halted",
        ])
        .unwrap();
    assert_eq!(on["auto_discover"], true, "{on}");
    let mut expected: BTreeSet<String> = (0..DATABASES).map(name).collect();
    expected.insert("postgres".into());
    let discovering = std::time::Instant::now();
    let jobs = wait::until(
        "a job for every database",
        Duration::from_secs(240),
        || async {
            let warnings = discovery_warnings(&stack.cli);
            assert!(warnings.is_empty(), "discovery failed: {warnings:?}");
            let jobs = stack.cli.json(&["job", "list", "--instance", &inst]).ok()?;
            let jobs = jobs.as_array()?.clone();
            (jobs.len() >= expected.len()).then_some(jobs)
        },
    )
    .await;
    took("discover 1000 databases", discovering);
    let have: BTreeSet<String> = jobs
        .iter()
        .map(|j| j["database"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(have, expected);
    assert_eq!(jobs.len(), expected.len(), "one job per database");
    assert!(jobs.iter().all(|j| j["status"] == "HALTED"));
    // The worker mirrors all of them.
    wait::until(
        "the schedule to be confirmed",
        Duration::from_secs(60),
        || async {
            let w = stack.cli.json(&["worker", "show", "w-dbs"]).ok()?;
            (w["confirmed_schedule_version"] == w["schedule_version"]).then_some(())
        },
    )
    .await;
    assert!(discovery_warnings(&stack.cli).is_empty());
    stack.stop_clean(&[]).await;
    super::took("databases: the whole test", started);
}
