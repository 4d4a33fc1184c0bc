//! Worker identity in the catalog (issue 13, enroll), in process against a
//! real (embedded) catalog cluster: events about another worker's tasks,
//! dumps, restore runs, jobs and instances are refused and change nothing;
//! enrollment tokens work once; revocation returns leased tasks to the queue.
//! The gRPC side with real certificates is in `identity_grpc.rs`.
#![allow(clippy::unwrap_used)]

mod cluster;

use std::time::Duration;

use pgsnapman_coordinator::catalog::{Catalog, TokenRefused};
use pgsnapman_coordinator::enrollment::{new_token, token_hash};
use pgsnapman_coordinator::error::ApiError;
use pgsnapman_proto::v1::{self, event::Body};
use uuid::Uuid;

use cluster::Cluster;

/// Two workers, A (the caller) and B (the victim), each with a job, a dump,
/// a leased task and a restore run.
struct Two {
    _cluster: Cluster,
    catalog: Catalog,
    a: i64,
    b: i64,
    b_job: i64,
    b_dump: Uuid,
    b_task: (i64, Uuid),
    b_run: i64,
    b_instance: i64,
    a_job: i64,
    a_instance: i64,
    next_event: u128,
}

async fn scalar(c: &Catalog, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&c.pool).await.unwrap()
}

impl Two {
    async fn start() -> Two {
        let cluster = Cluster::start().await;
        let catalog = Catalog::open(cluster.options.clone(), 4, 3).await.unwrap();
        let a = catalog.register_worker("w-a").await.unwrap().id;
        let b = catalog.register_worker("w-b").await.unwrap().id;
        let instance = |w: i64, name: &'static str| {
            let pool = catalog.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "INSERT INTO instances (name, host, port, username, maintenance_db, default_worker_id) \
                     VALUES ($2, '127.0.0.1', 5432, 'postgres', 'postgres', $1) RETURNING id",
                )
                .bind(w)
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        };
        let a_instance = instance(a, "src-a").await;
        let b_instance = instance(b, "src-b").await;
        let job = |w: i64, i: i64| {
            let pool = catalog.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "INSERT INTO dump_jobs (worker_id, instance_id, database, dump_type, format, cron) \
                     VALUES ($1, $2, 'app', 'FULL', 'CUSTOM', '0 3 1 1 *') RETURNING id",
                )
                .bind(w)
                .bind(i)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        };
        let a_job = job(a, a_instance).await;
        let b_job = job(b, b_instance).await;
        let b_dump = Uuid::now_v7();
        let b_dump_id: i64 = sqlx::query_scalar(
            "INSERT INTO dumps (dump_uuid, job_id, worker_id, instance_id, host, port, database, \
             dump_type, format, status, started_at, finished_at) \
             VALUES ($1, $2, $3, $4, '127.0.0.1', 5432, 'app', 'FULL', 'CUSTOM', 'SUCCEEDED', now(), now()) \
             RETURNING id",
        )
        .bind(b_dump)
        .bind(b_job)
        .bind(b)
        .bind(b_instance)
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
        let b_task: (i64, Uuid) = sqlx::query_as(
            "INSERT INTO tasks (kind, worker_id, job_id, max_attempts, state, lease_id, leased_until, attempts) \
             VALUES ('DUMP', $1, $2, 3, 'LEASED', gen_random_uuid(), now() + interval '1 hour', 1) \
             RETURNING id, lease_id",
        )
        .bind(b)
        .bind(b_job)
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
        let b_run: i64 = sqlx::query_scalar(
            "INSERT INTO restore_runs (dump_id, dump_uuid, worker_id, target_instance_id, target, status) \
             VALUES ($1, $2, $3, $4, '{}'::jsonb, 'RUNNING') RETURNING id",
        )
        .bind(b_dump_id)
        .bind(b_dump)
        .bind(b)
        .bind(b_instance)
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
        Two {
            _cluster: cluster,
            catalog,
            a,
            b,
            b_job,
            b_dump,
            b_task,
            b_run,
            b_instance,
            a_job,
            a_instance,
            next_event: Uuid::now_v7().as_u128(),
        }
    }

    fn event(&mut self, body: Body) -> v1::Event {
        self.next_event += 1;
        v1::Event {
            event_id: Uuid::from_u128(self.next_event).to_string(),
            occurred_at: Some(pgsnapman_proto::timestamp(chrono::Utc::now())),
            body: Some(body),
        }
    }

    /// Row counts and B's rows as they are: a refused batch leaves all equal.
    async fn snapshot(&self) -> Vec<i64> {
        let c = &self.catalog;
        vec![
            scalar(c, "SELECT count(*) FROM applied_events").await,
            scalar(c, "SELECT count(*) FROM messages").await,
            scalar(c, "SELECT count(*) FROM dumps").await,
            scalar(c, "SELECT count(*) FROM restore_log").await,
            scalar(c, "SELECT count(*) FROM store_stats").await,
            scalar(c, "SELECT count(*) FROM tasks WHERE state = 'LEASED'").await,
            scalar(
                c,
                "SELECT count(*) FROM restore_runs WHERE status = 'RUNNING'",
            )
            .await,
            scalar(
                c,
                "SELECT count(*) FROM dumps WHERE verified IS DISTINCT FROM 'NO'",
            )
            .await,
            scalar(c, "SELECT count(*) FROM dump_jobs").await,
        ]
    }

    fn b_task_ref(&self) -> Option<v1::TaskRef> {
        Some(v1::TaskRef {
            task_id: self.b_task.0,
            lease_id: self.b_task.1.to_string(),
        })
    }

    fn dump_of(&self, job: i64, instance: i64, uuid: Uuid) -> v1::DumpFinished {
        let now = Some(pgsnapman_proto::timestamp(chrono::Utc::now()));
        v1::DumpFinished {
            dump_uuid: uuid.to_string(),
            job_id: job,
            instance_id: instance,
            host: "127.0.0.1".into(),
            port: 5432,
            database: "app".into(),
            dump_type: v1::DumpType::Full as i32,
            format: v1::DumpFormat::Custom as i32,
            succeeded: true,
            started_at: now,
            finished_at: now,
            ..Default::default()
        }
    }
}

