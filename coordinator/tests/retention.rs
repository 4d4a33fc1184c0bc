//! The catalog side of retention (issue 14), in process against a real
//! (embedded) catalog cluster: pins and restore jobs protect dumps and bump
//! the holder's schedule, the preview names reasons, a retention deletion
//! removes its row once and a replay removes nothing, FAILED rows expire.
#![allow(clippy::unwrap_used)]

mod cluster;

use pgsnapman_coordinator::catalog::Catalog;
use pgsnapman_coordinator::error::ApiError;
use pgsnapman_proto::retention::Reason;
use pgsnapman_proto::v1::{self, event::Body};
use uuid::Uuid;

use cluster::Cluster;

struct Rig {
    _cluster: Cluster,
    catalog: Catalog,
    worker: i64,
    instance: i64,
    job: i64,
}

async fn scalar(c: &Catalog, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&c.pool).await.unwrap()
}

impl Rig {
    async fn start() -> Rig {
        let cluster = Cluster::start().await;
        let catalog = Catalog::open(cluster.options.clone(), 4, 3).await.unwrap();
        let worker = catalog.register_worker("w-ret").await.unwrap().id;
        let instance: i64 = sqlx::query_scalar(
            "INSERT INTO instances (name, host, port, username, maintenance_db, default_worker_id) \
             VALUES ('src', '127.0.0.1', 5432, 'postgres', 'postgres', $1) RETURNING id",
        )
        .bind(worker)
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
        let job: i64 = sqlx::query_scalar(
            "INSERT INTO dump_jobs (worker_id, instance_id, database, dump_type, format, cron, \
             keep_daily, keep_weekly, keep_monthly, keep_yearly) \
             VALUES ($1, $2, 'app', 'FULL', 'CUSTOM', '0 3 * * *', 0, 0, 0, 0) RETURNING id",
        )
        .bind(worker)
        .bind(instance)
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
        Rig {
            _cluster: cluster,
            catalog,
            worker,
            instance,
            job,
        }
    }

    /// A dump row `days_ago` days old; returns (id, uuid).
    async fn dump(&self, status: &str, days_ago: i32) -> (i64, Uuid) {
        let uuid = Uuid::now_v7();
        let id = sqlx::query_scalar(
            "INSERT INTO dumps (dump_uuid, job_id, worker_id, instance_id, host, port, database, \
             dump_type, format, status, started_at, finished_at) \
             VALUES ($1, $2, $3, $4, '127.0.0.1', 5432, 'app', 'FULL', 'CUSTOM', $5, \
             now() - make_interval(days => $6), now() - make_interval(days => $6)) RETURNING id",
        )
        .bind(uuid)
        .bind(self.job)
        .bind(self.worker)
        .bind(self.instance)
        .bind(status)
        .bind(days_ago)
        .fetch_one(&self.catalog.pool)
        .await
        .unwrap();
        (id, uuid)
    }

    async fn version(&self) -> i64 {
        self.catalog.schedule_version(self.worker).await.unwrap().0
    }
}

