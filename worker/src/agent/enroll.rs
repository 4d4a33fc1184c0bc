//! The worker's side of enrollment and renewal: dial the coordinator with
//! the identity on disk (or none), exchange an enrollment token and a CSR for
//! a certificate, and renew it over the link when a third of its validity
//! is left. A failed renewal warns and keeps the working identity.
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use pgsnapman_proto::MAX_MESSAGE_BYTES;
use pgsnapman_proto::channel::{self, ClientTls};
use pgsnapman_proto::v1::worker_service_client::WorkerServiceClient;
use pgsnapman_proto::v1::{EnrollRequest, EnrollResponse, RenewCertificateRequest};

use super::{Client, HTTP2_KEEPALIVE};
use crate::Shared;
use crate::config::CoordinatorConfig;
use crate::identity::{self, Identity};

/// Ends a session so that the link reconnects with the renewed certificate.
#[derive(Debug, thiserror::Error)]
#[error("certificate renewed (serial {0}); reconnecting with it")]
pub struct Renewed(pub String);

/// A client for the coordinator at `url` (one of `cfg`'s), presenting
/// `id` when given. The coordinator is verified against
/// `coordinator.ca_file`, else the CA received at enrollment
/// (`identity/ca.crt`), else the system roots.
pub async fn dial(
    cfg: &CoordinatorConfig,
    url: &str,
    data_dir: &Path,
    id: Option<&Identity>,
) -> Result<Client> {
    let enrolled_ca = identity::dir(data_dir).join(identity::CA_FILE);
    let tls = ClientTls {
        ca_file: cfg.ca_file.clone().or_else(|| id.map(|_| enrolled_ca)),
        cert_pem: id.map(|i| i.cert_pem.clone()),
        key_pem: id.map(|i| i.key_pem.clone()),
    };
    let endpoint = channel::endpoint(url, &tls)?
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(HTTP2_KEEPALIVE)
        .keep_alive_timeout(HTTP2_KEEPALIVE)
        .keep_alive_while_idle(true);
    let channel = channel::connect(url, endpoint).await?;
    Ok(WorkerServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Enrolls with `token` at the first of the coordinator URLs that answers
/// (a refusal is final: the others share its catalog).
pub async fn enroll_any(
    cfg: &CoordinatorConfig,
    worker_name: &str,
    data_dir: &Path,
    token: &str,
) -> Result<Identity> {
    let mut failures = Vec::new();
    for url in cfg.url_list()? {
        match enroll(cfg, &url, worker_name, data_dir, token).await {
            Ok(id) => return Ok(id),
            Err(e) if e.to_string().contains("enrollment refused") => return Err(e),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    Err(anyhow!("no coordinator answered: {}", failures.join("; ")))
}

/// Enrolls with `token` at `url`: a new key pair here, its CSR to the
/// coordinator, the certificate and CA back into `<data_dir>/identity/`.
pub async fn enroll(
    cfg: &CoordinatorConfig,
    url: &str,
    worker_name: &str,
    data_dir: &Path,
    token: &str,
) -> Result<Identity> {
    let (key_pem, csr_pem) = identity::new_key_and_csr(worker_name)?;
    let mut client = dial(cfg, url, data_dir, None).await?;
    let answer = tokio::time::timeout(
        cfg.connect_timeout * 6,
        client.enroll(EnrollRequest {
            token: token.trim().to_string(),
            csr_pem,
        }),
    )
    .await
    .map_err(|_| anyhow!("no Enroll answer from {url}"))?
    .map_err(|s| {
        use tonic::Code;
        let verdict = match s.code() {
            Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::FailedPrecondition => "enrollment refused",
            _ => "enrollment failed",
        };
        anyhow!("{verdict} by {url}: {:?}: {}", s.code(), s.message())
    })?
    .into_inner();
    store(worker_name, data_dir, &key_pem, &answer)
}

fn store(
    worker_name: &str,
    data_dir: &Path,
    key_pem: &str,
    a: &EnrollResponse,
) -> Result<Identity> {
    identity::check_name(worker_name, &a.worker_name)?;
    identity::save(data_dir, key_pem, &a.certificate_pem, &a.ca_pem)
}

/// Watches the certificate's age on an open link; when a third of its
/// validity is left, asks for a new one (new key pair), swaps the files and
/// ends the session with `Renewed`. Failures warn and retry at the next check.
pub async fn renewal_loop(shared: Arc<Shared>, mut client: Client) -> Result<()> {
    let data_dir = shared.config.worker.data_dir.clone();
    let name = shared.config.worker.name.clone();
    loop {
        let Some(id) = identity::load(&data_dir)? else {
            // Plaintext link: nothing to renew.
            std::future::pending::<()>().await;
            return Ok(());
        };
        if id.needs_renewal(chrono::Utc::now()) {
            match renew_once(&mut client, &name, &data_dir).await {
                Ok(new) => {
                    tracing::info!(old_serial = %id.serial, serial = %new.serial,
                        not_after = %new.not_after, "worker certificate renewed");
                    return Err(Renewed(new.serial).into());
                }
                Err(e) => {
                    tracing::warn!(serial = %id.serial, left = ?id.remaining(chrono::Utc::now()),
                    "certificate renewal failed; keeping the current certificate: {e:#}")
                }
            }
        }
        tokio::time::sleep(id.check_interval()).await;
    }
}

async fn renew_once(client: &mut Client, name: &str, data_dir: &Path) -> Result<Identity> {
    let (key_pem, csr_pem) = identity::new_key_and_csr(name)?;
    let answer = client
        .renew_certificate(RenewCertificateRequest { csr_pem })
        .await
        .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let data_dir = data_dir.to_path_buf();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || store(&name, &data_dir, &key_pem, &answer))
        .await
        .context("saving the renewed certificate panicked")?
}