/// Every kind of event about worker B, sent by worker A — alone, and behind
/// a harmless event of A's own — is PERMISSION_DENIED and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_about_another_workers_work_are_refused_and_change_nothing() {
    let mut t = Two::start().await;
    let foreign: Vec<(&str, Body)> = vec![
        (
            "B's task failed",
            Body::TaskFailed(v1::TaskFailed {
                task: t.b_task_ref(),
                error: "x".into(),
            }),
        ),
        (
            "B's task finished",
            Body::TaskFinished(v1::TaskFinished {
                task: t.b_task_ref(),
                succeeded: true,
                ..Default::default()
            }),
        ),
        (
            "a dump under B's task",
            Body::DumpFinished(v1::DumpFinished {
                task: t.b_task_ref(),
                ..t.dump_of(t.a_job, t.a_instance, Uuid::now_v7())
            }),
        ),
        (
            "B's dump uuid reported again",
            Body::DumpFinished(t.dump_of(t.a_job, t.a_instance, t.b_dump)),
        ),
        (
            "a dump of B's job",
            Body::DumpFinished(t.dump_of(t.b_job, t.b_instance, Uuid::now_v7())),
        ),
        (
            "B's dump deleted",
            Body::DumpsDeleted(v1::DumpsDeleted {
                dump_uuids: vec![t.b_dump.to_string()],
                reason: "retention".into(),
            }),
        ),
        (
            "B's dump verified bad",
            Body::StoreVerified(v1::StoreVerified {
                bad_dump_uuids: vec![t.b_dump.to_string()],
                problems: vec!["x".into()],
                ..Default::default()
            }),
        ),
        (
            "a log line of B's restore run",
            Body::RestoreLog(v1::RestoreLogEntry {
                run_id: t.b_run,
                level: v1::MessageLevel::Info as i32,
                text: "x".into(),
            }),
        ),
        (
            "the end of B's restore run",
            Body::RestoreFinished(v1::RestoreFinished {
                run_id: t.b_run,
                status: v1::RestoreStatus::Failed as i32,
                ..Default::default()
            }),
        ),
        (
            "a message about B's job",
            Body::Message(v1::WorkerMessage {
                level: v1::MessageLevel::Critical as i32,
                job_id: t.b_job,
                text: "fake alarm".into(),
                ..Default::default()
            }),
        ),
        (
            "the databases of B's instance",
            Body::DatabasesDiscovered(v1::DatabasesDiscovered {
                instance_id: t.b_instance,
                databases: vec!["evil".into()],
                listed_at: Some(pgsnapman_proto::timestamp(chrono::Utc::now())),
            }),
        ),
    ];
    let before = t.snapshot().await;
    for (what, body) in foreign {
        let own = t.event(Body::Message(v1::WorkerMessage {
            level: v1::MessageLevel::Info as i32,
            text: "harmless".into(),
            ..Default::default()
        }));
        let bad = t.event(body);
        for batch in [vec![bad.clone()], vec![own, bad.clone()]] {
            let err = t
                .catalog
                .apply_events(t.a, &batch, 0)
                .await
                .expect_err(what);
            // The refusal names the foreign event, so that the worker can
            // set it aside and send the rest.
            let ApiError::EventRefused { event_id, error } = &err else {
                panic!("{what}: {err:?} does not name the refused event");
            };
            assert_eq!(event_id, &bad.event_id, "{what}");
            assert!(
                matches!(**error, ApiError::Forbidden(_)),
                "{what}: {err:?} is not PERMISSION_DENIED"
            );
            let status: tonic::Status = err.into();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{what}");
            assert_eq!(
                status
                    .metadata()
                    .get(pgsnapman_proto::REFUSED_EVENT_KEY)
                    .and_then(|v| v.to_str().ok()),
                Some(bad.event_id.as_str()),
                "{what}"
            );
            assert!(
                status.message().contains("not applied"),
                "{what}: {}",
                status.message()
            );
            assert_eq!(t.snapshot().await, before, "{what}: the catalog changed");
        }
    }
    // B's own report about the same things goes through.
    let own = t.event(Body::TaskFailed(v1::TaskFailed {
        task: t.b_task_ref(),
        error: "real".into(),
    }));
    t.catalog.apply_events(t.b, &[own], 0).await.unwrap();
    assert_eq!(
        scalar(
            &t.catalog,
            &format!(
                "SELECT count(*) FROM tasks WHERE id = {} AND state = 'FAILED'",
                t.b_task.0
            )
        )
        .await,
        1
    );
}