/// The event a worker sends when restore run `run_id` ended as `status`.
fn finished(run_id: i64, status: v1::RestoreStatus) -> v1::Event {
    v1::Event {
        event_id: Uuid::now_v7().to_string(),
        occurred_at: Some(pgsnapman_proto::timestamp(chrono::Utc::now())),
        body: Some(Body::RestoreFinished(v1::RestoreFinished {
            run_id,
            status: status as i32,
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_and_restore_jobs_protect_dumps_and_the_preview_says_why() {
    let rig = Rig::start().await;
    let c = &rig.catalog;
    let (old, old_uuid) = rig.dump("SUCCEEDED", 3).await;
    let (mid, mid_uuid) = rig.dump("SUCCEEDED", 2).await;
    let (plain, _) = rig.dump("SUCCEEDED", 1).await;
    let (newest, _) = rig.dump("SUCCEEDED", 0).await;
    let (failed, _) = rig.dump("FAILED", 0).await;

    // A pin bumps the holder's schedule once; pinning again changes nothing.
    let v0 = rig.version().await;
    assert!(c.set_pinned(old, true).await.unwrap().pinned);
    let v1 = rig.version().await;
    assert_eq!(v1, v0 + 1);
    c.set_pinned(old, true).await.unwrap();
    assert_eq!(rig.version().await, v1);
    let refused = c.set_pinned(failed, true).await.unwrap_err();
    assert!(
        matches!(&refused, ApiError::Precondition(m) if m.contains("FAILED")),
        "{refused:?}"
    );

    // A SINGLE restore job still to run names the middle one.
    let restore = c
        .add_restore_job(&v1::AddRestoreJobRequest {
            source_dump_id: mid,
            target: Some(v1::RestoreTarget {
                instance_id: rig.instance,
                database: "later".into(),
                ..Default::default()
            }),
            run_at: Some(pgsnapman_proto::timestamp(
                chrono::Utc::now() + chrono::Duration::days(3650),
            )),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rig.version().await, v1 + 1);
    let protected = c.protected_dumps(rig.worker).await.unwrap();
    let mut want = vec![(old_uuid.to_string(), true), (mid_uuid.to_string(), false)];
    want.sort();
    assert_eq!(protected, want);

    // Keep 0/0/0/0: the newest, the pinned and the restore's stay.
    let (_, verdicts) = c.preview_retention(rig.job, "UTC").await.unwrap();
    let by_id: Vec<(i64, Vec<Reason>)> = verdicts
        .iter()
        .map(|(d, v)| (d.id, v.reasons.clone()))
        .collect();
    assert_eq!(
        by_id,
        vec![
            (newest, vec![Reason::Newest]),
            (plain, vec![]),
            (mid, vec![Reason::Restore]),
            (old, vec![Reason::Pinned]),
        ],
        "FAILED dumps take no part"
    );
    let bad_zone = c
        .preview_retention(rig.job, "Mars/Olympus")
        .await
        .unwrap_err();
    assert!(matches!(bad_zone, ApiError::Invalid(_)), "{bad_zone:?}");

    // Its run ends: the dump is no longer protected, and the holder hears.
    let run: i64 = sqlx::query_scalar(
        "INSERT INTO restore_runs (restore_job_id, dump_id, dump_uuid, worker_id, \
         target_instance_id, target, status) VALUES ($1, $2, $3, $4, $5, '{}'::jsonb, 'RUNNING') \
         RETURNING id",
    )
    .bind(restore.id)
    .bind(mid)
    .bind(mid_uuid)
    .bind(rig.worker)
    .bind(rig.instance)
    .fetch_one(&c.pool)
    .await
    .unwrap();
    assert_eq!(rig.version().await, v1 + 2, "a run of it came");
    let ended = finished(run, v1::RestoreStatus::Succeeded);
    c.apply_events(rig.worker, &[ended], 0).await.unwrap();
    assert_eq!(rig.version().await, v1 + 3);
    assert_eq!(
        c.protected_dumps(rig.worker).await.unwrap(),
        vec![(old_uuid.to_string(), true)]
    );

    // Removing the job and unpinning change the schedule again.
    c.remove_restore_job(restore.id).await.unwrap();
    c.set_pinned(old, false).await.unwrap();
    assert_eq!(rig.version().await, v1 + 5);
    assert!(c.protected_dumps(rig.worker).await.unwrap().is_empty());
}

/// An ad-hoc restore run by a restore worker (shared store): its dump is
/// in the HOLDER's protected list while the run is QUEUED or RUNNING, and
/// the holder's schedule is bumped when the run comes and when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_or_running_restore_protects_its_dump_on_the_holder() {
    let rig = Rig::start().await;
    let c = &rig.catalog;
    let reader = c.register_worker("w-reader").await.unwrap().id;
    sqlx::query("UPDATE workers SET restore_worker_id = $2 WHERE id = $1")
        .bind(rig.worker)
        .bind(reader)
        .execute(&c.pool)
        .await
        .unwrap();
    let (old, old_uuid) = rig.dump("SUCCEEDED", 2).await;
    let (newer, newer_uuid) = rig.dump("SUCCEEDED", 1).await;
    let restore = |dump_id: i64, database: &str| v1::RestoreNowRequest {
        what: Some(v1::restore_now_request::What::Dump(v1::AdHocRestore {
            dump_id,
            target: Some(v1::RestoreTarget {
                instance_id: rig.instance,
                database: database.into(),
                ..Default::default()
            }),
        })),
    };
    let run_of = |task: i64| async move {
        let run: i64 = sqlx::query_scalar("SELECT restore_run_id FROM tasks WHERE id = $1")
            .bind(task)
            .fetch_one(&c.pool)
            .await
            .unwrap();
        run
    };

    let v0 = rig.version().await;
    let reader_v0 = c.schedule_version(reader).await.unwrap().0;
    let queued = c.restore_now(&restore(old, "a")).await.unwrap();
    assert_eq!(queued.worker_id, reader, "the restore worker runs it");
    assert_eq!(rig.version().await, v0 + 1, "the holder hears at once");
    assert_eq!(
        c.schedule_version(reader).await.unwrap().0,
        reader_v0,
        "the reader holds no dump"
    );
    assert_eq!(
        c.protected_dumps(rig.worker).await.unwrap(),
        vec![(old_uuid.to_string(), false)]
    );
    assert!(c.protected_dumps(reader).await.unwrap().is_empty());

    // QUEUED -> RUNNING keeps it protected without another bump.
    let run = run_of(queued.id).await;
    sqlx::query("UPDATE restore_runs SET status = 'RUNNING' WHERE id = $1")
        .bind(run)
        .execute(&c.pool)
        .await
        .unwrap();
    assert_eq!(rig.version().await, v0 + 1);
    assert_eq!(c.protected_dumps(rig.worker).await.unwrap().len(), 1);

    // A second run of the newer dump; the first one ends ABORTED.
    let second = c.restore_now(&restore(newer, "b")).await.unwrap();
    assert_eq!(rig.version().await, v0 + 2);
    let ended = finished(run, v1::RestoreStatus::Aborted);
    c.apply_events(reader, &[ended], 0).await.unwrap();
    assert_eq!(rig.version().await, v0 + 3, "its end bumps the holder");
    assert_eq!(
        c.protected_dumps(rig.worker).await.unwrap(),
        vec![(newer_uuid.to_string(), false)]
    );

    // A run whose task fails without a RestoreFinished ends too.
    sqlx::query("UPDATE tasks SET state = 'FAILED', error = 'gone' WHERE id = $1")
        .bind(second.id)
        .execute(&c.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE restore_runs SET status = 'FAILED', finished_at = now() WHERE task_id = $1",
    )
    .bind(second.id)
    .execute(&c.pool)
    .await
    .unwrap();
    assert_eq!(rig.version().await, v0 + 4);
    assert!(c.protected_dumps(rig.worker).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_deletion_removes_its_row_once_and_failed_rows_expire() {
    let rig = Rig::start().await;
    let c = &rig.catalog;
    let (_, gone) = rig.dump("SUCCEEDED", 1).await;
    rig.dump("SUCCEEDED", 0).await;
    let (_, old_failure) = rig.dump("FAILED", 40).await;
    rig.dump("FAILED", 10).await;
    let deleted = |id: u128| v1::Event {
        event_id: Uuid::from_u128(id).to_string(),
        occurred_at: Some(pgsnapman_proto::timestamp(chrono::Utc::now())),
        body: Some(Body::DumpsDeleted(v1::DumpsDeleted {
            dump_uuids: vec![gone.to_string()],
            reason: "retention".into(),
        })),
    };
    let first = Uuid::now_v7().as_u128();
    c.apply_events(rig.worker, &[deleted(first)], 0)
        .await
        .unwrap();
    let rows = "SELECT count(*) FROM dumps WHERE status = 'SUCCEEDED'";
    assert_eq!(scalar(c, rows).await, 1);
    // The same event again (a lost acknowledgement), and a second event for
    // the same dump (a crash between the event and the unlink): no change.
    c.apply_events(rig.worker, &[deleted(first)], 0)
        .await
        .unwrap();
    c.apply_events(rig.worker, &[deleted(first + 1)], 0)
        .await
        .unwrap();
    assert_eq!(scalar(c, rows).await, 1);

    // retention.failed_dumps: only the FAILED row older than it goes.
    let n = c
        .expire_failed_dumps(std::time::Duration::from_secs(30 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT dump_uuid FROM dumps WHERE status = 'FAILED'")
        .fetch_all(&c.pool)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert!(!left.contains(&old_failure));
    assert_eq!(scalar(c, rows).await, 1);
}
