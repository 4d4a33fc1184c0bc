//! The coordinator's PKI: its CA (built in under `<data_dir>/pki/`, or the
//! operator's), the server certificate for its configured names, and worker
//! certificates signed from CSRs (docs/security-tls.md). Private keys are
//! read 0600 only and never logged or put in an error.
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use pgsnapman_proto::model::validate_worker_name;
use pgsnapman_proto::secret_file;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::config::{Config, PkiConfig, ServerConfig};

/// Validity of a CA the coordinator creates.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of a server certificate the coordinator issues.
pub const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A server certificate with less than this left is reissued at start.
pub const SERVER_CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest validity `sign_worker_csr` and `sign_operator_csr` grant.
pub const MAX_WORKER_CERT_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Largest CSR accepted (a P-256 or RSA-4096 CSR is 0.5-2 KiB in PEM).
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// Issued certificates start this far in the past, for peers whose clocks
/// run a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The CA and the server identity the coordinator serves with.
pub struct Pki {
    ca_pem: String,
    ca_fingerprint: String,
    /// `None`: the operator's CA came without its key; enrollment is off.
    issuer: Option<Issuer<'static, KeyPair>>,
    server_cert_pem: String,
    server_key_pem: String,
    client_ca_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("can_sign", &self.issuer.is_some())
            .finish_non_exhaustive()
    }
}

/// A worker certificate issued by `sign_worker_csr`.
#[derive(Debug, Clone)]
pub struct SignedCert {
    pub der: Vec<u8>,
    pub pem: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    pub not_after: DateTime<Utc>,
}

/// Why a worker certificate was not issued (one line; never a key).
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "worker enrollment is off: the coordinator has its CA's certificate but not its key (set pki.ca_key_file)"
    )]
    NoCaKey,
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    #[error("{0}")]
    BadName(String),
    #[error("certificate validity {0:?} is outside 1 minute to 2 years")]
    BadValidity(Duration),
    #[error("signing the worker certificate: {0}")]
    Sign(String),
}

impl Pki {
    /// Loads the PKI `cfg` describes, creating the built-in CA and issuing
    /// the server certificate under `<data_dir>/pki/` when needed
    /// (blocking file I/O).
    pub fn load(cfg: &Config) -> Result<Pki> {
        let dir = cfg.coordinator.data_dir.join("pki");
        Self::load_at(&dir, &cfg.server, &cfg.pki, OffsetDateTime::now_utc())
    }

