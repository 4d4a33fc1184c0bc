//! Production shapes (issue 12): thousands of roles, tables and databases,
//! megabyte-sized comments and settings, and every name at PostgreSQL's
//! 63-byte limit, dumped, listed and restored through the real system.
//! Set-up times are printed (`--nocapture`), never asserted.
mod big_values;
mod databases;
mod long_names;
mod roles;
mod tables;

use std::time::Instant;

use pgsnapman_tests::{PgCluster, Pgsnap};
use serde_json::Value;

use crate::common::restore_now;

/// Runs `f`, prints how long it took (`scale: <what>: 12.3 s`) and returns
/// its result.
pub fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    took(what, started);
    out
}

/// Prints the time since `started` (`scale: <what>: 12.3 s`).
pub fn took(what: &str, started: Instant) {
    eprintln!("scale: {what}: {:.1} s", started.elapsed().as_secs_f64());
}

/// `pgsnap restore now --dump DUMP --to-instance INSTANCE --to-database
/// DATABASE EXTRA… --wait`, which must succeed; returns the run's row of the
/// restore log.
pub fn restore_ok(cli: &Pgsnap, dump: i64, instance: i64, database: &str, extra: &[&str]) -> Value {
    let mut args = extra.to_vec();
    args.extend_from_slice(&["--timeout", "10m"]);
    let run = timed(&format!("restore {extra:?}"), || {
        restore_now(cli, dump, instance, database, &args)
    });
    assert!(run.success(), "restore {extra:?} failed: {run:?}");
    let runs = cli
        .json(&["restore-log", "list", "--limit", "1"])
        .expect("restore-log list");
    assert_eq!(runs[0]["status"], "SUCCEEDED", "{runs}");
    runs[0].clone()
}

/// The names of the databases of `cluster`, one query.
pub fn database_names(cluster: &PgCluster) -> Vec<String> {
    let out = cluster
        .query(
            "postgres",
            "SELECT coalesce(json_agg(datname ORDER BY datname), '[]') FROM pg_database",
        )
        .expect("list databases");
    serde_json::from_str(&out).expect("a JSON array of names")
}
