//! The coordinator's catalog code in process against a real catalog cluster:
//! the events of a batch apply strictly in order.
use pgsnapman_coordinator::catalog::Catalog;
use pgsnapman_proto::v1::{self, event::Body};
use pgsnapman_tests::PgCluster;
use uuid::Uuid;

use crate::common::PG_MAJOR;

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