/// Enum values the coordinator does not know are refused with a line naming
/// the event and the value; the batch changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_enum_values_in_events_are_refused() {
    let mut t = Two::start().await;
    let before = t.snapshot().await;
    let bodies = vec![
        Body::DumpFinished(v1::DumpFinished {
            dump_type: 77,
            ..t.dump_of(t.a_job, t.a_instance, Uuid::now_v7())
        }),
        Body::DumpFinished(v1::DumpFinished {
            format: -1,
            ..t.dump_of(t.a_job, t.a_instance, Uuid::now_v7())
        }),
        Body::Message(v1::WorkerMessage {
            level: 99,
            text: "x".into(),
            ..Default::default()
        }),
        Body::RestoreFinished(v1::RestoreFinished {
            run_id: 1,
            status: 42,
            ..Default::default()
        }),
    ];
    for body in bodies {
        let e = t.event(body);
        let err = t
            .catalog
            .apply_events(t.a, std::slice::from_ref(&e), 0)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, ApiError::EventRefused { error, .. } if matches!(**error, ApiError::Invalid(_))),
            "{text}"
        );
        assert!(
            text.contains(&e.event_id) && text.contains("newer worker"),
            "{text}"
        );
        assert_eq!(t.snapshot().await, before);
    }
}

/// A token works once; a reused, an expired and a wrong one are refused,
/// each with its own reason; a refused or abandoned enrollment leaves the
/// token as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_token_works_once_and_only_before_it_expires() {
    let t = Two::start().await;
    let (token, hash) = new_token();
    t.catalog
        .add_enrollment_token(t.a, &hash, Duration::from_secs(3600), "test")
        .await
        .unwrap();
    // Begun but dropped (the CSR could not be signed): still unused.
    let dropped = t.catalog.begin_enrollment(&hash).await.unwrap().unwrap();
    drop(dropped);
    let e = t
        .catalog
        .begin_enrollment(&token_hash(&token))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.worker_name, "w-a");
    let mut tx = e.tx;
    t.catalog
        .record_certificate(&mut tx, t.a, "0AbC", chrono::Utc::now(), true)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let owner = t.catalog.certificate_owner("abc").await.unwrap().unwrap();
    assert_eq!((owner.worker_id, owner.revoked_at), (t.a, None));
    match t.catalog.begin_enrollment(&hash).await.unwrap() {
        Err(r @ TokenRefused::Reused { .. }) => {
            assert!(r.to_string().contains("already used"), "{r}")
        }
        other => panic!("second use: {:?}", other.err()),
    }
    let (_, expired) = new_token();
    t.catalog
        .add_enrollment_token(t.a, &expired, Duration::from_secs(1), "test")
        .await
        .unwrap();
    sqlx::query("UPDATE enrollment_tokens SET expires_at = now() - interval '1 second' WHERE token_sha256 = $1")
        .bind(expired.as_slice())
        .execute(&t.catalog.pool)
        .await
        .unwrap();
    match t.catalog.begin_enrollment(&expired).await.unwrap() {
        Err(r @ TokenRefused::Expired { .. }) => assert!(r.to_string().contains("expired"), "{r}"),
        other => panic!("expired token: {:?}", other.err()),
    }
    let (wrong, _) = new_token();
    match t
        .catalog
        .begin_enrollment(&token_hash(&wrong))
        .await
        .unwrap()
    {
        Err(TokenRefused::Unknown) => {}
        other => panic!("wrong token: {:?}", other.err()),
    }
    // Only hashes are stored.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM enrollment_tokens WHERE encode(token_sha256, 'escape') LIKE '%pse_%'",
    )
    .fetch_one(&t.catalog.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0);
}

