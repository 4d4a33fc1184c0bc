//! The coordinator's catalog code in process against a real catalog cluster:
//! events of a batch apply strictly in order, task results count only under
//! the current lease, a transient fault while handing out a task requeues
//! it, a queued restore never goes back to an older dump, and old history is
//! pruned.
use std::time::Duration;

use pgsnapman_coordinator::catalog::Catalog;
use pgsnapman_proto::v1::{self, event::Body};
use pgsnapman_tests::PgCluster;
use uuid::Uuid;

use crate::common::PG_MAJOR;

const TTL: Duration = Duration::from_secs(60);

struct Cat {
    _cluster: PgCluster,
    catalog: Catalog,
    worker: i64,
    instance: i64,
    job: i64,
    /// Event ids are handed out in ascending order.
    next_event: u128,
}

impl Cat {
    async fn start() -> Cat {
        let cluster = PgCluster::start(PG_MAJOR).unwrap();
        let options = cluster.url("postgres").parse().unwrap();
        let catalog = Catalog::open(options, 4, 3).await.unwrap();
        let worker = catalog.register_worker("w-cat").await.unwrap().id;
        let instance: i64 = sqlx::query_scalar(
            "INSERT INTO instances (name, host, port, username, maintenance_db, default_worker_id) \
             VALUES ('src', '127.0.0.1', 5432, 'postgres', 'postgres', $1) RETURNING id",
        )
        .bind(worker)
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
        let job: i64 = sqlx::query_scalar(
            "INSERT INTO dump_jobs (worker_id, instance_id, database, dump_type, format, cron) \
             VALUES ($1, $2, 'app', 'FULL', 'CUSTOM', '0 3 1 1 *') RETURNING id",
        )
        .bind(worker)
        .bind(instance)
        .fetch_one(&catalog.pool)
        .await
        .unwrap();
        Cat {
            _cluster: cluster,
            catalog,
            worker,
            instance,
            job,
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

    async fn apply(&mut self, bodies: Vec<Body>) {
        let events: Vec<v1::Event> = bodies.into_iter().map(|b| self.event(b)).collect();
        self.catalog
            .apply_events(self.worker, &events, 0)
            .await
            .unwrap();
    }

    fn dump(&self, uuid: Uuid, finished: chrono::DateTime<chrono::Utc>) -> v1::DumpFinished {
        let at = Some(pgsnapman_proto::timestamp(finished));
        v1::DumpFinished {
            dump_uuid: uuid.to_string(),
            job_id: self.job,
            instance_id: self.instance,
            host: "127.0.0.1".into(),
            port: 5432,
            database: "app".into(),
            dump_type: v1::DumpType::Full as i32,
            format: v1::DumpFormat::Custom as i32,
            succeeded: true,
            started_at: at,
            finished_at: at,
            ..Default::default()
        }
    }

    async fn scalar(&self, sql: &str) -> Option<String> {
        sqlx::query_scalar(sql)
            .fetch_optional(&self.catalog.pool)
            .await
            .unwrap()
    }

    async fn task_state(&self, task: i64) -> (String, i32) {
        let t = self.catalog.task(task).await.unwrap();
        (t.state, t.attempts)
    }

    /// Leases `task` (the only queued one) and returns its lease.
    async fn lease(&self, task: i64) -> v1::TaskRef {
        let claimed = self.catalog.claim(self.worker, 1, TTL).await.unwrap();
        assert_eq!(claimed.len(), 1, "one task to lease");
        assert_eq!(claimed[0].task.id, task);
        v1::TaskRef {
            task_id: task,
            lease_id: claimed[0].task.lease_id.unwrap().to_string(),
        }
    }

    /// The lease runs out and the reaper queues the task again.
    async fn expire(&self, task: i64) {
        sqlx::query("UPDATE tasks SET leased_until = now() - interval '1 second' WHERE id = $1")
            .bind(task)
            .execute(&self.catalog.pool)
            .await
            .unwrap();
        assert!(self.catalog.reap().await.unwrap() >= 1);
        assert_eq!(self.task_state(task).await.0, "QUEUED");
    }

    async fn restore_task(&self, dump_id: i64) -> (i64, i64) {
        let t = self
            .catalog
            .restore_now(&v1::RestoreNowRequest {
                what: Some(v1::restore_now_request::What::Dump(v1::AdHocRestore {
                    dump_id,
                    target: Some(v1::RestoreTarget {
                        instance_id: self.instance,
                        database: "copy".into(),
                        ..Default::default()
                    }),
                })),
            })
            .await
            .unwrap();
        (t.id, t.restore_run_id.unwrap())
    }

    async fn dump_id(&self, uuid: Uuid) -> i64 {
        sqlx::query_scalar("SELECT id FROM dumps WHERE dump_uuid = $1")
            .bind(uuid)
            .fetch_one(&self.catalog.pool)
            .await
            .unwrap()
    }

    async fn run_status(&self, run: i64) -> String {
        self.catalog.restore_run(run).await.unwrap().status
    }
}

fn restore_finished(run: i64, task: &v1::TaskRef, ok: bool) -> Body {
    Body::RestoreFinished(v1::RestoreFinished {
        run_id: run,
        task: Some(task.clone()),
        status: if ok {
            v1::RestoreStatus::Succeeded
        } else {
            v1::RestoreStatus::Failed
        } as i32,
        error: if ok { String::new() } else { "boom".into() },
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_batch_apply_in_order() {
    let mut c = Cat::start().await;
    let now = chrono::Utc::now();
    // A verification about a dump reported in the same batch finds its row.
    let damaged = Uuid::now_v7();
    c.apply(vec![
        Body::DumpFinished(c.dump(damaged, now)),
        Body::StoreVerified(v1::StoreVerified {
            bad_dump_uuids: vec![damaged.to_string()],
            problems: vec!["chunk missing".into()],
            ..Default::default()
        }),
    ])
    .await;
    let verified = c
        .scalar(&format!(
            "SELECT verified FROM dumps WHERE dump_uuid = '{damaged}'"
        ))
        .await;
    assert_eq!(verified.as_deref(), Some("FAILED"));
    // A deletion after the dump's row in the same batch leaves no row.
    let deleted = Uuid::now_v7();
    let kept = Uuid::now_v7();
    c.apply(vec![
        Body::DumpFinished(c.dump(deleted, now)),
        Body::DumpsDeleted(v1::DumpsDeleted {
            dump_uuids: vec![deleted.to_string()],
            reason: "retention".into(),
        }),
        Body::DumpFinished(c.dump(kept, now)),
    ])
    .await;
    let left = c
        .scalar(&format!(
            "SELECT string_agg(dump_uuid::text, ',') FROM dumps WHERE dump_uuid IN ('{deleted}', '{kept}')"
        ))
        .await;
    assert_eq!(left, Some(kept.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_results_count_only_under_the_current_lease() {
    let mut c = Cat::start().await;
    let source = Uuid::now_v7();
    c.apply(vec![Body::DumpFinished(c.dump(source, chrono::Utc::now()))])
        .await;
    let dump_id = c.dump_id(source).await;

    // Leased again after expiry: the first lease's success changes nothing.
    let (task, run) = c.restore_task(dump_id).await;
    let first = c.lease(task).await;
    c.expire(task).await;
    let second = c.lease(task).await;
    c.apply(vec![restore_finished(run, &first, true)]).await;
    assert_eq!(c.task_state(task).await, ("LEASED".into(), 2));
    assert_eq!(c.run_status(run).await, "RUNNING");
    c.apply(vec![restore_finished(run, &second, false)]).await;
    assert_eq!(c.task_state(task).await.0, "FAILED");
    assert_eq!(c.run_status(run).await, "FAILED");

    // Queued again but not leased yet: the late success completes it, and
    // nothing is left to lease.
    let (task, run) = c.restore_task(dump_id).await;
    let first = c.lease(task).await;
    c.expire(task).await;
    c.apply(vec![restore_finished(run, &first, true)]).await;
    assert_eq!(c.task_state(task).await, ("SUCCEEDED".into(), 1));
    assert_eq!(c.run_status(run).await, "SUCCEEDED");
    assert!(c.catalog.claim(c.worker, 1, TTL).await.unwrap().is_empty());

    // A dump reported under an old lease is recorded (it is in the store)
    // without completing the task; reported again under the current lease,
    // the task completes with that one row.
    let task = c.catalog.dump_now(c.job).await.unwrap().id;
    let first = c.lease(task).await;
    c.expire(task).await;
    let second = c.lease(task).await;
    let made = Uuid::now_v7();
    let mut d = c.dump(made, chrono::Utc::now());
    d.task = Some(first);
    c.apply(vec![Body::DumpFinished(d.clone())]).await;
    assert_eq!(c.task_state(task).await.0, "LEASED");
    d.task = Some(second);
    c.apply(vec![Body::DumpFinished(d)]).await;
    let t = c.catalog.task(task).await.unwrap();
    assert_eq!(t.state, "SUCCEEDED");
    assert_eq!(t.dump_id, Some(c.dump_id(made).await));
    let rows = c
        .scalar(&format!(
            "SELECT count(*)::text FROM dumps WHERE task_id = {task}"
        ))
        .await;
    assert_eq!(rows.as_deref(), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_fault_while_handing_out_a_task_queues_it_again() {
    let mut c = Cat::start().await;
    let uuid = Uuid::now_v7();
    c.apply(vec![Body::DumpFinished(c.dump(uuid, chrono::Utc::now()))])
        .await;
    let dump_id = c.dump_id(uuid).await;
    let task: i64 = sqlx::query_scalar(
        "INSERT INTO tasks (kind, worker_id, dump_id, max_attempts) VALUES ('DELETE', $1, $2, 3) RETURNING id",
    )
    .bind(c.worker)
    .bind(dump_id)
    .fetch_one(&c.catalog.pool)
    .await
    .unwrap();
    // The dumps table is briefly unreadable (a catalog fault).
    let away = |sql: &'static str| {
        let pool = c.catalog.pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.unwrap() }
    };
    away("ALTER TABLE dumps RENAME TO dumps_away").await;
    let claimed = c.catalog.claim(c.worker, 1, TTL).await.unwrap();
    assert!(claimed.is_empty());
    assert_eq!(c.task_state(task).await, ("QUEUED".into(), 1));
    away("ALTER TABLE dumps_away RENAME TO dumps").await;
    let claimed = c.catalog.claim(c.worker, 1, TTL).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(c.task_state(task).await, ("LEASED".into(), 2));
    // A lasting fault fails it once its attempts are used up.
    c.expire(task).await;
    away("ALTER TABLE dumps RENAME TO dumps_away").await;
    assert!(c.catalog.claim(c.worker, 1, TTL).await.unwrap().is_empty());
    away("ALTER TABLE dumps_away RENAME TO dumps").await;
    let t = c.catalog.task(task).await.unwrap();
    assert_eq!((t.state.as_str(), t.attempts), ("FAILED", 3), "{}", t.error);
    assert!(t.error.contains("handed out"), "{}", t.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_copy_never_goes_back_to_an_older_dump() {
    let mut c = Cat::start().await;
    c.catalog
        .add_restore_job(&v1::AddRestoreJobRequest {
            kind: v1::RestoreJobKind::Trigger as i32,
            source_job_id: c.job,
            target: Some(v1::RestoreTarget {
                instance_id: c.instance,
                database: "copy".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let newer = Uuid::now_v7();
    let older = Uuid::now_v7();
    // The newer dump arrives first, then an older one (reported late).
    c.apply(vec![Body::DumpFinished(c.dump(newer, now))]).await;
    c.apply(vec![Body::DumpFinished(
        c.dump(older, now - chrono::Duration::hours(1)),
    )])
    .await;
    let queued = c
        .scalar("SELECT dump_id::text FROM tasks WHERE kind = 'RESTORE' AND state = 'QUEUED'")
        .await;
    assert_eq!(queued, Some(c.dump_id(newer).await.to_string()));
    let runs = c
        .scalar("SELECT string_agg(dump_id::text, ',') FROM restore_runs")
        .await;
    assert_eq!(runs, Some(c.dump_id(newer).await.to_string()));
    // A newer one still takes its place.
    let newest = Uuid::now_v7();
    c.apply(vec![Body::DumpFinished(
        c.dump(newest, now + chrono::Duration::hours(1)),
    )])
    .await;
    let queued = c
        .scalar("SELECT dump_id::text FROM tasks WHERE kind = 'RESTORE' AND state = 'QUEUED'")
        .await;
    assert_eq!(queued, Some(c.dump_id(newest).await.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_history_is_pruned_by_its_retention() {
    let mut c = Cat::start().await;
    let uuid = Uuid::now_v7();
    c.apply(vec![Body::DumpFinished(c.dump(uuid, chrono::Utc::now()))])
        .await;
    let (_, run) = c.restore_task(c.dump_id(uuid).await).await;
    const DAY: u64 = 24 * 3600;
    let pool = c.catalog.pool.clone();
    // One old and one recent row in each table.
    for age in ["40 days", "1 hour"] {
        sqlx::query(&format!(
            "INSERT INTO applied_events (worker_id, event_id, applied_at) \
             VALUES ($1, gen_random_uuid(), now() - interval '{age}')"
        ))
        .bind(c.worker)
        .execute(&pool)
        .await
        .unwrap();
    }
    for age in ["100 days", "1 hour"] {
        sqlx::query(&format!(
            "INSERT INTO messages (level, class, text, logged_at) VALUES (3, 'TEST', 'm', now() - interval '{age}')"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    for age in ["200 days", "1 hour"] {
        sqlx::query(&format!(
            "INSERT INTO restore_log (run_id, level, text, logged_at) VALUES ($1, 3, 'l', now() - interval '{age}')"
        ))
        .bind(run)
        .execute(&pool)
        .await
        .unwrap();
    }
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let counts = || async {
        (
            count("applied_events").await,
            count("messages").await,
            count("restore_log").await,
        )
    };
    let before = counts().await;
    let prune = || {
        c.catalog.prune_history(
            Duration::from_secs(30 * DAY),
            Duration::from_secs(90 * DAY),
            Duration::from_secs(180 * DAY),
        )
    };
    let pruned = prune().await.unwrap();
    assert_eq!(
        (pruned.applied_events, pruned.messages, pruned.restore_log),
        (1, 1, 1)
    );
    assert_eq!(counts().await, (before.0 - 1, before.1 - 1, before.2 - 1));
    // Nothing more to prune.
    assert_eq!(prune().await.unwrap(), Default::default());
}

/// `DumpsCompressed` sets the stored bytes of the sender's own dumps; a
/// batch of another worker naming them is refused, and an unknown dump
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_dumps_take_their_stored_bytes_from_their_own_worker_only() {
    let mut c = Cat::start().await;
    let dump = Uuid::now_v7();
    let mut row = c.dump(dump, chrono::Utc::now());
    row.stored_bytes = 1_000_000;
    c.apply(vec![Body::DumpFinished(row)]).await;
    let compressed = |uuid: Uuid, bytes: u64| {
        Body::DumpsCompressed(v1::DumpsCompressed {
            dumps: vec![v1::CompressedDump {
                dump_uuid: uuid.to_string(),
                stored_bytes: bytes,
            }],
        })
    };
    let stored = format!("SELECT stored_bytes::text FROM dumps WHERE dump_uuid = '{dump}'");
    c.apply(vec![compressed(dump, 400_000)]).await;
    assert_eq!(c.scalar(&stored).await.as_deref(), Some("400000"));

    let other = c.catalog.register_worker("w-other").await.unwrap().id;
    let event = c.event(compressed(dump, 1));
    let err = c
        .catalog
        .apply_events(other, &[event], 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("its own work"), "{err}");
    assert_eq!(c.scalar(&stored).await.as_deref(), Some("400000"));

    let unknown = Uuid::now_v7();
    c.apply(vec![compressed(unknown, 5)]).await;
    assert_eq!(c.scalar(&stored).await.as_deref(), Some("400000"));
    let rows = c
        .scalar(&format!(
            "SELECT count(*)::text FROM dumps WHERE dump_uuid = '{unknown}'"
        ))
        .await;
    assert_eq!(rows.as_deref(), Some("0"));
}
