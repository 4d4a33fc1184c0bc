//! Mixed majors (PostgreSQL 15, 16 and 18 on one worker; 16 and 18 from the
//! PyPI wheels deploy/pg-majors.sh fetches): each server is dumped by the
//! client of its own major, row counts are exact in each archive version,
//! dumps and globals restore onto a newer major, a dump that the target's
//! client cannot read is refused before anything is touched, and the catalog
//! itself runs on 16 and 18.
use pgsnapman_tests::cluster::server_bindir;
use pgsnapman_tests::{
    Coordinator, CoordinatorOptions, PgCluster, Pgsnap, Worker, WorkerOptions, rowdata,
};

use crate::common::*;

/// The majors the worker has client tools of (and the test servers run).
const MAJORS: [u32; 3] = [15, 16, 18];

/// `postgres.bin_dirs` holding the client tools of every major in MAJORS.
fn bin_dirs() -> String {
    let dirs: Vec<String> = MAJORS
        .iter()
        .map(|m| {
            format!(
                "{:?}",
                server_bindir(*m)
                    .unwrap_or_else(|e| panic!("{e:#}"))
                    .display()
                    .to_string()
            )
        })
        .collect();
    format!("[{}]", dirs.join(","))
}

/// The major of a version string such as "16.2" or "pg_dump (PostgreSQL) 18.6".
fn major_of(version: &str) -> u32 {
    let v = version.rsplit(' ').next().unwrap_or(version);
    v.split('.').next().unwrap().parse().unwrap()
}

