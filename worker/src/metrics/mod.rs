//! The worker's Prometheus metrics (docs/metrics.md): counters and histograms
//! fed by the facts the worker records in its outbox (`observe`), gauges of
//! the outbox read at scrape time, served by `[metrics] listen`. Labels hold
//! only enumerations (types, statuses, kinds): never an id, name or secret.
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use pgsnapman_proto::v1::{DumpType, RestoreStatus, RestoreType, event};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::outbox::Outbox;

#[cfg(test)]
mod tests;

/// Bounds (seconds) of the dump and restore duration histograms: a second
/// up to a day.
pub const DURATION_BUCKETS: [f64; 14] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    86400.0,
];
/// Bounds (seconds) of the lease renewal round trip histogram.
pub const ROUND_TRIP_BUCKETS: [f64; 10] =
    [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0];
/// Renewals awaiting their answer that are remembered (one per running
/// task at most; past it the oldest are forgotten, unmeasured).
const MAX_PENDING_RENEWALS: usize = 4096;
/// Bounds (seconds) of the task start delay histogram.
pub const DELAY_BUCKETS: [f64; 8] = [0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0];

type Labels2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, &'static str); 1];

/// `[metrics]`: the Prometheus listener (docs/metrics.md).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `ip:port` of the `/metrics` listener; empty (the default): off.
    pub listen: String,
}

/// Every metric of the worker, in one registry.
pub struct Metrics {
    registry: Registry,
    dumps: Family<Labels2, Counter>,
    dump_duration: Family<Labels2, Histogram>,
    dump_output: Family<Labels1, Counter>,
    dump_stored: Family<Labels1, Counter>,
    restores: Family<Labels2, Counter>,
    restore_duration: Family<Labels2, Histogram>,
    verifications: Family<Labels2, Counter>,
    deleted: Family<Labels1, Counter>,
    task_start_delay: Family<Labels1, Histogram>,
    lease_renewal: Histogram,
    /// When the renewal of a task's lease awaiting its answer was sent.
    renewals_sent: Mutex<HashMap<i64, Instant>>,
    store_pack_bytes: Gauge,
    store_logical_bytes: Gauge,
    store_free_bytes: Gauge,
    store_dumps: Gauge,
    store_dedup_ratio: Gauge<f64, AtomicU64>,
    outbox_events: Gauge,
    outbox_oldest_age: Gauge<f64, AtomicU64>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn delay_histogram() -> Histogram {
    Histogram::new(DELAY_BUCKETS)
}

impl Metrics {
    fn new() -> Self {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("pgsnapman");
        let m = Self {
            registry: Registry::default(),
            dumps: Family::default(),
            dump_duration: Family::new_with_constructor(duration_histogram),
            dump_output: Family::default(),
            dump_stored: Family::default(),
            restores: Family::default(),
            restore_duration: Family::new_with_constructor(duration_histogram),
            verifications: Family::default(),
            deleted: Family::default(),
            task_start_delay: Family::new_with_constructor(delay_histogram),
            lease_renewal: Histogram::new(ROUND_TRIP_BUCKETS),
            renewals_sent: Mutex::new(HashMap::new()),
            store_pack_bytes: Gauge::default(),
            store_logical_bytes: Gauge::default(),
            store_free_bytes: Gauge::default(),
            store_dumps: Gauge::default(),
            store_dedup_ratio: Gauge::default(),
            outbox_events: Gauge::default(),
            outbox_oldest_age: Gauge::default(),
        };
        r.register(
            "dumps",
            "Dumps this worker finished, by dump type and status (succeeded, failed)",
            m.dumps.clone(),
        );
        r.register_with_unit(
            "dump_duration",
            "Time from the start of a dump to its end, by dump type and status",
            Unit::Seconds,
            m.dump_duration.clone(),
        );
        r.register_with_unit(
            "dump_output",
            "Bytes pg_dump (or the script) wrote for the dumps stored, by dump type",
            Unit::Bytes,
            m.dump_output.clone(),
        );
        r.register_with_unit(
            "dump_stored",
            "New bytes the dumps stored added to the pack store (after dedup and compression), by dump type",
            Unit::Bytes,
            m.dump_stored.clone(),
        );
        r.register(
            "restores",
            "Restores this worker finished, by restore type and status (succeeded, failed, aborted)",
            m.restores.clone(),
        );
        r.register_with_unit(
            "restore_duration",
            "Time from the start of a restore to its end, by restore type and status",
            Unit::Seconds,
            m.restore_duration.clone(),
        );
        r.register(
            "verifications",
            "Verifications finished, by kind (dump: a restore and compare; store: the pack store's check) and result (ok, failed)",
            m.verifications.clone(),
        );
        r.register(
            "deleted_dumps",
            "Dumps removed from the store, by reason (retention, task)",
            m.deleted.clone(),
        );
        r.register_with_unit(
            "task_start_delay",
            "Time from a task assignment's arrival on the lease stream to the start of its task, by task kind",
            Unit::Seconds,
            m.task_start_delay.clone(),
        );
        r.register_with_unit(
            "lease_renewal_round_trip",
            "Time from sending a lease renewal to the coordinator's answer",
            Unit::Seconds,
            m.lease_renewal.clone(),
        );
        r.register_with_unit(
            "store_pack",
            "Bytes of the pack files of the store (its size on disk)",
            Unit::Bytes,
            m.store_pack_bytes.clone(),
        );
        r.register_with_unit(
            "store_logical",
            "Bytes pg_dump wrote for the dumps the store holds",
            Unit::Bytes,
            m.store_logical_bytes.clone(),
        );
        r.register_with_unit(
            "store_free",
            "Free bytes on the file system holding the store",
            Unit::Bytes,
            m.store_free_bytes.clone(),
        );
        r.register(
            "store_dumps",
            "Dumps the store holds",
            m.store_dumps.clone(),
        );
        r.register(
            "store_dedup_ratio",
            "Logical bytes of the stored dumps per stored (compressed, deduplicated) byte; 0 while the store is empty",
            m.store_dedup_ratio.clone(),
        );
        r.register(
            "outbox_events",
            "Events waiting in the outbox for the coordinator's acknowledgement",
            m.outbox_events.clone(),
        );
        r.register_with_unit(
            "outbox_oldest_event_age",
            "Age of the oldest event waiting in the outbox; 0 when it is empty",
            Unit::Seconds,
            m.outbox_oldest_age.clone(),
        );
        Self {
            registry: root,
            ..m
        }
    }

