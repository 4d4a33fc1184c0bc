//! Who a WorkerService caller is, read from the client certificate that TLS
//! verified against our CA: the worker name (CN and the SAN URI
//! `pgsnapman://worker/<name>`, which must agree) and the serial; and which
//! certificates are workers' (never operator credentials) or operators'
//! (never workers'). Pure parsing; catalog look-ups are in `link/`, `auth/`.
use std::sync::Arc;

use tonic::transport::CertificateDer;
use x509_parser::prelude::*;

/// URI SAN prefix the CA writes into worker certificates.
pub const WORKER_URI_PREFIX: &str = "pgsnapman://worker/";
/// URI SAN prefix the CA writes into operator certificates.
pub const OPERATOR_URI_PREFIX: &str = "pgsnapman://operator/";

/// The identity a verified client certificate states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub worker_name: String,
    /// Lower-case hex, as DER encodes it (see `catalog::normalize_serial`).
    pub serial: String,
}

/// The identity in the leaf certificate, `Ok(None)` without one, and a
/// one-line reason for a certificate that does not name a worker.
pub fn peer_identity(
    certs: Option<Arc<Vec<CertificateDer<'static>>>>,
) -> Result<Option<PeerIdentity>, String> {
    let Some(certs) = certs else { return Ok(None) };
    let Some(leaf) = certs.first() else {
        return Ok(None);
    };
    identity_of_der(leaf.as_ref()).map(Some)
}

/// The worker identity a DER certificate states.
pub fn identity_of_der(der: &[u8]) -> Result<PeerIdentity, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("the client certificate cannot be parsed: {e}"))?;
    let serial = hex(cert.raw_serial());
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let uris = san_uris(&cert);
    if let Some(op) = uris.iter().find(|u| u.starts_with(OPERATOR_URI_PREFIX)) {
        return Err(format!(
            "the client certificate is an operator's ({}), not a worker's: workers enroll for their own",
            pgsnapman_proto::model::quoted(op)
        ));
    }
    let uri_names: Vec<String> = uris
        .iter()
        .filter_map(|u| u.strip_prefix(WORKER_URI_PREFIX))
        .map(str::to_string)
        .collect();
    let name = match (cn, uri_names.as_slice()) {
        (Some(cn), [uri]) if *uri == cn => cn,
        (Some(cn), []) => {
            return Err(format!(
                "the client certificate (CN {}) names no worker ({WORKER_URI_PREFIX}<name> SAN missing): not a pgsnapman worker certificate",
                pgsnapman_proto::model::quoted(&cn)
            ));
        }
        (cn, uris) => {
            return Err(format!(
                "the client certificate names a worker ambiguously (CN {:?}, SAN {:?})",
                cn, uris
            ));
        }
    };
    pgsnapman_proto::model::validate_worker_name(&name)
        .map_err(|e| format!("the client certificate names an invalid worker: {e}"))?;
    Ok(PeerIdentity {
        worker_name: name,
        serial,
    })
}

/// The SAN URIs of a certificate.
fn san_uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name {
                uris.push((*uri).to_string());
            }
        }
    }
    uris
}

/// The SAN URI `pgsnapman://worker/…` of a certificate that has one: such
/// a certificate is a worker's and never an operator credential. `None`
/// for certificates that do not parse (the caller refuses those anyway).
pub fn worker_uri_of_der(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    san_uris(&cert)
        .into_iter()
        .find(|u| u.starts_with(WORKER_URI_PREFIX))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, uris: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("generate a key");
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*u).expect("ia5")))
            .collect();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0xab, 0xcd]));
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn a_worker_certificate_names_its_worker_and_serial() {
        let id = identity_of_der(&cert("w1", &["pgsnapman://worker/w1"])).unwrap();
        assert_eq!(id.worker_name, "w1");
        assert_eq!(id.serial, "01abcd");
    }

    #[test]
    fn certificates_that_name_no_worker_or_two_are_refused() {
        let e = identity_of_der(&cert("w1", &[])).unwrap_err();
        assert!(e.contains("names no worker"), "{e}");
        let e = identity_of_der(&cert("w1", &["pgsnapman://worker/w2"])).unwrap_err();
        assert!(e.contains("ambiguously"), "{e}");
        let e = identity_of_der(&cert(
            "w1",
            &["pgsnapman://worker/w1", "pgsnapman://worker/w2"],
        ))
        .unwrap_err();
        assert!(e.contains("ambiguously"), "{e}");
        let e = identity_of_der(&cert("alice", &["pgsnapman://operator/alice"])).unwrap_err();
        assert!(e.contains("operator's"), "{e}");
        assert_eq!(
            worker_uri_of_der(&cert("w1", &["pgsnapman://worker/w1"])).as_deref(),
            Some("pgsnapman://worker/w1")
        );
        assert_eq!(
            worker_uri_of_der(&cert("alice", &["pgsnapman://operator/alice"])),
            None
        );
        let e = identity_of_der(b"garbage").unwrap_err();
        assert!(e.contains("cannot be parsed"), "{e}");
        assert_eq!(peer_identity(None), Ok(None));
    }
}
