//! The dump runner against real throwaway clusters (no coordinator): a dump
//! with a password file streams into the pack store and reads back as a real
//! archive, wrong passwords and closed ports fail with the server's words,
//! and cancellation leaves no process, no file and no stored dump behind.
// Test set-up helpers outside #[test] functions unwrap too: a failure there
// is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use common::{Locker, runner, runner_with};
use pgsnapman_proto::v1::{DumpFormat, DumpSpec, DumpType, InstanceConnection, TaskRef};
use pgsnapman_tests::{PgCluster, PgOptions};
use pgsnapman_worker::Config;
use pgsnapman_worker::runner::{DumpResult, Runner};
use tokio_util::sync::CancellationToken;

const PASSWORD: &str = r"s3cr3t:with\odd'chars";
const DB: &str = "My \"odd\" db.ünï 'x'";

fn spec(port: u16, password: &str, database: &str) -> DumpSpec {
    DumpSpec {
        job_id: 9,
        instance: Some(InstanceConnection {
            instance_id: 4,
            name: "src".into(),
            host: "127.0.0.1".into(),
            port: u32::from(port),
            user: "postgres".into(),
            password: password.into(),
            maintenance_db: "postgres".into(),
            status: 1,
            discover: false,
            ..Default::default()
        }),
        database: database.into(),
        schema: String::new(),
        dump_type: DumpType::Full as i32,
        format: DumpFormat::Custom as i32,
        extra_options: vec![],
        parallel_jobs: 0,
        pause_replay: false,
        on_demand: false,
        script: None,
    }
}

fn task(id: i64) -> Option<TaskRef> {
    Some(TaskRef {
        task_id: id,
        lease_id: format!("lease-{id}"),
    })
}

