//! Dump verification (issue 14 item 4): `pgsnap verify now` reads a dump
//! through, or restores it into a scratch database on an instance, compares
//! every table's rows with the dump-time counts and runs the user's checks;
//! the scratch database is gone afterwards whatever happened.
use pgsnapman_tests::{PgCluster, rowdata};
use serde_json::Value;

use crate::common::*;

/// The scratch databases left on `pg`.
fn scratch_dbs(pg: &PgCluster) -> String {
    pg.query(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'pgsnapman_verify_%'",
    )
    .unwrap()
    .trim()
    .to_string()
}

/// `pgsnap verify now DUMP --method METHOD EXTRA… --wait`.
fn verify(
    cli: &pgsnapman_tests::Pgsnap,
    dump: &str,
    method: &str,
    extra: &[&str],
) -> pgsnapman_tests::pgsnap::Run {
    let mut args = vec!["verify", "now", dump, "--method", method, "--wait"];
    args.extend_from_slice(extra);
    cli.run(&args).unwrap()
}

/// The run failed and said `why`.
fn refused(run: pgsnapman_tests::pgsnap::Run, why: &str) {
    assert!(!run.success(), "{run:?}");
    assert!(run.stderr.contains(why), "{}", run.stderr);
}

/// The dump's catalog row after a verification (`catalog show` JSON).
fn shown(cli: &pgsnapman_tests::Pgsnap, dump: i64) -> Value {
    cli.json(&["catalog", "show", &dump.to_string()]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_read_verification() {
    let stack = Stack::start("w-verify").await;
    let db = "verify \"db\"";
    stack.source.create_database(db).unwrap();
    rowdata::create(&stack.source, db).unwrap();
    let want = rowdata::counts(&stack.source, db).unwrap();
    let inst = add_instance(&stack.cli, "src", stack.source.port, "w-verify", None);
    let custom = add_job(&stack.cli, inst, db);
    let dump = id_of(&dump_and_show(&stack.cli, custom));
    let d = dump.to_string();

    // Never verified: catalog list says so at a glance.
    let listed = stack.cli.run(&["catalog", "list"]).unwrap();
    assert!(listed.stdout.contains("VERIFIED"), "{}", listed.stdout);
    assert!(listed.stdout.contains("never"), "{}", listed.stdout);
    assert!(shown(&stack.cli, dump)["restore_verified"].is_null());

    // A good dump restores with the same counts, table by table.
    let run = verify(&stack.cli, &d, "restore", &[]);
    assert!(run.success(), "{run:?}");
    let v = &shown(&stack.cli, dump)["restore_verified"];
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["method"], "restore", "{v}");
    assert_eq!(v["detail"]["tables_checked"], want.len(), "{v}");
    assert_eq!(scratch_dbs(&stack.source), "");
    let listed = stack.cli.run(&["catalog", "list"]).unwrap();
    assert!(listed.stdout.contains("ok 2"), "{}", listed.stdout);

    // A check that holds and one that does not: the verification fails
    // and names the failing check.
    let odd = r#"SELECT count(*) = 17 FROM "Sch.ema ""x"""."we.ird ""q"" tbl""#;
    let run = verify(
        &stack.cli,
        &d,
        "restore",
        &["--check", odd, "--check", "SELECT false"],
    );
    assert!(!run.success(), "{run:?}");
    assert!(
        run.stderr.contains("check failed: SELECT false"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("we.ird"), "{}", run.stderr);
    let v = &shown(&stack.cli, dump)["restore_verified"];
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(
        v["detail"]["failed_checks"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    assert_eq!(scratch_dbs(&stack.source), "");

    // The expected counts come from the catalog: one edited there makes
    // the restore's count differ, and the table is named.
    stack
        ._catalog
        .query(
            "postgres",
            &format!(
                "UPDATE dumps SET table_rows = (SELECT jsonb_agg(CASE WHEN e->>'table' = 'sp ace' \
                 THEN jsonb_set(e, '{{rows}}', '99') ELSE e END) FROM jsonb_array_elements(table_rows) e) \
                 WHERE id = {dump}"
            ),
        )
        .unwrap();
    refused(
        verify(&stack.cli, &d, "restore", &[]),
        "table public.sp ace: expected 99 row(s), found 2 row(s)",
    );
    assert_eq!(scratch_dbs(&stack.source), "");
    let errors = stack
        .cli
        .json(&["messages", "--class", "VERIFY", "--level", "ERROR"])
        .unwrap();
    assert!(
        errors
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"].as_str().unwrap_or("").contains("public.sp ace")),
        "{errors}"
    );
    let listed = stack.cli.run(&["catalog", "list"]).unwrap();
    assert!(listed.stdout.contains("FAILED 2"), "{}", listed.stdout);
    let text = stack.cli.run(&["catalog", "show", &d]).unwrap();
    assert!(
        text.stdout.contains("FAILED by restore") && text.stdout.contains("sp ace"),
        "{}",
        text.stdout
    );

    // read: the custom archive and a directory one read through pg_restore.
    assert!(verify(&stack.cli, &d, "read", &[]).success());
    assert_eq!(shown(&stack.cli, dump)["restore_verified"]["ok"], true);
    // Directory and plain dumps (a plain one restores through psql) pass
    // both methods.
    for format in ["directory", "plain"] {
        let job = add_yearly_job(&stack.cli, inst, &["--database", db, "--format", format]);
        let dump = id_of(&dump_and_show(&stack.cli, job)).to_string();
        for method in ["read", "restore"] {
            let run = verify(&stack.cli, &dump, method, &[]);
            assert!(run.success(), "{format} {method}: {run:?}");
        }
    }
    // A cluster dump is read through (and cannot be restored into a
    // scratch database).
    let cluster_job = add_yearly_job(&stack.cli, inst, &["--type", "cluster"]);
    let cluster_dump = id_of(&dump_and_show(&stack.cli, cluster_job)).to_string();
    assert!(verify(&stack.cli, &cluster_dump, "read", &[]).success());
    refused(
        verify(&stack.cli, &cluster_dump, "restore", &[]),
        "can be verified with --method read only",
    );
    assert_eq!(scratch_dbs(&stack.source), "");

    // Clear errors: an unknown dump, an unknown instance, a check with read.
    refused(
        verify(&stack.cli, "987654", "read", &[]),
        "dump 987654 not found",
    );
    refused(
        verify(&stack.cli, &d, "restore", &["--instance", "4242"]),
        "instance 4242 not found",
    );
    refused(
        verify(&stack.cli, &d, "read", &["--check", "SELECT true"]),
        "--method restore only",
    );
    // A check is SQL run as the instance user: an operator may verify, but
    // not with checks.
    let created = stack
        .cli
        .json(&["token", "create", "ops", "--role", "operator"])
        .unwrap();
    let ops = pgsnapman_tests::Pgsnap::new(
        stack
            .coordinator
            .access()
            .with_token(Some(created["secret"].as_str().unwrap().to_string())),
    );
    refused(
        verify(&ops, &d, "restore", &["--check", "SELECT true"]),
        "needs admin",
    );
    assert!(verify(&ops, &d, "read", &[]).success());
    assert_eq!(scratch_dbs(&stack.source), "");
    stack.stop_clean(&[]).await;
}
