//! Enroll (one-time token + CSR → certificate, the only WorkerService call
//! without a client certificate) and RenewCertificate (over mTLS). Every
//! outcome is audited; no token text is logged or kept.
use pgsnapman_proto::v1;
use tonic::{Request, Status};

use super::{Caller, IdentityMode, Link};
use crate::enrollment::{MAX_TOKEN_LEN, TOKEN_PREFIX, audit, token_hash};
use crate::pki::{PkiError, SignedCert};

/// Largest CSR accepted (a P-256 or RSA-4096 request is 0.5-2 KiB).
pub const MAX_CSR_PEM: usize = 16 * 1024;

fn pki_status(e: PkiError) -> Status {
    match e {
        PkiError::NoCaKey => Status::failed_precondition(e.to_string()),
        PkiError::BadCsr(_) | PkiError::BadName(_) => Status::invalid_argument(e.to_string()),
        PkiError::BadValidity(_) | PkiError::Sign(_) => {
            tracing::error!("signing a worker certificate: {e}");
            Status::internal("the coordinator could not sign the certificate (details in its log)")
        }
    }
}

fn check_csr_size(csr: &str) -> Result<(), Status> {
    if csr.len() > MAX_CSR_PEM {
        return Err(Status::invalid_argument(format!(
            "the certificate signing request is {} bytes, more than the {MAX_CSR_PEM} accepted",
            csr.len()
        )));
    }
    Ok(())
}

fn response(worker_name: &str, ca_pem: &str, c: SignedCert) -> v1::EnrollResponse {
    v1::EnrollResponse {
        worker_name: worker_name.to_string(),
        certificate_pem: c.pem,
        ca_pem: ca_pem.to_string(),
        serial: c.serial,
        not_after: Some(pgsnapman_proto::timestamp(c.not_after)),
    }
}

impl Link {
    /// Audits a refused enrollment (the token's worker, if it named one).
    async fn refuse_enroll(
        &self,
        worker: &str,
        csr_bytes: usize,
        peer: Option<&str>,
        detail: &str,
    ) {
        audit(
            &self.catalog,
            worker,
            "Enroll",
            &serde_json::json!({ "csr_bytes": csr_bytes }),
            peer,
            false,
            detail,
        )
        .await;
    }

    pub(super) async fn enroll_inner(
        &self,
        req: Request<v1::EnrollRequest>,
    ) -> Result<v1::EnrollResponse, Status> {
        let peer = req.remote_addr().map(|a| a.to_string());
        let req = req.into_inner();
        let csr_bytes = req.csr_pem.len();
        let token = req.token.trim();
        if token.len() > MAX_TOKEN_LEN || !token.starts_with(TOKEN_PREFIX) {
            let msg = format!(
                "this is not an enrollment token (they start with {TOKEN_PREFIX} and are {} characters); issue one with `pgsnap worker enroll-token NAME`",
                TOKEN_PREFIX.len() + 43
            );
            self.refuse_enroll("", csr_bytes, peer.as_deref(), "malformed token")
                .await;
            return Err(Status::unauthenticated(msg));
        }
        if let Err(s) = check_csr_size(&req.csr_pem) {
            self.refuse_enroll("", csr_bytes, peer.as_deref(), "oversize CSR")
                .await;
            return Err(s);
        }
        let mut enrollment = match self.catalog.begin_enrollment(&token_hash(token)).await? {
            Ok(e) => e,
            Err(refused) => {
                let worker = match &refused {
                    crate::catalog::TokenRefused::Unknown => String::new(),
                    crate::catalog::TokenRefused::Reused { worker, .. }
                    | crate::catalog::TokenRefused::Expired { worker, .. } => worker.clone(),
                };
                self.refuse_enroll(&worker, csr_bytes, peer.as_deref(), &refused.to_string())
                    .await;
                tracing::warn!(worker = %worker, peer = peer.as_deref().unwrap_or("-"), "enrollment refused: {refused}");
                return Err(Status::unauthenticated(refused.to_string()));
            }
        };
        let name = enrollment.worker_name.clone();
        // A bad CSR leaves the token unused (the transaction rolls back):
        // the worker may try again with the same token.
        let signed =
            match self
                .pki
                .sign_worker_csr(&req.csr_pem, &name, self.enrollment.cert_validity)
            {
                Ok(c) => c,
                Err(e) => {
                    self.refuse_enroll(&name, csr_bytes, peer.as_deref(), &e.to_string())
                        .await;
                    return Err(pki_status(e));
                }
            };
        self.catalog
            .record_certificate(
                &mut enrollment.tx,
                enrollment.worker_id,
                &signed.serial,
                signed.not_after,
                true,
            )
            .await?;
        enrollment
            .tx
            .commit()
            .await
            .map_err(crate::error::ApiError::from)?;
        audit(
            &self.catalog,
            &name,
            "Enroll",
            &serde_json::json!({ "worker": name, "serial": signed.serial }),
            peer.as_deref(),
            true,
            &format!("certificate valid until {}", signed.not_after),
        )
        .await;
        tracing::info!(worker = %name, serial = %signed.serial, not_after = %signed.not_after, "worker enrolled");
        Ok(response(&name, self.pki.ca_pem(), signed))
    }

    pub(super) async fn renew_inner(
        &self,
        req: Request<v1::RenewCertificateRequest>,
    ) -> Result<v1::EnrollResponse, Status> {
        if self.identity != IdentityMode::Certificate {
            return Err(Status::failed_precondition(
                "certificate renewal needs TLS with client certificates; this coordinator serves plaintext",
            ));
        }
        let peer = req.remote_addr().map(|a| a.to_string());
        let caller = Caller::of(&self.catalog, self.identity, &req, "").await?;
        let name = caller.worker.name.clone();
        let req = req.into_inner();
        let result = async {
            check_csr_size(&req.csr_pem)?;
            let signed = self
                .pki
                .sign_worker_csr(&req.csr_pem, &name, self.enrollment.cert_validity)
                .map_err(pki_status)?;
            let mut conn = self
                .catalog
                .pool
                .acquire()
                .await
                .map_err(crate::error::ApiError::from)?;
            self.catalog
                .record_certificate(
                    &mut conn,
                    caller.worker.id,
                    &signed.serial,
                    signed.not_after,
                    false,
                )
                .await?;
            Ok::<_, Status>(signed)
        }
        .await;
        let args = serde_json::json!({
            "worker": name,
            "old_serial": caller.serial,
        });
        let (ok, detail) = match &result {
            Ok(signed) => (
                true,
                format!(
                    "new certificate {} valid until {}",
                    signed.serial, signed.not_after
                ),
            ),
            Err(status) => (false, status.message().to_string()),
        };
        audit(
            &self.catalog,
            &name,
            "RenewCertificate",
            &args,
            peer.as_deref(),
            ok,
            &detail,
        )
        .await;
        let signed = result?;
        tracing::info!(worker = %name, serial = %signed.serial, "worker certificate renewed");
        Ok(response(&name, self.pki.ca_pem(), signed))
    }
}