    /// Counts one fact the worker just recorded durably in its outbox.
    pub fn observe(&self, body: &event::Body) {
        match body {
            event::Body::DumpFinished(d) => {
                let kind = dump_type(d.dump_type);
                let status = if d.succeeded { "succeeded" } else { "failed" };
                let labels = [("type", kind), ("status", status)];
                self.dumps.get_or_create(&labels).inc();
                if let Some(secs) = seconds_between(d.started_at.as_ref(), d.finished_at.as_ref()) {
                    self.dump_duration.get_or_create(&labels).observe(secs);
                }
                if d.succeeded {
                    self.dump_output
                        .get_or_create(&[("type", kind)])
                        .inc_by(d.dump_bytes);
                    self.dump_stored
                        .get_or_create(&[("type", kind)])
                        .inc_by(d.stored_bytes);
                }
            }
            event::Body::DumpVerified(v) => {
                let result = if v.ok { "ok" } else { "failed" };
                self.verifications
                    .get_or_create(&[("kind", "dump"), ("result", result)])
                    .inc();
            }
            event::Body::StoreVerified(v) => {
                let ok = v.bad_dump_uuids.is_empty() && v.problems.is_empty();
                let result = if ok { "ok" } else { "failed" };
                self.verifications
                    .get_or_create(&[("kind", "store"), ("result", result)])
                    .inc();
            }
            event::Body::DumpsDeleted(d) => {
                let reason = if d.reason == crate::retention::REASON {
                    "retention"
                } else {
                    "task"
                };
                self.deleted
                    .get_or_create(&[("reason", reason)])
                    .inc_by(d.dump_uuids.len() as u64);
            }
            event::Body::StoreStats(s) => {
                self.store_pack_bytes.set(clamp(s.pack_bytes));
                self.store_logical_bytes.set(clamp(s.logical_bytes));
                self.store_free_bytes.set(clamp(s.free_bytes));
                self.store_dumps.set(clamp(s.dumps));
                self.store_dedup_ratio
                    .set(ratio(s.logical_bytes, s.stored_bytes));
            }
            // Restores are counted where their type is known (`restore_finished`).
            _ => {}
        }
    }

