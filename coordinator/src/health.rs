//! The standard gRPC health service (`grpc.health.v1.Health`, open to any
//! client that completes TLS: it tells only SERVING or NOT_SERVING) fed by a
//! probe of the catalog, and the reflection services (`grpc.reflection.v1`
//! and `v1alpha`, viewer and up, through the AdminService's authentication).
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::catalog::Catalog;

/// The services whose status follows the catalog, besides "" (the server).
pub const SERVICES: [&str; 2] = ["pgsnapman.v1.AdminService", "pgsnapman.v1.WorkerService"];

/// gRPC paths of the reflection methods (one per protocol version).
pub const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// How long one catalog probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Sets every status to `status`.
async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for s in SERVICES {
        reporter.set_service_status(s, status).await;
    }
}

/// Probes the catalog (`SELECT 1` through the pool) every `every` and
/// reports SERVING while it answers, NOT_SERVING while it does not, and
/// NOT_SERVING once shutdown starts (so load balancers drain first).
pub async fn follow_catalog(
    reporter: HealthReporter,
    catalog: Catalog,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<bool> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let probe = tokio::time::timeout(
            PROBE_TIMEOUT,
            sqlx::query("SELECT 1").execute(&catalog.pool),
        )
        .await;
        let up = matches!(probe, Ok(Ok(_)));
        if last != Some(up) {
            if up {
                tracing::info!("health: SERVING (the catalog answers)");
            } else {
                let why = match probe {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {PROBE_TIMEOUT:?}"),
                };
                tracing::warn!("health: NOT_SERVING, the catalog does not answer: {why}");
            }
            let status = if up {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_all(&reporter, status).await;
            last = Some(up);
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}

/// The reflection services over this build's contract and the health
/// service's. The caller puts them behind the AdminService's authentication.
pub fn reflection() -> Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pgsnapman_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = builder().build_v1().context("reflection service (v1)")?;
    let v1alpha = builder()
        .build_v1alpha()
        .context("reflection service (v1alpha)")?;
    Ok((v1, v1alpha))
}

/// True for a reflection call (viewer and up may make it; not audited).
pub fn is_reflection(path: &str) -> bool {
    REFLECTION_PATHS.contains(&path)
}
