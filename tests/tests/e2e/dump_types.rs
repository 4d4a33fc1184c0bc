//! Every dump type, for a whole database and for one schema (issue 6, item
//! 1): FULL and SCHEMA through pg_dump (custom, directory and plain formats),
//! CLUSTER, CLUSTER_SCHEMA and GLOBALS through pg_dumpall. Each archive is
//! checked by what it contains.
use std::process::Command;

use pgsnapman_tests::cluster::quote_ident;

use crate::common::*;

fn toc(stack: &Stack, archive: &str) -> String {
    let out = Command::new(stack.source.bindir.join("pg_restore"))
        .arg("--list")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_job(stack: &Stack, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["job", "add", "--cron", "0 3 1 1 *"];
    full.extend_from_slice(args);
    let job = id_of(&stack.cli.json(&full).unwrap());
    let run = stack
        .cli
        .run(&["dump", "now", &job.to_string(), "--wait"])
        .unwrap();
    assert!(run.success(), "{args:?}: {run:?}");
    let rows = catalog_of_job(&stack.cli, job);
    assert_eq!(rows.len(), 1, "{rows:?}");
    stack
        .cli
        .json(&["catalog", "show", &id_of(&rows[0]).to_string()])
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dump_type_for_a_database_and_a_schema() {
    let stack = Stack::start("w-types").await;
    let db = "Typed DB";
    let odd = "other \"schema\"";
    stack.source.create_database(db).unwrap();
    stack
        .source
        .script(
            db,
            &format!(
                "CREATE ROLE typed_owner;
                 CREATE SCHEMA keep; CREATE TABLE keep.kept AS SELECT g AS id FROM generate_series(1, 100) g;
                 CREATE SCHEMA {s}; CREATE TABLE {s}.\"Odd Table\" AS SELECT g AS id FROM generate_series(1, 10) g;",
                s = quote_ident(odd)
            ),
        )
        .unwrap();
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-types", None).to_string();
    let base = ["--instance", inst.as_str()];

    // FULL, whole database, custom format.
    let d = run_job(&stack, &[&base[..], &["--database", db]].concat());
    assert_eq!(d["dump_type"], "FULL");
    assert_eq!(d["format"], "CUSTOM");
    let list = toc(&stack, &stack.extract(&d).to_string_lossy());
    assert!(list.contains("TABLE DATA keep kept"), "{list}");
    assert!(list.contains("Odd Table"), "{list}");

    // FULL, one schema with an odd name.
    let d = run_job(
        &stack,
        &[&base[..], &["--database", db, "--schema", odd]].concat(),
    );
    assert_eq!(d["schema"], odd);
    let list = toc(&stack, &stack.extract(&d).to_string_lossy());
    assert!(
        list.contains("TABLE DATA") && list.contains("Odd Table"),
        "{list}"
    );
    assert!(!list.contains("kept"), "another schema leaked in: {list}");

    // SCHEMA, whole database: definitions, no data.
    let d = run_job(
        &stack,
        &[&base[..], &["--database", db, "--type", "schema"]].concat(),
    );
    assert_eq!(d["dump_type"], "SCHEMA");
    let list = toc(&stack, &stack.extract(&d).to_string_lossy());
    assert!(
        list.contains("TABLE keep kept") && !list.contains("TABLE DATA"),
        "{list}"
    );

    // SCHEMA, one schema.
    let d = run_job(
        &stack,
        &[
            &base[..],
            &["--database", db, "--type", "schema", "--schema", "keep"],
        ]
        .concat(),
    );
    let list = toc(&stack, &stack.extract(&d).to_string_lossy());
    assert!(
        list.contains("TABLE keep kept") && !list.contains("Odd Table"),
        "{list}"
    );
    assert!(!list.contains("TABLE DATA"), "{list}");

    // FULL, directory format with two jobs.
    let d = run_job(
        &stack,
        &[
            &base[..],
            &["--database", db, "--format", "directory", "--jobs", "2"],
        ]
        .concat(),
    );
    assert_eq!(d["format"], "DIRECTORY");
    let location = stack.extract(&d);
    assert!(location.is_dir(), "{}", location.display());
    assert!(location.join("toc.dat").is_file(), "{}", location.display());
    assert!(toc(&stack, &location.to_string_lossy()).contains("TABLE DATA keep kept"));

    // FULL, plain SQL.
    let d = run_job(
        &stack,
        &[&base[..], &["--database", db, "--format", "plain"]].concat(),
    );
    let sql = std::fs::read_to_string(stack.extract(&d)).unwrap();
    assert!(sql.contains("CREATE TABLE keep.kept") && sql.contains("COPY keep.kept"));

    // Cluster-wide types through pg_dumpall.
    let d = run_job(&stack, &[&base[..], &["--type", "globals"]].concat());
    assert_eq!(d["dump_type"], "GLOBALS");
    assert_eq!(d["format"], "PLAIN");
    let sql = std::fs::read_to_string(stack.extract(&d)).unwrap();
    assert!(sql.contains("CREATE ROLE typed_owner"), "{sql}");
    assert!(!sql.contains("CREATE TABLE"));

    let d = run_job(&stack, &[&base[..], &["--type", "cluster-schema"]].concat());
    let sql = std::fs::read_to_string(stack.extract(&d)).unwrap();
    assert!(sql.contains("CREATE TABLE keep.kept") && sql.contains("CREATE ROLE typed_owner"));
    assert!(!sql.contains("COPY keep.kept"));

    let d = run_job(&stack, &[&base[..], &["--type", "cluster"]].concat());
    assert_eq!(d["dump_type"], "CLUSTER");
    let sql = std::fs::read_to_string(stack.extract(&d)).unwrap();
    assert!(sql.contains("COPY keep.kept") && sql.contains("CREATE ROLE typed_owner"));
    assert!(sql.contains("Odd Table"));
    // Cluster-wide dumps carry no per-database restore metadata.
    assert!(d["restore_metadata"].is_null(), "{d}");

    // Options that would defeat the store are refused at input.
    let run = stack
        .cli
        .run(&[
            "job",
            "add",
            "--instance",
            &inst,
            "--database",
            db,
            "--cron",
            "0 3 * * *",
            "--option=--file=/tmp/x",
        ])
        .unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--file=/tmp/x"), "{run:?}");
    stack.stop_clean(&[]).await;
}