    /// Counts a finished restore (the event does not carry its type).
    pub fn restore_finished(&self, restore_type: i32, status: i32, duration: Duration) {
        let kind = RestoreType::try_from(restore_type)
            .map_or("unspecified", |t| label(t.as_str_name(), "RESTORE_TYPE_"));
        let status = RestoreStatus::try_from(status)
            .map_or("unspecified", |s| label(s.as_str_name(), "RESTORE_STATUS_"));
        let labels = [("type", kind), ("status", status)];
        self.restores.get_or_create(&labels).inc();
        self.restore_duration
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
    }

    /// Records how long an assigned task of `kind` waited to start.
    pub fn task_started(&self, kind: &'static str, delay: Duration) {
        self.task_start_delay
            .get_or_create(&[("kind", kind)])
            .observe(delay.as_secs_f64());
    }

    /// Notes that the renewal of `task_id`'s lease went out (the first one
    /// not yet answered counts).
    pub fn renewal_sent(&self, task_id: i64) {
        let mut sent = self.renewals_sent.lock().unwrap_or_else(|e| e.into_inner());
        if sent.len() >= MAX_PENDING_RENEWALS && !sent.contains_key(&task_id) {
            sent.clear();
        }
        sent.entry(task_id).or_insert_with(Instant::now);
    }

    /// Records the round trip of the renewal of `task_id`'s lease, if one
    /// was sent.
    pub fn renewal_answered(&self, task_id: i64) {
        let sent = self
            .renewals_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&task_id);
        if let Some(at) = sent {
            self.lease_renewal.observe(at.elapsed().as_secs_f64());
        }
    }

    /// The exposition text (OpenMetrics), with the outbox gauges read now.
    pub fn render(&self, outbox: &Outbox) -> String {
        self.outbox_events.set(clamp(outbox.len()));
        let age = match outbox.oldest_id() {
            Ok(Some(id)) => age_of_uuid_v7(id, now_millis()),
            Ok(None) => 0.0,
            Err(e) => {
                tracing::warn!("metrics: cannot read the outbox's oldest event: {e:#}");
                0.0
            }
        };
        self.outbox_oldest_age.set(age);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("metrics: cannot encode: {e}");
        }
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The worker's metrics (one set per process, like Prometheus' default
/// registry).
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Serves the metrics on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    outbox: Arc<Outbox>,
    stop: tokio_util::sync::CancellationToken,
) {
    let render: pgsnapman_proto::scrape::Render = Arc::new(move || {
        let outbox = outbox.clone();
        Box::pin(async move {
            // The outbox is read from RocksDB: off the async threads.
            tokio::task::spawn_blocking(move || get().render(&outbox))
                .await
                .unwrap_or_default()
        })
    });
    pgsnapman_proto::scrape::serve(listener, render, stop.cancelled_owned()).await;
}

/// `DUMP_TYPE_FULL` → `full`: the label value of an enumeration.
fn label(name: &'static str, prefix: &str) -> &'static str {
    let short = name.strip_prefix(prefix).unwrap_or(name);
    // The enumerations' names are upper case; their label values lower case.
    match short {
        "FULL" => "full",
        "SCHEMA" => "schema",
        "CLUSTER" => "cluster",
        "CLUSTER_SCHEMA" => "cluster_schema",
        "GLOBALS" => "globals",
        "SCRIPT" => "script",
        "DATA" => "data",
        "SUCCEEDED" => "succeeded",
        "FAILED" => "failed",
        "ABORTED" => "aborted",
        "QUEUED" => "queued",
        "RUNNING" => "running",
        _ => "unspecified",
    }
}

fn dump_type(t: i32) -> &'static str {
    DumpType::try_from(t).map_or("unspecified", |t| label(t.as_str_name(), "DUMP_TYPE_"))
}

fn seconds_between(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> Option<f64> {
    let start = pgsnapman_proto::from_timestamp(start?)?;
    let end = pgsnapman_proto::from_timestamp(end?)?;
    let ms = (end - start).num_milliseconds().max(0);
    Some(ms as f64 / 1000.0)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn ratio(logical: u64, stored: u64) -> f64 {
    if stored == 0 {
        0.0
    } else {
        logical as f64 / stored as f64
    }
}

fn now_millis() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// Seconds since a UUIDv7 was made (its top 48 bits are Unix milliseconds).
fn age_of_uuid_v7(id: u128, now_ms: u64) -> f64 {
    let made_ms = u64::try_from(id >> 80).unwrap_or(u64::MAX);
    now_ms.saturating_sub(made_ms) as f64 / 1000.0
}
