//! A worker without pg_dump of the server's major: the dump fails with an
//! error naming the missing major and the majors it has, and its Hello
//! reported those majors. Only PostgreSQL 15 is installed here, so the worker
//! is pointed at a directory whose pg_dump claims to be 14 (its psql is the
//! real one: the probe uses the newest psql and must reach the server).
use std::os::unix::fs::PermissionsExt;

use pgsnapman_tests::cluster::server_bindir;

use crate::common::*;

/// Stands in for pg_dump 14: reports the version, refuses to dump.
const FAKE_PG_DUMP: &str = "#!/bin/sh\n\
    if [ \"$1\" = \"--version\" ]; then echo 'pg_dump (PostgreSQL) 14.99'; exit 0; fi\n\
    echo 'this stand-in pg_dump only reports a version' >&2\n\
    exit 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_major_is_named_in_the_error() {
    let bin = tempfile::tempdir().unwrap();
    let pg_dump = bin.path().join("pg_dump");
    std::fs::write(&pg_dump, FAKE_PG_DUMP).unwrap();
    std::fs::set_permissions(&pg_dump, std::fs::Permissions::from_mode(0o755)).unwrap();
    let real = server_bindir(PG_MAJOR).unwrap();
    std::os::unix::fs::symlink(real.join("psql"), bin.path().join("psql")).unwrap();
    let dirs = format!("[{:?}]", bin.path().display().to_string());
    let stack =
        Stack::start_with("w-major", &[("PGSNAPMAN_POSTGRES__BIN_DIRS", &dirs)], None).await;

    let w = stack.cli.json(&["worker", "show", "w-major"]).unwrap();
    assert_eq!(w["client_majors"], serde_json::json!([14]), "{w}");
    let shown = stack.cli.run(&["worker", "show", "w-major"]).unwrap();
    let line = shown
        .stdout
        .lines()
        .find(|l| l.contains("client majors"))
        .unwrap_or_else(|| panic!("{shown:?}"));
    assert!(line.contains("14") && !line.contains("15"), "{line}");

    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-major", None);
    let job = add_job(&stack.cli, inst, "postgres");
    let want = format!("no pg_dump for PostgreSQL {PG_MAJOR} on this worker (found: 14)");
    let run = stack
        .cli
        .run(&["dump", "now", &job.to_string(), "--wait"])
        .unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(&want), "{run:?}");
    let task = stack
        .cli
        .json(&["task", "list", "--job", &job.to_string()])
        .unwrap();
    let task = &task.as_array().unwrap()[0];
    assert_eq!(task["state"], "FAILED", "{task}");
    assert!(task["error"].as_str().unwrap().contains(&want), "{task}");
    let rows = catalog_of_job(&stack.cli, job);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "FAILED");
    let row = stack
        .cli
        .json(&["catalog", "show", &id_of(&rows[0]).to_string()])
        .unwrap();
    assert!(row["message"].as_str().unwrap().contains(&want), "{row}");
    stack.stop_clean(&[]).await;
}
