//! Operator client certificates: issuing one from a CSR with the built-in
//! CA, registering one the operator brings (checked against the client CA
//! bundle, pinned by its SHA-256), and what a presented one is worth. Worker
//! certificates are never operator credentials. See docs/security-auth.md.
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgsnapman_proto::model::{quoted, validate_token_name};
use pgsnapman_proto::v1;
use sha2::{Digest, Sha256};
use tonic::Status;
use x509_parser::prelude::*;

use super::Role;
use crate::catalog::Catalog;
use crate::identity::worker_uri_of_der;
use crate::pki::{self, Pki, PkiError};
use crate::rows::TokenRow;

/// Validity of an issued certificate when the request names none.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Largest certificate (PEM) `RegisterOperatorCertificate` reads.
pub const MAX_CERT_PEM_BYTES: usize = 16 * 1024;
/// The audit actor of a call made with the certificate `name`.
pub const ACTOR_PREFIX: &str = "cert:";

/// The actor (audit row, rate bucket) of an operator certificate.
pub fn actor(name: &str) -> String {
    format!("{ACTOR_PREFIX}{name}")
}

fn role_of(v: i32) -> Result<Role, Status> {
    Role::from_proto(v).ok_or_else(|| {
        Status::invalid_argument(format!(
            "role {v} is not valid: use viewer, operator or admin"
        ))
    })
}

fn pki_status(e: PkiError) -> Status {
    match e {
        PkiError::NoCaKey => Status::failed_precondition(
            "the coordinator has no CA key (pki.ca_key_file): it cannot issue certificates; \
             register one signed by your CA with `pgsnap cert register`",
        ),
        PkiError::BadCsr(_) | PkiError::BadName(_) | PkiError::BadValidity(_) => {
            Status::invalid_argument(e.to_string())
        }
        PkiError::Sign(_) => {
            tracing::error!("signing an operator certificate: {e}");
            Status::internal("the coordinator could not sign the certificate (details in its log)")
        }
    }
}

/// `IssueOperatorCertificate`: signs the CSR's key for `name` and records
/// the certificate's SHA-256 with the role.
pub async fn issue(
    catalog: &Catalog,
    pki: &Pki,
    by: &str,
    req: v1::IssueOperatorCertificateRequest,
) -> Result<v1::OperatorCertificate, Status> {
    validate_token_name(&req.name).map_err(crate::error::ApiError::from)?;
    let role = role_of(req.role)?;
    let valid_for = match req.expires_in_seconds {
        0 => DEFAULT_VALIDITY,
        s => Duration::from_secs(s),
    };
    let signed = pki
        .sign_operator_csr(&req.csr_pem, &req.name, valid_for)
        .map_err(pki_status)?;
    let row = catalog
        .create_certificate(
            &req.name,
            role.label(),
            &Sha256::digest(&signed.der),
            &signed.serial,
            "issued",
            signed.not_after,
            by,
        )
        .await?;
    tracing::info!(certificate = %row.name, role = %row.role, serial = %signed.serial,
        created_by = %by, "operator certificate issued");
    Ok(v1::OperatorCertificate {
        token: Some(row.to_proto()),
        certificate_pem: signed.pem,
        ca_pem: pki.ca_pem().to_string(),
    })
}

/// `RegisterOperatorCertificate`: pins a certificate signed by a CA of the
/// client CA bundle.
pub async fn register(
    catalog: &Catalog,
    pki: &Pki,
    by: &str,
    req: v1::RegisterOperatorCertificateRequest,
) -> Result<v1::ApiToken, Status> {
    validate_token_name(&req.name).map_err(crate::error::ApiError::from)?;
    let role = role_of(req.role)?;
    let checked = check_registrable(&req.certificate_pem, pki.client_ca_pem(), Utc::now())
        .map_err(Status::invalid_argument)?;
    let expires_at = match req.expires_in_seconds {
        0 => checked.not_after,
        s => {
            let secs = i64::try_from(s).unwrap_or(i64::MAX);
            let at = Utc::now()
                .checked_add_signed(chrono::Duration::seconds(secs.min(i64::from(u32::MAX))))
                .unwrap_or(checked.not_after);
            at.min(checked.not_after)
        }
    };
    let row = catalog
        .create_certificate(
            &req.name,
            role.label(),
            &checked.sha256,
            &checked.serial,
            "registered",
            expires_at,
            by,
        )
        .await?;
    tracing::info!(certificate = %row.name, role = %row.role, serial = %checked.serial,
        created_by = %by, "operator certificate registered");
    Ok(row.to_proto())
}

/// A certificate fit to register.
#[derive(Debug)]
struct Registrable {
    sha256: [u8; 32],
    serial: String,
    not_after: DateTime<Utc>,
}