/// Roles with a membership whose options only 16+ has (INHERIT FALSE).
const ROLES: &str = "CREATE ROLE \"App Owner\" LOGIN; CREATE ROLE readers;
     GRANT readers TO \"App Owner\" WITH INHERIT FALSE;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_major_is_dumped_by_its_own_client_and_restores_upward() {
    let dirs = bin_dirs();
    let stack =
        Stack::start_with("w-majors", &[("PGSNAPMAN_POSTGRES__BIN_DIRS", &dirs)], None).await;
    let w = stack.cli.json(&["worker", "show", "w-majors"]).unwrap();
    assert_eq!(w["client_majors"], serde_json::json!(MAJORS), "{w}");

    let db = "shop \"ü\" db";
    let pg16 = PgCluster::start(16).unwrap();
    let pg18 = PgCluster::start(18).unwrap();
    let mut dumps = Vec::new();
    for (major, pg) in [(16, &pg16), (18, &pg18)] {
        pg.script("postgres", ROLES).unwrap();
        pg.create_database(db).unwrap();
        rowdata::create(pg, db).unwrap();
        pg.script(db, "ALTER TABLE bin OWNER TO \"App Owner\";")
            .unwrap();
        let want = rowdata::counts(pg, db).unwrap();
        let inst = add_instance(&stack.cli, &format!("pg{major}"), pg.port, "w-majors", None);
        let row = dump_and_show(&stack.cli, add_job(&stack.cli, inst, db));
        assert_eq!(row["status"], "SUCCEEDED", "{row}");
        assert_eq!(
            major_of(row["server_version"].as_str().unwrap()),
            major,
            "{row}"
        );
        assert_eq!(
            major_of(row["client_version"].as_str().unwrap()),
            major,
            "{row}"
        );
        assert_eq!(counted_rows(&row, ""), want, "{major}: custom");
        // The other archive shapes of this pg_dump, each parsed for counts.
        for (what, args) in [
            ("plain", &["--database", db, "--format", "plain"][..]),
            (
                "directory -j2",
                &["--database", db, "--format", "directory", "--jobs", "2"],
            ),
            ("cluster", &["--type", "cluster"]),
        ] {
            let other = dump_and_show(&stack.cli, add_yearly_job(&stack.cli, inst, args));
            let in_db = if what == "cluster" { db } else { "" };
            assert_eq!(counted_rows(&other, in_db), want, "{major}: {what}");
        }
        let globals = dump_and_show(&stack.cli, add_globals_job(&stack.cli, inst));
        assert_eq!(major_of(globals["client_version"].as_str().unwrap()), major);
        dumps.push((major, id_of(&row), id_of(&globals), want));
    }

    // Upward: 16's globals, then its database, onto an empty 18; 18's
    // database onto another empty 18, its roles from the dump's metadata
    // alone. Owners and the membership's INHERIT FALSE are kept both ways.
    let empty18 = PgCluster::start(18).unwrap();
    let fresh18 = PgCluster::start(18).unwrap();
    let to18 = add_instance(&stack.cli, "empty18", empty18.port, "w-majors", None);
    let fresh = add_instance(&stack.cli, "fresh18", fresh18.port, "w-majors", None);
    for (major, dump, globals, want) in &dumps {
        let (inst, pg) = if *major == 16 {
            let run = restore_cluster_dump_now(&stack.cli, *globals, to18, &[]);
            assert!(run.success(), "{run:?}");
            (to18, &empty18)
        } else {
            (fresh, &fresh18)
        };
        let target = format!("from {major}");
        let run = restore_now(&stack.cli, *dump, inst, &target, &[]);
        assert!(run.success(), "{run:?}");
        assert_eq!(&rowdata::counts(pg, &target).unwrap(), want, "{major} → 18");
        let owner = pg
            .query(
                &target,
                "SELECT tableowner FROM pg_tables WHERE tablename = 'bin'",
            )
            .unwrap();
        assert_eq!(owner, "App Owner", "{major} → 18");
        let inherit = pg
            .query(
                "postgres",
                "SELECT string_agg(m.inherit_option::text || '/' || m.set_option::text, ',')
                   FROM pg_auth_members m
                   JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
                  WHERE r.rolname = 'readers' AND u.rolname = 'App Owner'",
            )
            .unwrap();
        assert_eq!(
            inherit, "false/true",
            "{major} → 18: the membership's options"
        );
    }

    // Downward: 18's archive cannot be read by pg_restore 15; the restore
    // says so before it creates anything on the target.
    let src15 = add_instance(&stack.cli, "pg15", stack.source.port, "w-majors", None);
    let (_, dump18, _, _) = &dumps[1];
    let before = stack
        .source
        .query("postgres", "SELECT count(*) FROM pg_database")
        .unwrap();
    let run = restore_now(&stack.cli, *dump18, src15, "down", &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("18.6") && run.stderr.contains("PostgreSQL 15"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    let after = stack
        .source
        .query("postgres", "SELECT count(*) FROM pg_database")
        .unwrap();
    assert_eq!(before, after, "nothing created on the 15 target");

    // Verification reads each archive with the pg_restore of its major and
    // restores the 16 dump on 18 with the counts compared.
    for (major, dump, _, _) in &dumps {
        let run = stack
            .cli
            .run(&[
                "verify",
                "now",
                &dump.to_string(),
                "--method",
                "read",
                "--wait",
            ])
            .unwrap();
        assert!(run.success(), "read {major}: {run:?}");
    }
    let (_, dump16, _, _) = &dumps[0];
    let run = stack
        .cli
        .run(&[
            "verify",
            "now",
            &dump16.to_string(),
            "--method",
            "restore",
            "--instance",
            &to18.to_string(),
            "--wait",
        ])
        .unwrap();
    assert!(run.success(), "restore-verify 16 on 18: {run:?}");
    stack.stop_clean(&[]).await;
}

/// The catalog's migrations, triggers and NOTIFY wake-ups on 16 and 18: a
/// worker dumps through a coordinator whose catalog runs on that major.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_runs_on_16_and_18() {
    for major in [16, 18] {
        let catalog = PgCluster::start(major).unwrap();
        let coordinator = Coordinator::start(CoordinatorOptions {
            catalog_url: Some(catalog.url("postgres")),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("coordinator on a {major} catalog: {e:#}"));
        let cli: Pgsnap = coordinator.cli();
        let name = format!("w-cat{major}");
        register_worker(&cli, &name);
        let mut worker = Worker::start(WorkerOptions {
            name: name.clone(),
            coordinator: coordinator.access(),
            env: vec![("PGSNAPMAN_POSTGRES__BIN_DIRS".to_string(), bin_dirs())],
            ..Default::default()
        })
        .unwrap();
        coordinator.wait_worker_connected(&name).await;
        let inst = add_instance(&cli, "self", catalog.port, &name, None);
        let row = dump_and_show(&cli, add_job(&cli, inst, "postgres"));
        assert_eq!(row["status"], "SUCCEEDED", "{row}");
        assert_eq!(major_of(row["server_version"].as_str().unwrap()), major);
        worker.process.stop_clean().await;
        let mut coordinator = coordinator;
        coordinator.process.stop_clean().await;
        worker.process.assert_no_unexpected_errors(&[]);
        coordinator.process.assert_no_unexpected_errors(&[]);
    }
}
