//! Dumps of a real streaming standby with WAL replay paused: two dumps of
//! the same standby that overlap keep replay paused until the last one
//! ends (the first to finish must not resume replay under the other), and
//! the worker's state file lists the standby exactly while it is paused.
// Test set-up helpers outside #[test] functions unwrap too: a failure there
// is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Locker, runner};
use pgsnapman_proto::v1::{DumpFormat, DumpSpec, DumpType, InstanceConnection, TaskRef};
use pgsnapman_tests::PgCluster;
use pgsnapman_worker::runner::DumpResult;
use tokio_util::sync::CancellationToken;

fn spec(port: u16, database: &str) -> DumpSpec {
    DumpSpec {
        job_id: 5,
        instance: Some(InstanceConnection {
            instance_id: 8,
            name: "standby".into(),
            host: "127.0.0.1".into(),
            port: u32::from(port),
            user: "postgres".into(),
            maintenance_db: "postgres".into(),
            status: 1,
            ..InstanceConnection::default()
        }),
        database: database.into(),
        dump_type: DumpType::Full as i32,
        format: DumpFormat::Custom as i32,
        pause_replay: true,
        ..DumpSpec::default()
    }
}

fn task(id: i64) -> Option<TaskRef> {
    Some(TaskRef {
        task_id: id,
        lease_id: format!("lease-{id}"),
    })
}

/// Polls `sql` on `db` of `pg` until it returns `want` (60 s at most).
fn wait_for(pg: &PgCluster, db: &str, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if pg.query(db, sql).ok().as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{sql} never returned {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn replay_state(standby: &PgCluster) -> String {
    standby
        .query("postgres", "SELECT pg_get_wal_replay_pause_state()")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_dumps_keep_replay_paused_until_the_last_ends() {
    let primary = PgCluster::start(15).unwrap();
    for db in ["held", "free"] {
        primary.create_database(db).unwrap();
        primary
            .query(db, "CREATE TABLE t AS SELECT 1 AS id")
            .unwrap();
    }
    // Nothing left for pg_basebackup's spread checkpoint to write: it
    // would pace a few thousand dirty buffers over minutes.
    primary.query("postgres", "CHECKPOINT").unwrap();
    let standby = primary.start_standby().unwrap();
    for db in ["held", "free"] {
        wait_for(&standby, db, "SELECT count(*) FROM t", "1");
    }
    // A lock taken on the primary is replayed on the standby and held
    // there while replay is paused: the first dump waits on it.
    let _lock = Locker::hold(&primary, "held", "t");
    // The lock's WAL record of an open transaction waits in the WAL
    // buffers until something flushes them.
    primary.query("postgres", "SELECT pg_switch_wal()").unwrap();
    wait_for(
        &standby,
        "held",
        "SELECT count(*) FROM pg_locks WHERE relation = to_regclass('t') AND mode = 'AccessExclusiveLock'",
        "1",
    );

    let dir = tempfile::tempdir().unwrap();
    let runner = Arc::new(runner(dir.path()).await);
    let state_file = dir.path().join("state/replay-paused.json");
    let cancel = CancellationToken::new();
    let first = {
        let (runner, cancel) = (runner.clone(), cancel.clone());
        let spec = spec(standby.port, "held");
        tokio::spawn(async move { runner.dump(task(31), &spec, &cancel, Arc::default()).await })
    };
    wait_for(
        &standby,
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgsnapman-dump-31' AND wait_event_type = 'Lock'",
        "1",
    );
    assert_eq!(replay_state(&standby), "paused");
    let listed = std::fs::read_to_string(&state_file).unwrap();
    assert!(
        listed.contains(&format!("127.0.0.1:{}", standby.port)),
        "{listed}"
    );

    // The second dump pauses nothing new and, ending first, resumes
    // nothing: the first still needs the pause.
    let res = runner
        .dump(
            task(32),
            &spec(standby.port, "free"),
            &CancellationToken::new(),
            Arc::default(),
        )
        .await;
    let DumpResult::Finished(second) = res else {
        panic!("expected a finished dump: {res:?}");
    };
    assert!(second.succeeded, "{}", second.error);
    assert!(
        second.error.contains("WAL replay was paused"),
        "{}",
        second.error
    );
    assert_eq!(
        replay_state(&standby),
        "paused",
        "the second dump resumed replay under the first"
    );

    // The last one to end resumes replay, and the file forgets it.
    cancel.cancel();
    let res = first.await.unwrap();
    assert!(matches!(res, DumpResult::Cancelled), "{res:?}");
    assert_eq!(replay_state(&standby), "not paused");
    let listed = std::fs::read_to_string(&state_file).unwrap();
    assert!(!listed.contains("127.0.0.1"), "{listed}");
}