/// Checks a PEM certificate to register: one certificate, not a worker's,
/// for client authentication, not expired, signed directly by a CA of
/// `client_ca_pem` (what the TLS layer verifies it against). One-line
/// reasons that never repeat the input.
fn check_registrable(
    pem: &str,
    client_ca_pem: &str,
    now: DateTime<Utc>,
) -> Result<Registrable, String> {
    if pem.len() > MAX_CERT_PEM_BYTES {
        return Err(format!(
            "the certificate is {} bytes of PEM, more than the {MAX_CERT_PEM_BYTES} accepted",
            pem.len()
        ));
    }
    let blocks: Vec<_> = Pem::iter_from_buffer(pem.as_bytes()).collect();
    let der = match blocks.as_slice() {
        [Ok(p)] if p.label == "CERTIFICATE" => p.contents.clone(),
        [Ok(p)] => {
            return Err(format!(
                "not a PEM certificate (found {})",
                quoted(&p.label)
            ));
        }
        [] | [Err(_)] => return Err("not a PEM certificate".into()),
        _ => return Err("give exactly one certificate (not a chain or a bundle)".into()),
    };
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    if let Some(uri) = worker_uri_of_der(&der) {
        return Err(format!(
            "this is a worker certificate ({}): workers are never operators",
            quoted(&uri)
        ));
    }
    if let Ok(Some(eku)) = cert.extended_key_usage()
        && !eku.value.client_auth
        && !eku.value.any
    {
        return Err("the certificate is not for client authentication (no clientAuth EKU)".into());
    }
    let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
        .ok_or_else(|| "the certificate's notAfter is out of range".to_string())?;
    if not_after <= now {
        return Err(format!(
            "the certificate expired at {}",
            not_after.to_rfc3339()
        ));
    }
    let signed_by_trusted = Pem::iter_from_buffer(client_ca_pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .any(|p| {
            X509Certificate::from_der(&p.contents).is_ok_and(|(_, ca)| {
                ca.subject() == cert.issuer()
                    && cert.verify_signature(Some(ca.public_key())).is_ok()
            })
        });
    if !signed_by_trusted {
        return Err(format!(
            "the certificate (issuer {}) is not signed by a CA the coordinator trusts for client \
             certificates (server.client_ca_file, else its own CA); intermediates are not followed",
            quoted(&cert.issuer().to_string())
        ));
    }
    Ok(Registrable {
        sha256: Sha256::digest(&der).into(),
        serial: pki::hex(cert.raw_serial()),
        not_after,
    })
}

/// Why a presented certificate is not an operator credential, before any
/// catalog look-up: a worker's never is.
pub fn refuse_worker(der: &[u8]) -> Result<(), String> {
    match worker_uri_of_der(der) {
        Some(uri) => Err(format!(
            "a worker certificate ({}) is not an operator credential: send an operator token or certificate",
            quoted(&uri)
        )),
        None => Ok(()),
    }
}

/// The one-line refusal for a presented certificate nobody registered.
pub fn unknown(sha256: &[u8]) -> String {
    format!(
        "the client certificate (SHA-256 {}) is not an operator credential: \
         issue one with `pgsnap cert issue` or register it with `pgsnap cert register`",
        pki::fingerprint_of_digest(sha256)
    )
}

/// The row's name as the caller's, for an operator certificate.
pub fn caller_name(row: &TokenRow) -> String {
    actor(&row.name)
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType,
    };

    use super::*;

    fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(p, key))
    }

    fn leaf(
        issuer: &Issuer<'static, KeyPair>,
        uri: Option<&str>,
        eku: Vec<ExtendedKeyUsagePurpose>,
        days: i64,
    ) -> String {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "alice");
        if let Some(u) = uri {
            p.subject_alt_names = vec![SanType::URI(u.try_into().unwrap())];
        }
        p.extended_key_usages = eku;
        let now = ::time::OffsetDateTime::now_utc();
        p.not_before = now - ::time::Duration::days(400);
        p.not_after = now + ::time::Duration::days(days);
        p.signed_by(&key, issuer).unwrap().pem()
    }

    #[test]
    fn certificates_of_the_trusted_ca_register() {
        let (ca_pem, ca) = make_ca("Corp CA");
        let now = Utc::now();
        let good = leaf(&ca, None, vec![ExtendedKeyUsagePurpose::ClientAuth], 30);
        let r = check_registrable(&good, &ca_pem, now).unwrap();
        assert!(r.not_after > now && !r.serial.is_empty());
        // No EKU at all is fine too (any use).
        check_registrable(&leaf(&ca, None, vec![], 30), &ca_pem, now).unwrap();
    }

    #[test]
    fn bad_certificates_are_refused_with_a_reason() {
        let (ca_pem, ca) = make_ca("Corp CA");
        let (_, other) = make_ca("Corp CA");
        let now = Utc::now();
        let client = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cases = [
            (
                leaf(&ca, Some("pgsnapman://worker/w1"), client.clone(), 30),
                "worker certificate",
            ),
            (
                leaf(&ca, None, vec![ExtendedKeyUsagePurpose::ServerAuth], 30),
                "client authentication",
            ),
            (leaf(&ca, None, client.clone(), -1), "expired"),
            // Same issuer name, another key: the signature decides.
            (leaf(&other, None, client.clone(), 30), "not signed by a CA"),
            ("garbage".into(), "not a PEM certificate"),
            (
                format!("{0}{0}", leaf(&ca, None, client.clone(), 30)),
                "exactly one",
            ),
            ("x".repeat(MAX_CERT_PEM_BYTES + 1), "more than"),
        ];
        for (pem, want) in cases {
            let err = check_registrable(&pem, &ca_pem, now).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
            assert!(err.len() < 300 && !err.contains("xxxx"), "{err}");
        }
    }

    #[test]
    fn worker_certificates_are_never_operators() {
        let (_, ca) = make_ca("CA");
        let pem = leaf(
            &ca,
            Some("pgsnapman://worker/w1"),
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            1,
        );
        let der = Pem::iter_from_buffer(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .contents;
        assert!(
            refuse_worker(&der)
                .unwrap_err()
                .contains("worker certificate")
        );
        let op = leaf(&ca, Some("pgsnapman://operator/alice"), vec![], 1);
        let der = Pem::iter_from_buffer(op.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .contents;
        assert!(refuse_worker(&der).is_ok());
        assert_eq!(actor("alice"), "cert:alice");
    }
}
