//! Cancellation (lease lost, shutdown) while a restore waits on the server:
//! nothing is reported, no client process and no server session of the run
//! is left, no temporary database appears (not even once the lock it waited
//! for is released), the spool is empty and the target is as it was.
use pgsnapman_proto::v1::{DumpFormat, DumpType, ExistingDatabase as E, RestoreType as T};
use pgsnapman_tests::PgCluster;
use tokio_util::sync::CancellationToken;

use super::*;

const DB: &str = "cancel db";

/// Client processes whose command line names this run's application.
fn processes_of(run_id: i64) -> Vec<String> {
    let app = format!("pgsnapman-restore-{run_id}'");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(&app) {
                found.push(cmd);
            }
        }
    }
    found
}

fn sessions_of(pg: &PgCluster, run_id: i64) -> String {
    pg.query(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgsnapman-restore-{run_id}'"),
    )
    .unwrap()
}

/// Runs `spec`, cancels it once the run waits on a lock, and checks that
/// nothing of it is left.
async fn cancel_while_waiting(env: &Env, pg: &PgCluster, spec: &RestoreSpec) {
    let cancel = CancellationToken::new();
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgsnapman-restore-{}' AND wait_event_type = 'Lock'",
        spec.run_id
    );
    let (r, ()) = tokio::join!(restore_with(env, spec, &cancel), async {
        wait_for(pg, "postgres", &waiting, "the restore to wait on the lock").await;
        cancel.cancel();
    });
    assert!(
        r.finished.is_none(),
        "a cancelled restore reports nothing: {:?}",
        r.finished
    );
    assert!(r.logged("cancelled"), "{:?}", r.log);
    assert!(
        processes_of(spec.run_id).is_empty(),
        "{:?}",
        processes_of(spec.run_id)
    );
    assert_eq!(sessions_of(pg, spec.run_id), "0");
    assert!(
        loose_files(env.dir.path()).is_empty(),
        "{:?}",
        loose_files(env.dir.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_restores_leave_nothing_behind() {
    let src = PgCluster::start(15).unwrap();
    let dst = PgCluster::start(15).unwrap();
    src.create_database(DB).unwrap();
    src.script(
        DB,
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 20000) g;",
    )
    .unwrap();
    let env = env().await;
    let d = dump(&env, &src, DB, DumpType::Full, DumpFormat::Directory, 0).await;
    let r = restore(&env, &spec(&d, &dst, to(DB))).await;
    r.expect(pgsnapman_proto::v1::RestoreStatus::Succeeded);
    let before = checksums(&dst, DB);

    // 1. A TRUNCATE restore (spooled directory archive) whose TRUNCATE
    //    waits for a table lock held by another session.
    let mut locker = Session::open(&dst, DB);
    locker.send("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE;");
    wait_for(&dst, "postgres", "SELECT count(*) FROM pg_locks WHERE mode = 'AccessShareLock' AND relation IS NOT NULL AND pid <> pg_backend_pid()", "the table lock").await;
    let s = spec(&d, &dst, with(to(DB), T::Data, E::Truncate));
    cancel_while_waiting(&env, &dst, &s).await;
    drop(locker);
    assert_eq!(checksums(&dst, DB), before, "not truncated");

    // 2. A restore into a new database whose CREATE DATABASE waits on a
    //    shared catalog: once the lock goes, no database appears.
    let mut locker = Session::open(&dst, "postgres");
    locker.send("BEGIN; LOCK TABLE pg_catalog.pg_shdepend IN EXCLUSIVE MODE;");
    wait_for(&dst, "postgres", "SELECT count(*) FROM pg_locks WHERE relation = 'pg_shdepend'::regclass AND mode = 'ExclusiveLock'", "the catalog lock").await;
    let s = spec(
        &d,
        &dst,
        RestoreTarget {
            roles: false,
            ..to("new db")
        },
    );
    cancel_while_waiting(&env, &dst, &s).await;
    locker.send("COMMIT;");
    wait_for(&dst, "postgres", "SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END FROM pg_locks WHERE relation = 'pg_shdepend'::regclass AND mode = 'ExclusiveLock'", "the lock to go").await;
    assert_no_temporary_databases(&dst);
    assert_eq!(
        dst.query(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'new db'"
        )
        .unwrap(),
        "0"
    );
}
