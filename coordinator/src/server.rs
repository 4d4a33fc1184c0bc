//! Start-up and shutdown: catalog (embedded or external), the PKI, the gRPC
//! endpoint (TLS; plaintext on loopback only, when asked), the lease reaper, the
//! history pruner, and a clean stop when the caller's token is cancelled
//! (main: SIGTERM/SIGINT).
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use pgsnapman_proto::v1::admin_service_server::AdminServiceServer;
use pgsnapman_proto::v1::worker_service_server::WorkerServiceServer;
use pgsnapman_proto::{MAX_MESSAGE_BYTES, redact_url};
use sqlx::postgres::PgConnectOptions;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::admin::Admin;
use crate::auth::{AdminAuth, AuthState};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::embedded::EmbeddedCatalog;
use crate::link::{IdentityMode, Link};
use crate::pki::Pki;
use crate::streams::StreamRegistry;

/// Longest a client may take to finish the TLS handshake (handshakes run
/// concurrently; a stalled one only holds its own connection).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the coordinator until `shutdown` is cancelled (then stops cleanly
/// and returns `Ok`) or something fails.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<()> {
    std::fs::create_dir_all(&cfg.coordinator.data_dir).with_context(|| {
        format!(
            "create coordinator.data_dir {}",
            cfg.coordinator.data_dir.display()
        )
    })?;
    let pki = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Pki::load(&cfg))
            .await
            .context("PKI start-up panicked")??
    };
    tracing::info!(
        ca_fingerprint = pki.ca_fingerprint(),
        worker_enrollment = pki.can_sign(),
        "PKI ready"
    );
    if !pki.can_sign() {
        tracing::warn!("worker enrollment is off: pki.ca_cert_file is set without pki.ca_key_file");
    }
    let pki = Arc::new(pki);
    let embedded = if cfg.catalog.url.is_empty() {
        let data_dir = cfg.coordinator.data_dir.clone();
        let catalog_cfg = cfg.catalog.clone();
        Some(
            tokio::task::spawn_blocking(move || EmbeddedCatalog::start(&data_dir, &catalog_cfg))
                .await
                .context("embedded catalog start-up panicked")??,
        )
    } else {
        None
    };
    let result = serve(&cfg, pki, embedded.as_ref(), &shutdown).await;
    if let Some(e) = embedded {
        let _ = tokio::task::spawn_blocking(move || e.stop()).await;
    }
    result
}