    fn load_at(
        dir: &Path,
        server: &ServerConfig,
        pki: &PkiConfig,
        now: OffsetDateTime,
    ) -> Result<Pki> {
        let (ca_pem, ca_key) = match &pki.ca_cert_file {
            Some(cert) => {
                let pem = read_text(cert, "pki.ca_cert_file")?;
                let key = match &pki.ca_key_file {
                    Some(k) => Some(read_key(k)?),
                    None => None,
                };
                (pem, key)
            }
            None => {
                let (pem, key) = builtin_ca(dir, now)?;
                (pem, Some(key))
            }
        };
        let ca_der = first_cert_der(&ca_pem).context("the CA certificate")?;
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der)
            .map_err(|e| anyhow::anyhow!("the CA certificate does not parse: {e}"))?;
        let ca_left = ca_cert.validity().not_after.timestamp() - now.unix_timestamp();
        if ca_left <= 0 {
            bail!("the CA certificate expired; bring a new CA (docs/security-tls.md)");
        }
        if ca_left < 365 * 24 * 3600 {
            tracing::warn!(
                days_left = ca_left / 86400,
                "the CA certificate expires within a year; plan its rotation (docs/security-tls.md)"
            );
        }
        let issuer = match ca_key {
            Some(key) => {
                if key.public_key_raw() != ca_cert.public_key().subject_public_key.data.as_ref() {
                    bail!("the CA key does not belong to the CA certificate");
                }
                Some(Issuer::from_ca_cert_der(&ca_der.clone().into(), key).context("load the CA")?)
            }
            None => None,
        };
        let (server_cert_pem, server_key_pem) = match (&server.cert_file, &server.key_file) {
            (Some(cert), Some(key)) => {
                let key_pem = String::from_utf8(secret_file::read_private(key)?)
                    .with_context(|| format!("server.key_file {} is not PEM", key.display()))?;
                (read_text(cert, "server.cert_file")?, key_pem)
            }
            _ => {
                let Some(issuer) = &issuer else {
                    bail!(
                        "set server.cert_file and server.key_file: without pki.ca_key_file the coordinator cannot issue its server certificate"
                    );
                };
                let names = server_names(server)?;
                builtin_server_cert(dir, issuer, &ca_cert, &names, now)?
            }
        };
        let client_ca_pem = match &server.client_ca_file {
            Some(f) => read_text(f, "server.client_ca_file")?,
            None => ca_pem.clone(),
        };
        Ok(Pki {
            ca_fingerprint: fingerprint(&ca_der),
            ca_pem,
            issuer,
            server_cert_pem,
            server_key_pem,
            client_ca_pem,
        })
    }

    /// The CA certificate(s) in PEM: what workers and pgsnap trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// SHA-256 fingerprint of the CA certificate, as `openssl x509
    /// -fingerprint -sha256` prints it.
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }

    /// Whether worker certificates can be issued (the CA key is present).
    pub fn can_sign(&self) -> bool {
        self.issuer.is_some()
    }

    /// The server certificate chain and key, PEM.
    pub fn server_identity(&self) -> (&str, &str) {
        (&self.server_cert_pem, &self.server_key_pem)
    }

    /// The CA(s) client certificates are verified against, PEM.
    pub fn client_ca_pem(&self) -> &str {
        &self.client_ca_pem
    }

    /// Issues a client certificate for `worker_name` to the key in
    /// `csr_pem` (whose signature is checked; its subject and extensions
    /// are ignored): CN and SAN URI `pgsnapman://worker/<name>`, clientAuth,
    /// random serial, valid from now for `valid_for`.
    pub fn sign_worker_csr(
        &self,
        csr_pem: &str,
        worker_name: &str,
        valid_for: Duration,
    ) -> Result<SignedCert, PkiError> {
        validate_worker_name(worker_name).map_err(|e| PkiError::BadName(e.to_string()))?;
        self.sign_client_csr(
            csr_pem,
            worker_name,
            crate::identity::WORKER_URI_PREFIX,
            valid_for,
        )
    }

    /// `sign_worker_csr` for an operator: CN and SAN URI
    /// `pgsnapman://operator/<name>` (never taken for a worker's, nor a
    /// worker's for it). `name` is a checked token name.
    pub fn sign_operator_csr(
        &self,
        csr_pem: &str,
        name: &str,
        valid_for: Duration,
    ) -> Result<SignedCert, PkiError> {
        pgsnapman_proto::model::validate_token_name(name)
            .map_err(|e| PkiError::BadName(e.to_string()))?;
        self.sign_client_csr(
            csr_pem,
            name,
            crate::identity::OPERATOR_URI_PREFIX,
            valid_for,
        )
    }

    fn sign_client_csr(
        &self,
        csr_pem: &str,
        name: &str,
        uri_prefix: &str,
        valid_for: Duration,
    ) -> Result<SignedCert, PkiError> {
        let issuer = self.issuer.as_ref().ok_or(PkiError::NoCaKey)?;
        if valid_for < Duration::from_secs(60) || valid_for > MAX_WORKER_CERT_VALIDITY {
            return Err(PkiError::BadValidity(valid_for));
        }
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(PkiError::BadCsr(format!(
                "{} bytes, more than the {MAX_CSR_BYTES} accepted",
                csr_pem.len()
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            PkiError::BadCsr(match e {
                rcgen::Error::CouldNotParseCertificationRequest => {
                    "not a PEM-encoded PKCS#10 request".into()
                }
                rcgen::Error::InvalidCertificationRequestSignature => {
                    "its signature does not verify".into()
                }
                other => other.to_string(),
            })
        })?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let uri = format!("{uri_prefix}{name}");
        params.subject_alt_names = vec![SanType::URI(
            uri.try_into()
                .map_err(|e: rcgen::Error| PkiError::Sign(e.to_string()))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.not_before = now - BACKDATE;
        params.not_after = now + valid_for;
        let cert = params
            .signed_by(&csr.public_key, issuer)
            .map_err(|e| PkiError::Sign(e.to_string()))?;
        Ok(SignedCert {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            serial: hex(serial.as_ref()),
            not_after: to_chrono(params.not_after),
        })
    }
}

/// The names the issued server certificate covers: `server.names`, or
/// localhost, 127.0.0.1, ::1, the host name and a specific listen IP.
pub fn server_names(server: &ServerConfig) -> Result<BTreeSet<String>> {
    let mut names: Vec<String> = server.names.clone();
    if names.is_empty() {
        names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        if let Ok(host) = nix::unistd::gethostname()
            && let Some(host) = host.to_str().filter(|h| check_server_name(h).is_ok())
        {
            names.push(host.to_string());
        }
        if let Ok(addr) = server.listen.parse::<SocketAddr>()
            && !addr.ip().is_unspecified()
        {
            names.push(addr.ip().to_string());
        }
    }
    names
        .iter()
        .map(|n| {
            check_server_name(n)?;
            Ok(normalize_name(n))
        })
        .collect()
}

/// Accepts an IP address or a DNS name (letters, digits, `-`, `.`, an
/// optional leading `*.`; at most 253 characters).
pub fn check_server_name(name: &str) -> Result<()> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    let ok = !host.is_empty()
        && name.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        bail!("not an IP address or a DNS name");
    }
    Ok(())
}

