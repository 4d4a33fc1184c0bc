//! The coordinator's Prometheus metrics (docs/metrics.md): gauges read from
//! the catalog at scrape time (bounded by `metrics.catalog_timeout`; a
//! catalog that does not answer gives `pgsnapman_catalog_up 0`, never a hung
//! scrape) and the queued → leased histogram observed when tasks are leased.
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::catalog::metrics::Figures;

#[cfg(test)]
mod tests;

/// `[metrics]`: the Prometheus listener (docs/metrics.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `ip:port` of the `/metrics` listener; empty (the default): off.
    pub listen: String,
    /// Longest the catalog queries of one scrape may take; then the scrape
    /// answers `pgsnapman_catalog_up 0` without the catalog's figures.
    #[serde(with = "humantime_serde")]
    pub catalog_timeout: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            catalog_timeout: Duration::from_secs(5),
        }
    }
}

impl MetricsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        pgsnapman_proto::scrape::parse_listen(&self.listen).map_err(anyhow::Error::msg)?;
        if self.catalog_timeout < Duration::from_millis(100)
            || self.catalog_timeout > Duration::from_secs(60)
        {
            anyhow::bail!("metrics.catalog_timeout must be between 100ms and 60s");
        }
        Ok(())
    }
}

/// Bounds (seconds) of the queued → leased histogram: 10 ms up to a day
/// (a task waits for an offline worker).
pub const LEASE_WAIT_BUCKETS: [f64; 12] = [
    0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

type Labels = Vec<(&'static str, String)>;

fn lease_wait_histogram() -> Histogram {
    Histogram::new(LEASE_WAIT_BUCKETS)
}

/// Every metric of the coordinator, in one registry.
pub struct Metrics {
    registry: Registry,
    lease_wait: Family<Labels, Histogram>,
    catalog_up: Gauge,
    scrape_duration: Gauge<f64, AtomicU64>,
    tasks: Family<Labels, Gauge>,
    workers: Family<Labels, Gauge>,
    dumps: Family<Labels, Gauge>,
    job_last_success: Family<Labels, Gauge>,
    /// One catalog refresh at a time: a refresh clears and refills the
    /// families, a concurrent render must not see them half filled.
    refresh: tokio::sync::Mutex<()>,
}

impl Metrics {
    fn new() -> Self {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("pgsnapman");
        let lease_wait = Family::<Labels, Histogram>::new_with_constructor(lease_wait_histogram);
        r.register_with_unit(
            "task_lease_wait",
            "Time from a task's queueing to its first lease, by task kind",
            Unit::Seconds,
            Family::clone(&lease_wait),
        );
        let m = Self {
            lease_wait,
            catalog_up: Gauge::default(),
            scrape_duration: Gauge::default(),
            tasks: Family::default(),
            workers: Family::default(),
            dumps: Family::default(),
            job_last_success: Family::default(),
            refresh: tokio::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        r.register(
            "catalog_up",
            "1 when the catalog answered this scrape's queries in time, else 0",
            m.catalog_up.clone(),
        );
        r.register_with_unit(
            "catalog_scrape_duration",
            "Time the catalog queries of this scrape took",
            Unit::Seconds,
            m.scrape_duration.clone(),
        );
        r.register(
            "tasks",
            "Ad-hoc tasks queued or leased now, by kind and state",
            m.tasks.clone(),
        );
        r.register(
            "workers",
            "Workers not revoked, by state (online: a lease stream seen recently)",
            m.workers.clone(),
        );
        r.register(
            "catalog_dumps",
            "Rows of the dump catalog, by status",
            m.dumps.clone(),
        );
        r.register(
            "job_last_success_timestamp_seconds",
            "Unix time the newest successful dump of an ACTIVE REPEAT job finished; 0: never",
            m.job_last_success.clone(),
        );
        Self {
            registry: root,
            ..m
        }
    }

    /// Records the queue wait of tasks leased for the first time.
    pub fn leased(&self, kind: &str, queued_at: DateTime<Utc>, now: DateTime<Utc>) {
        let secs = (now - queued_at).num_milliseconds().max(0) as f64 / 1000.0;
        self.lease_wait
            .get_or_create(&vec![("kind", kind.to_ascii_lowercase())])
            .observe(secs);
    }

    /// Refreshes the catalog gauges (within `timeout`) and encodes everything.
    pub async fn render(&self, catalog: &Catalog, timeout: Duration) -> String {
        let guard = self.refresh.lock().await;
        let started = Instant::now();
        let figures = tokio::time::timeout(timeout, catalog.metrics_figures()).await;
        self.scrape_duration.set(started.elapsed().as_secs_f64());
        match figures {
            Ok(Ok(f)) => self.fill(&f),
            Ok(Err(e)) => self.catalog_down(&format!("{e}")),
            Err(_) => self.catalog_down(&format!("no answer within {timeout:?}")),
        }
        let out = self.encode();
        drop(guard);
        out
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("metrics: cannot encode: {e}");
        }
        out
    }

    fn catalog_down(&self, why: &str) {
        tracing::warn!("metrics: the catalog's figures are left out of this scrape: {why}");
        self.clear();
        self.catalog_up.set(0);
    }

    fn clear(&self) {
        self.tasks.clear();
        self.workers.clear();
        self.dumps.clear();
        self.job_last_success.clear();
    }

    fn fill(&self, f: &Figures) {
        self.clear();
        self.catalog_up.set(1);
        // Zero series for the usual values, so that alert rules and graphs
        // see 0 rather than nothing.
        for state in ["online", "offline"] {
            self.workers
                .get_or_create(&vec![("state", state.into())])
                .set(0);
        }
        for status in ["succeeded", "failed"] {
            self.dumps
                .get_or_create(&vec![("status", status.into())])
                .set(0);
        }
        for (kind, state, n) in &f.tasks {
            let labels = vec![
                ("kind", kind.to_ascii_lowercase()),
                ("state", state.clone()),
            ];
            self.tasks.get_or_create(&labels).set(*n);
        }
        for (state, n) in &f.workers {
            self.workers
                .get_or_create(&vec![("state", state.clone())])
                .set(*n);
        }
        for (status, n) in &f.dumps {
            self.dumps
                .get_or_create(&vec![("status", status.to_ascii_lowercase())])
                .set(*n);
        }
        for j in &f.jobs {
            let labels = vec![
                ("job_id", j.job_id.to_string()),
                ("pg_instance", j.instance.clone()),
                ("database", j.database.clone()),
                ("type", j.dump_type.to_ascii_lowercase()),
            ];
            let ts = j.last_success.map_or(0, |t| t.timestamp());
            self.job_last_success.get_or_create(&labels).set(ts);
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The coordinator's metrics (one set per process, like Prometheus'
/// default registry).
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Serves the metrics on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    catalog: Catalog,
    timeout: Duration,
    stop: CancellationToken,
) {
    let render: pgsnapman_proto::scrape::Render = Arc::new(move || {
        let catalog = catalog.clone();
        Box::pin(async move { get().render(&catalog, timeout).await })
    });
    pgsnapman_proto::scrape::serve(listener, render, stop.cancelled_owned()).await;
}