/// Files under `dir` outside the store's own state (index, packs).
fn loose_files(dir: &Path) -> Vec<String> {
    files_under(&dir.join("spool"))
        .into_iter()
        .chain(files_under(&dir.join("tmp")))
        .collect()
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dumps_succeed_with_the_password_and_fail_clearly_without() {
    // TCP needs the password; the harness's Unix socket is trusted.
    let mut options = PgOptions::new(15);
    options.superuser_password = Some(PASSWORD.to_string());
    let pg = PgCluster::start_with(options).unwrap();
    pg.create_database(DB).unwrap();
    pg.query(
        DB,
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(dir.path()).await;

    // Right password (from a private password file): a real archive.
    let progress = Arc::new(AtomicU64::new(0));
    let res = runner
        .dump(
            task(1),
            &spec(pg.port, PASSWORD, DB),
            &CancellationToken::new(),
            progress,
        )
        .await;
    let DumpResult::Finished(ok) = res else {
        panic!("expected a finished dump: {res:?}");
    };
    assert!(ok.succeeded, "{}", ok.error);
    assert_eq!(
        ok.server_version,
        pg.query("postgres", "SHOW server_version").unwrap()
    );
    assert!(ok.client_version.contains("15"), "{}", ok.client_version);
    let size: i64 = pg
        .query(DB, "SELECT pg_database_size(current_database())")
        .unwrap()
        .parse()
        .unwrap();
    assert!(ok.database_bytes > 0 && (ok.database_bytes - size).abs() < 1_000_000);
    // The archive streamed into the store: its manifest says what the
    // catalog row says, and it reads back into pg_restore.
    let store = runner.store();
    let uuid = uuid::Uuid::parse_str(&ok.dump_uuid).unwrap();
    let m = store.manifest(uuid).unwrap();
    assert_eq!(m.logical_bytes, ok.dump_bytes);
    assert_eq!(m.new_stored_bytes, ok.stored_bytes);
    assert!(
        ok.stored_bytes > 0 && ok.stored_bytes < ok.dump_bytes,
        "zstd after dedup"
    );
    assert_eq!(m.meta.database, DB);
    assert_eq!(m.meta.instance_id, 4);
    assert_eq!(m.meta.job_id, 9);
    assert_eq!(m.meta.task_id, 1);
    assert_eq!(m.meta.format, "CUSTOM");
    assert_eq!(m.meta.restore_metadata["database"], DB);
    assert!(
        ok.location
            .ends_with(&format!("manifests/{}.manifest", ok.dump_uuid)),
        "{}",
        ok.location
    );
    let mut archive = Vec::new();
    store.read_file(uuid, "archive.dump", &mut archive).unwrap();
    assert_eq!(archive.len() as u64, ok.dump_bytes);
    let restored = tempfile::tempdir().unwrap();
    let file = restored.path().join("archive.dump");
    std::fs::write(&file, &archive).unwrap();
    let listing = Command::new(pg.bindir.join("pg_restore"))
        .arg("--list")
        .arg(&file)
        .output()
        .unwrap();
    assert!(listing.status.success());
    assert!(String::from_utf8_lossy(&listing.stdout).contains("TABLE DATA public t"));
    // ... and restores, with the same rows.
    pg.create_database("restored").unwrap();
    let restore = Command::new(pg.bindir.join("pg_restore"))
        .args(["--no-owner", "--exit-on-error", "-h"])
        .arg(pg.socket_dir())
        .args([
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "restored",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let sum = "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t";
    assert_eq!(
        pg.query("restored", sum).unwrap(),
        pg.query(DB, sum).unwrap()
    );

    // Wrong password: the server's reason, never the password.
    let res = runner
        .dump(
            task(2),
            &spec(pg.port, "wrong-one", DB),
            &CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let DumpResult::Finished(bad) = res else {
        panic!("expected a failed dump: {res:?}");
    };
    assert!(!bad.succeeded);
    assert!(
        bad.error
            .contains("password authentication failed for user"),
        "{}",
        bad.error
    );
    assert!(!bad.error.contains("wrong-one"));

    // Nothing listens: connection refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let res = runner
        .dump(
            task(3),
            &spec(closed, "", "postgres"),
            &CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let DumpResult::Finished(refused) = res else {
        panic!("expected a failed dump: {res:?}");
    };
    assert!(
        refused.error.contains("Connection refused"),
        "{}",
        refused.error
    );

    // A spec that cannot be attempted.
    let mut bad_spec = spec(pg.port, PASSWORD, DB);
    bad_spec.extra_options = vec!["--compress=9".into()];
    let res = runner
        .dump(
            task(4),
            &bad_spec,
            &CancellationToken::new(),
            Arc::default(),
        )
        .await;
    assert!(
        matches!(res, DumpResult::Rejected(ref e) if e.contains("--compress=9")),
        "{res:?}"
    );

    // Only the successful dump is stored; no password file, no spool file.
    let ids: Vec<String> = store
        .dump_ids()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ids, vec![ok.dump_uuid.clone()]);
    let files = loose_files(dir.path());
    assert!(files.is_empty(), "{files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_kills_pg_dump_and_stores_nothing() {
    let pg = PgCluster::start(15).unwrap();
    let db = "locked_db";
    pg.create_database(db).unwrap();
    pg.query(db, "CREATE TABLE held AS SELECT 1 AS id").unwrap();
    let _locker = Locker::hold(&pg, db, "held");

    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(runner(dir.path()).await);
    let cancel = CancellationToken::new();
    let job = {
        let (runner, cancel) = (runner.clone(), cancel.clone());
        let spec = spec(pg.port, "", db);
        tokio::spawn(async move { runner.dump(task(7), &spec, &cancel, Arc::default()).await })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = pg.query(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgsnapman-dump-7' AND wait_event_type = 'Lock'",
        )
        .unwrap();
        if n != "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pg_dump never waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    let res = job.await.unwrap();
    assert!(matches!(res, DumpResult::Cancelled), "{res:?}");
    assert!(
        loose_files(dir.path()).is_empty(),
        "{:?}",
        loose_files(dir.path())
    );
    assert!(runner.store().dump_ids().unwrap().is_empty());
    // No pack is left half written.
    let open_packs: Vec<String> = files_under(&dir.path().join("packs"))
        .into_iter()
        .filter(|p| p.ends_with(".open"))
        .collect();
    assert!(open_packs.is_empty(), "{open_packs:?}");
    // No pg_dump of this database is left.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            assert!(
                !(cmd.contains("pg_dump") && cmd.contains(db)),
                "orphan: {cmd}"
            );
        }
    }
}

/// The error of a dump that must have failed.
async fn failed_dump(runner: &Runner, task: Option<TaskRef>, spec: &DumpSpec) -> String {
    let res = runner
        .dump(task, spec, &CancellationToken::new(), Arc::default())
        .await;
    let DumpResult::Finished(f) = res else {
        panic!("expected a finished dump: {res:?}");
    };
    assert!(!f.succeeded, "the dump succeeded");
    f.error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_fail_dumps_within_their_timeout_saying_which() {
    let pg = PgCluster::start(15).unwrap();
    let db = "busy";
    pg.create_database(db).unwrap();
    pg.script(
        db,
        "CREATE TABLE held AS SELECT 1 AS id;
         CREATE SCHEMA pgsnapman;
         CREATE TABLE pgsnapman.metainfo (key text PRIMARY KEY, val text);
         INSERT INTO pgsnapman.metainfo VALUES ('TAKE_BACKUP', 'YES');",
    )
    .unwrap();
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());

    // pg_dump waits at most dump.lock_wait_timeout for a table lock.
    let table = Locker::hold(&pg, db, "held");
    let mut config = Config::default();
    config.dump.lock_wait_timeout = Duration::from_secs(2);
    let runner = runner_with(dirs[0].path(), &config).await;
    let err = failed_dump(&runner, task(21), &spec(pg.port, "", db)).await;
    assert!(
        err.contains("canceling statement due to statement timeout")
            && err.contains("dump.lock_wait_timeout = 2s"),
        "{err}"
    );

    // Still locked, with a generous lock wait: dump.max_run_time ends it.
    let mut config = Config::default();
    config.dump.max_run_time = Duration::from_secs(3);
    let runner = runner_with(dirs[1].path(), &config).await;
    let err = failed_dump(&runner, task(22), &spec(pg.port, "", db)).await;
    assert_eq!(err, "cancelled: the dump exceeded dump.max_run_time = 3s");
    drop(table);

    // The dump-on-demand marker is read with postgres.statement_timeout.
    let _marker = Locker::hold(&pg, db, "pgsnapman.metainfo");
    let mut config = Config::default();
    config.postgres.statement_timeout = Duration::from_secs(1);
    let runner = runner_with(dirs[2].path(), &config).await;
    let mut scheduled = spec(pg.port, "", db);
    scheduled.on_demand = true;
    let err = failed_dump(&runner, None, &scheduled).await;
    assert!(
        err.starts_with("cannot read the dump-on-demand marker")
            && err.contains("canceling statement due to statement timeout")
            && err.contains("postgres.statement_timeout = 1s"),
        "{err}"
    );
    assert!(runner.store().dump_ids().unwrap().is_empty());
    for dir in &dirs {
        let files = loose_files(dir.path());
        assert!(files.is_empty(), "{files:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_granted_to_2000_roles_dumps_with_every_role() {
    // The restore metadata lists every referenced role: about 1 MB of
    // JSON, far beyond the 64 KiB that query output used to be cut at.
    let pg = PgCluster::start(15).unwrap();
    let db = "tenants";
    pg.create_database(db).unwrap();
    pg.script(
        db,
        "CREATE TABLE shared_data (id int);
         DO $$ BEGIN
           FOR i IN 1..2000 LOOP
             EXECUTE format('CREATE ROLE %I', 'tenant_role_' || i);
             EXECUTE format('GRANT SELECT ON shared_data TO %I', 'tenant_role_' || i);
           END LOOP;
         END $$;",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner = runner(dir.path()).await;
    let res = runner
        .dump(
            task(11),
            &spec(pg.port, "", db),
            &CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let DumpResult::Finished(ok) = res else {
        panic!("expected a finished dump: {res:?}");
    };
    assert!(ok.succeeded, "{}", ok.error);
    assert!(
        ok.restore_metadata_json.len() > 64 * 1024,
        "{}",
        ok.restore_metadata_json.len()
    );
    let m = runner
        .store()
        .manifest(uuid::Uuid::parse_str(&ok.dump_uuid).unwrap())
        .unwrap();
    let roles: Vec<&str> = m.meta.restore_metadata["roles"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .filter(|n| n.starts_with("tenant_role_"))
        .collect();
    assert_eq!(roles.len(), 2000);
    assert!(roles.contains(&"tenant_role_1") && roles.contains(&"tenant_role_2000"));
}