fn normalize_name(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.to_ascii_lowercase(),
    }
}

/// Loads `<dir>/ca.crt` and `ca.key`, creating both on first start.
fn builtin_ca(dir: &Path, now: OffsetDateTime) -> Result<(String, KeyPair)> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert_path.exists() {
        if !key_path.exists() {
            bail!(
                "{} exists without {}: restore the key from a backup, or move {} away to create a new CA (every worker must then enroll again)",
                cert_path.display(),
                key_path.display(),
                dir.display()
            );
        }
        return Ok((
            read_text(&cert_path, "the CA certificate")?,
            read_key(&key_path)?,
        ));
    }
    secret_file::create_private_dir(dir)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generate the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "pgsnapman");
    params
        .distinguished_name
        .push(DnType::CommonName, "pgsnapman coordinator CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params
        .self_signed(&key)
        .context("create the CA certificate")?;
    // The key first: a crash before the certificate is written leaves no
    // ca.crt, and the next start creates the CA afresh.
    secret_file::write_private(&key_path, key.serialize_pem().as_bytes())?;
    secret_file::write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(dir = %dir.display(), "created the coordinator CA");
    Ok((cert.pem(), key))
}

/// Loads `<dir>/server.crt|key`, issuing them anew when missing, expiring
/// within 30 days, for other names, or not from this CA (or key).
fn builtin_server_cert(
    dir: &Path,
    issuer: &Issuer<'static, KeyPair>,
    ca: &X509Certificate<'_>,
    names: &BTreeSet<String>,
    now: OffsetDateTime,
) -> Result<(String, String)> {
    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    if cert_path.exists() && key_path.exists() {
        let cert_pem = read_text(&cert_path, "the server certificate")?;
        let key = read_key(&key_path)?;
        match reissue_reason(&cert_pem, &key, ca, names, now) {
            None => return Ok((cert_pem, key.serialize_pem())),
            Some(why) => tracing::info!(reason = why, "reissuing the server certificate"),
        }
    }
    secret_file::create_private_dir(dir)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("generate the server key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "pgsnapman coordinator");
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()
        .context("server.names")?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params.not_before = now - BACKDATE;
    params.not_after = now + SERVER_CERT_VALIDITY;
    let cert = params
        .signed_by(&key, issuer)
        .context("issue the server certificate")?;
    // The key first: a crash in between leaves a certificate that does not
    // match the key, which the next start detects and reissues.
    secret_file::write_private(&key_path, key.serialize_pem().as_bytes())?;
    secret_file::write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(names = ?names, "issued the server certificate");
    Ok((cert.pem(), key.serialize_pem()))
}

fn reissue_reason(
    cert_pem: &str,
    key: &KeyPair,
    ca: &X509Certificate<'_>,
    names: &BTreeSet<String>,
    now: OffsetDateTime,
) -> Option<&'static str> {
    let Ok(der) = first_cert_der(cert_pem) else {
        return Some("server.crt is not a PEM certificate");
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else {
        return Some("server.crt does not parse");
    };
    let left = cert.validity().not_after.timestamp() - now.unix_timestamp();
    if left < SERVER_CERT_RENEW_BEFORE.as_secs() as i64 {
        return Some("fewer than 30 days left");
    }
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Some("not signed by the current CA");
    }
    if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
        return Some("server.key does not match server.crt");
    }
    if cert_names(&cert) != *names {
        return Some("server.names changed");
    }
    None
}

/// DNS and IP names of a certificate's SAN extension, normalized.
fn cert_names(cert: &X509Certificate<'_>) -> BTreeSet<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return BTreeSet::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(normalize_name(d)),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {what} {}", path.display()))
}

/// Reads a private key file, refused when group or others can access it.
fn read_key(path: &Path) -> Result<KeyPair> {
    let bytes = secret_file::read_private(path)?;
    let pem = String::from_utf8(bytes)
        .ok()
        .with_context(|| format!("{} is not a PEM private key", path.display()))?;
    KeyPair::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{} is not a usable PEM private key: {e}", path.display()))
}

/// DER of the first certificate in a PEM text.
fn first_cert_der(pem: &str) -> Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    if pem.label != "CERTIFICATE" {
        bail!("not a PEM certificate (found {})", pem.label);
    }
    Ok(pem.contents)
}

/// SHA-256 of a DER certificate as `openssl x509 -fingerprint -sha256`
/// prints it (upper-case hex pairs joined by colons).
pub fn fingerprint(der: &[u8]) -> String {
    fingerprint_of_digest(&Sha256::digest(der))
}

/// `fingerprint` of an already computed SHA-256.
pub fn fingerprint_of_digest(digest: &[u8]) -> String {
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 16 random bytes, positive and without a leading zero byte.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn to_chrono(t: OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix_timestamp(), 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
#[path = "pki_tests.rs"]
mod tests;