async fn serve(
    cfg: &Config,
    pki: Arc<Pki>,
    embedded: Option<&EmbeddedCatalog>,
    stop_requested: &CancellationToken,
) -> Result<()> {
    let options: PgConnectOptions = match embedded {
        Some(e) => e.catalog_options().await?,
        None => cfg.catalog.url.parse().with_context(|| {
            format!(
                "catalog.url {} is not a valid Postgres URL",
                redact_url(&cfg.catalog.url)
            )
        })?,
    };
    let catalog =
        Catalog::open(options, cfg.catalog.max_connections, cfg.lease.max_attempts).await?;
    tracing::info!("catalog ready (migrations applied)");
    catalog
        .review_legacy_passwords()
        .await
        .map_err(|e| anyhow::anyhow!("review passwords stored before sealing: {e}"))?;
    crate::auth::token::bootstrap(&catalog, &cfg.coordinator.data_dir).await?;

    // Cancelled only once the server future has been told to stop, so that
    // it cannot finish before the tasks below are drained.
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

    let reaper = {
        let catalog = catalog.clone();
        let every = cfg.lease.reap_interval;
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        match catalog.reap().await {
                            Ok(0) => {}
                            Ok(n) => tracing::warn!(expired = n, "expired task leases reaped"),
                            Err(e) => tracing::warn!("lease reaper: {e}"),
                        }
                        match catalog.queue_due_single_jobs(chrono::Utc::now()).await {
                            Ok(ids) if ids.is_empty() => {}
                            Ok(ids) => tracing::info!(tasks = ?ids, "SINGLE jobs queued"),
                            Err(e) => tracing::warn!("SINGLE jobs: {e}"),
                        }
                        match catalog.queue_due_restores(chrono::Utc::now()).await {
                            Ok(ids) if ids.is_empty() => {}
                            Ok(ids) => tracing::info!(tasks = ?ids, "restore jobs queued"),
                            Err(e) => tracing::warn!("restore jobs: {e}"),
                        }
                    }
                }
            }
        })
    };

    let pruner = {
        let catalog = catalog.clone();
        let r = cfg.retention.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(r.prune_interval);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        match catalog.prune_history(r.applied_events, r.messages, r.restore_log).await {
                            Ok(n) if n == Default::default() => {}
                            Ok(n) => tracing::info!(applied_events = n.applied_events, messages = n.messages,
                                restore_log = n.restore_log, "old catalog history pruned"),
                            Err(e) => tracing::warn!("pruning the catalog history: {e}"),
                        }
                        match catalog.prune_audit(r.audit).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(audit_log = n, "old audit rows pruned"),
                            Err(e) => tracing::warn!("pruning the audit log: {e}"),
                        }
                        match catalog.expire_failed_dumps(r.failed_dumps).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(failed_dumps = n, "old FAILED dump rows expired"),
                            Err(e) => tracing::warn!("expiring FAILED dump rows: {e}"),
                        }
                    }
                }
            }
        })
    };

    if let Some(listener) = pgsnapman_proto::scrape::listen(&cfg.metrics.listen)
        .await
        .map_err(anyhow::Error::msg)?
    {
        tracker.spawn(crate::metrics::serve(
            listener,
            catalog.clone(),
            cfg.metrics.catalog_timeout,
            shutdown.clone(),
        ));
    }

    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)));

    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if !cfg.server.plaintext {
        let (cert, key) = pki.server_identity();
        // Client certificates are asked for but optional at the TLS layer:
        // operators may come with a token only; the WorkerService requires
        // a verified one itself.
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(pki.client_ca_pem()))
            .client_auth_optional(true)
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        builder = builder.tls_config(tls).context("TLS configuration")?;
    }
    let streams = StreamRegistry::new(cfg.lease.max_lease_streams, cfg.lease.max_upload_streams);
    let wakeups = Arc::new(crate::wake::Wakeups::default());
    if cfg.lease.notify {
        tracker.spawn(crate::wake::listen(
            catalog.pool.clone(),
            wakeups.clone(),
            shutdown.clone(),
        ));
    }
    // Without TLS (loopback only) there is no client certificate to believe.
    let identity = if !cfg.server.plaintext {
        IdentityMode::Certificate
    } else {
        tracing::warn!(
            "plaintext: workers are identified by the name they present (loopback only); enable TLS for certificate identity"
        );
        IdentityMode::PresentedName
    };
    let notifier = Arc::new(crate::notify::Notifier::new(
        catalog.clone(),
        cfg.notify.clone(),
        &cfg.coordinator.data_dir,
    )?);
    if cfg.notify.enabled {
        tracker.spawn(notifier.clone().run(shutdown.clone()));
    }
    let admin = Arc::new(Admin {
        catalog: catalog.clone(),
        enrollment: cfg.enrollment.clone(),
        streams: streams.clone(),
        pki: pki.clone(),
        watches: crate::watch::Watches::new(
            wakeups.clone(),
            cfg.admin.max_watch_streams,
            shutdown.clone(),
        ),
        notify: notifier,
    });
    let auth = AuthState::new(catalog.clone(), cfg.admin.rate_limits());
    let dashboard = crate::dashboard::start(
        &cfg.dashboard,
        cfg.server.plaintext,
        (!cfg.server.plaintext).then(|| pki.server_identity()),
        catalog.clone(),
        admin.clone(),
        auth.clone(),
        shutdown.clone(),
    )
    .await?;
    let admin = AdminServiceServer::from_arc(admin)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminAuth::new(admin, auth.clone());
    let (reflection_v1, reflection_v1alpha) = crate::health::reflection()?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    tracker.spawn(crate::health::follow_catalog(
        health_reporter,
        catalog.clone(),
        cfg.server.health_interval,
        shutdown.clone(),
    ));
    let link = WorkerServiceServer::new(Link {
        catalog: catalog.clone(),
        lease: cfg.lease.clone(),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        streams,
        identity,
        pki: pki.clone(),
        enrollment: cfg.enrollment.clone(),
        wakeups,
        syncs: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from((cfg.catalog.max_connections / crate::link::SYNC_SHARE).max(1))
                .unwrap_or(1),
        )),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let stop = shutdown.clone();
    let server = builder
        .add_service(admin)
        .add_service(link)
        .add_service(health)
        .add_service(AdminAuth::new(reflection_v1, auth.clone()))
        .add_service(AdminAuth::new(reflection_v1alpha, auth))
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
    let mut server = std::pin::pin!(server);

    if let Some(ready) = &cfg.server.ready_file {
        let tmp = ready.with_extension("tmp");
        std::fs::write(&tmp, format!("{addr}\n"))
            .and_then(|()| std::fs::rename(&tmp, ready))
            .with_context(|| format!("write ready file {}", ready.display()))?;
    }
    tracing::info!(%addr, tls = !cfg.server.plaintext, "coordinator listening");

    tokio::select! {
        r = &mut server => {
            r.context("gRPC server")?;
            return Ok(());
        }
        () = stop_requested.cancelled() => tracing::info!("shutting down"),
    }
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(15), &mut server)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after 15s; closing them");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    if let Some(d) = dashboard {
        let _ = d.await;
    }
    let _ = reaper.await;
    let _ = pruner.await;
    catalog.pool.close().await;
    tracing::info!("coordinator stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    use super::*;

    /// In process: `run` starts (embedded catalog included), serves, and
    /// returns `Ok` once its token is cancelled, stopping the catalog.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_serves_until_its_token_is_cancelled() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        // The embedded cluster's OS user (when run as root) must reach it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("make the directory traversable");
        let ready = dir.path().join("ready");
        let mut cfg = Config::default();
        cfg.server.listen = "127.0.0.1:0".into();
        cfg.server.ready_file = Some(ready.clone());
        cfg.coordinator.data_dir = dir.path().join("data");
        cfg.catalog.embedded_fallback_dir = dir.path().join("fallback");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(run(cfg, shutdown.clone()));
        // initdb runs on first start: allow for it.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ready.exists() {
            if server.is_finished() {
                panic!("run ended before it was ready: {:?}", server.await);
            }
            assert!(Instant::now() < deadline, "not ready after 120s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(90), server)
            .await
            .expect("run returns after its token is cancelled")
            .expect("run does not panic");
        assert!(result.is_ok(), "{result:?}");
        assert!(
            !dir.path().join("data/catalog/data/postmaster.pid").exists(),
            "the embedded catalog is still running"
        );
    }
}