/// Revoking B revokes its certificates and unused tokens and returns its
/// leased task to the queue (with no lease: a late result is stale).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_returns_leased_tasks_to_the_queue() {
    let mut t = Two::start().await;
    let mut conn = t.catalog.pool.acquire().await.unwrap();
    t.catalog
        .record_certificate(&mut conn, t.b, "b1", chrono::Utc::now(), true)
        .await
        .unwrap();
    drop(conn);
    let (_, hash) = new_token();
    t.catalog
        .add_enrollment_token(t.b, &hash, Duration::from_secs(3600), "test")
        .await
        .unwrap();
    let (w, requeued) = t.catalog.revoke_worker(t.b).await.unwrap();
    assert_eq!(requeued, 1);
    assert!(w.revoked_at.is_some());
    assert!(
        w.certificate_serial.is_none(),
        "no unrevoked certificate left"
    );
    let (state, lease): (String, Option<Uuid>) =
        sqlx::query_as("SELECT state, lease_id FROM tasks WHERE id = $1")
            .bind(t.b_task.0)
            .fetch_one(&t.catalog.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), lease), ("QUEUED", None));
    // The requeued task wakes B's lease streams (a catalog notification):
    // a stream the revocation has not cut yet still gets nothing.
    let claimed = t
        .catalog
        .claim(t.b, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(claimed.is_empty(), "a revoked worker leased a task");
    let owner = t.catalog.certificate_owner("b1").await.unwrap().unwrap();
    assert!(owner.revoked_at.is_some());
    assert!(matches!(
        t.catalog.begin_enrollment(&hash).await.unwrap(),
        Err(TokenRefused::Expired { .. })
    ));
    // The revoked worker's late result for the old lease changes nothing.
    let late = t.event(Body::TaskFailed(v1::TaskFailed {
        task: t.b_task_ref(),
        error: "late".into(),
    }));
    t.catalog.apply_events(t.b, &[late], 0).await.unwrap();
    let state: String = sqlx::query_scalar("SELECT state FROM tasks WHERE id = $1")
        .bind(t.b_task.0)
        .fetch_one(&t.catalog.pool)
        .await
        .unwrap();
    assert_eq!(state, "QUEUED");
}
