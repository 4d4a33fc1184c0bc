//! Unit tests of the PKI: the built-in CA, the server certificate's
//! reissue rules, and worker certificates from CSRs.
use std::fs;
use std::os::unix::fs::PermissionsExt;

use x509_parser::extensions::ParsedExtension;

use super::*;

fn server_cfg() -> ServerConfig {
    ServerConfig {
        names: vec!["localhost".into(), "127.0.0.1".into()],
        ..ServerConfig::default()
    }
}

fn load(dir: &Path, now: OffsetDateTime) -> Result<Pki> {
    Pki::load_at(dir, &server_cfg(), &PkiConfig::default(), now)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn parse(pem: &str) -> Vec<u8> {
    first_cert_der(pem).expect("a PEM certificate")
}

fn csr(subject: &str) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(vec!["evil.example".to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, subject);
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

#[test]
fn the_ca_is_created_once_with_private_modes_and_reused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    let now = OffsetDateTime::now_utc();
    let first = load(&dir, now).expect("first start");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("server.key")), 0o600);
    assert_eq!(mode(&dir.join("ca.crt")), 0o644);
    let server_crt = fs::read_to_string(dir.join("server.crt")).expect("server.crt");
    let second = load(&dir, now).expect("second start");
    assert_eq!(first.ca_pem(), second.ca_pem(), "the CA is reused");
    assert_eq!(first.ca_fingerprint(), second.ca_fingerprint());
    assert_eq!(second.server_identity().0, server_crt, "not reissued");
    assert_eq!(first.ca_fingerprint().len(), 32 * 3 - 1);
    assert!(!format!("{first:?}").contains("PRIVATE"));
}

#[test]
fn the_server_certificate_covers_its_names_and_is_reissued_when_needed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    let now = OffsetDateTime::now_utc();
    let pki = load(&dir, now).expect("start");
    let der = parse(pki.server_identity().0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
    let want: BTreeSet<String> = ["localhost", "127.0.0.1"].map(String::from).into();
    assert_eq!(cert_names(&cert), want);
    let ca_der = parse(pki.ca_pem());
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("parse CA");
    cert.verify_signature(Some(ca.public_key()))
        .expect("the server certificate chains to the CA");

    // 340 days later: fewer than 30 days left.
    let later = load(&dir, now + Duration::from_secs(340 * 24 * 3600)).expect("later");
    assert_ne!(later.server_identity().0, pki.server_identity().0);
    assert_eq!(later.ca_pem(), pki.ca_pem());

    let mut other = server_cfg();
    other.names.push("coord.example".into());
    let renamed = Pki::load_at(&dir, &other, &PkiConfig::default(), now).expect("renamed");
    assert_ne!(renamed.server_identity().0, later.server_identity().0);
    let der = parse(renamed.server_identity().0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
    assert!(cert_names(&cert).contains("coord.example"));
}

#[test]
fn open_key_files_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    load(&dir, OffsetDateTime::now_utc()).expect("start");
    fs::set_permissions(dir.join("ca.key"), fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = format!(
        "{:#}",
        load(&dir, OffsetDateTime::now_utc()).expect_err("refused")
    );
    assert!(err.contains("ca.key") && err.contains("0644"), "{err}");
    assert!(!err.contains("PRIVATE"), "{err}");
}

#[test]
fn a_ca_certificate_without_its_key_is_not_replaced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    load(&dir, OffsetDateTime::now_utc()).expect("start");
    fs::remove_file(dir.join("ca.key")).expect("rm");
    let err = format!(
        "{:#}",
        load(&dir, OffsetDateTime::now_utc()).expect_err("refused")
    );
    assert!(
        err.contains("ca.key") && err.contains("enroll again"),
        "{err}"
    );
}

#[test]
fn a_worker_csr_is_signed_for_the_worker_name_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = load(&tmp.path().join("pki"), OffsetDateTime::now_utc()).expect("start");
    let valid_for = Duration::from_secs(30 * 24 * 3600);
    let signed = pki
        .sign_worker_csr(&csr("admin"), "site1-w1", valid_for)
        .expect("signed");
    let der = parse(&signed.pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
    let ca_der = parse(pki.ca_pem());
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("parse CA");
    cert.verify_signature(Some(ca.public_key()))
        .expect("the worker certificate chains to the CA");
    assert_eq!(cert.issuer(), ca.subject());
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().expect("utf8").to_string())
        .collect();
    assert_eq!(cn, ["site1-w1"], "the CSR's subject is ignored");
    let mut uris = Vec::new();
    let mut client_auth = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        other => panic!("unexpected SAN {other:?} (the CSR's names leaked)"),
                    }
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                client_auth = eku.client_auth && !eku.server_auth;
            }
            _ => {}
        }
    }
    assert_eq!(uris, ["pgsnapman://worker/site1-w1"]);
    assert!(client_auth, "clientAuth EKU only");
    assert_eq!(signed.serial, hex(cert.raw_serial()));
    let left = signed.not_after - Utc::now();
    assert!(left > chrono::Duration::days(29) && left <= chrono::Duration::days(30));
    let again = pki
        .sign_worker_csr(&csr("x"), "site1-w1", valid_for)
        .expect("signed");
    assert_ne!(again.serial, signed.serial, "random serials");
}

#[test]
fn bad_csrs_names_and_validities_get_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = load(&tmp.path().join("pki"), OffsetDateTime::now_utc()).expect("start");
    let day = Duration::from_secs(86400);
    let err = pki
        .sign_worker_csr("garbage", "w1", day)
        .expect_err("garbage");
    assert_eq!(
        err.to_string(),
        "invalid certificate signing request: not a PEM-encoded PKCS#10 request"
    );
    // A valid PEM whose signature no longer matches its content.
    let good = csr("w1");
    let der = pem_contents(&good);
    let mut tampered = der.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    let bad = pem_encode(&tampered);
    let err = pki.sign_worker_csr(&bad, "w1", day).expect_err("tampered");
    assert!(
        err.to_string()
            .starts_with("invalid certificate signing request"),
        "{err}"
    );
    let huge = "A".repeat(MAX_CSR_BYTES + 1);
    let err = pki.sign_worker_csr(&huge, "w1", day).expect_err("huge");
    assert!(err.to_string().contains("16384"), "{err}");
    assert!(err.to_string().len() < 200, "the input is not echoed");
    let err = pki.sign_worker_csr(&good, "w 1/..", day).expect_err("name");
    assert!(err.to_string().contains("worker name"), "{err}");
    let err = pki
        .sign_worker_csr(&good, "w1", Duration::from_secs(10 * 365 * 86400))
        .expect_err("too long");
    assert!(err.to_string().contains("2 years"), "{err}");
}

#[test]
fn a_brought_ca_without_its_key_cannot_sign() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let own = load(&tmp.path().join("own"), OffsetDateTime::now_utc()).expect("start");
    let ca = tmp.path().join("ca.crt");
    fs::write(&ca, own.ca_pem()).expect("write");
    let server = ServerConfig {
        cert_file: Some(tmp.path().join("own/server.crt")),
        key_file: Some(tmp.path().join("own/server.key")),
        ..server_cfg()
    };
    let pki_cfg = PkiConfig {
        ca_cert_file: Some(ca),
        ca_key_file: None,
    };
    let dir = tmp.path().join("pki");
    let pki = Pki::load_at(&dir, &server, &pki_cfg, OffsetDateTime::now_utc()).expect("load");
    assert!(!pki.can_sign());
    assert!(!dir.exists(), "nothing created");
    let err = pki
        .sign_worker_csr(&csr("w1"), "w1", Duration::from_secs(86400))
        .expect_err("no key");
    assert!(err.to_string().contains("pki.ca_key_file"), "{err}");
    assert_eq!(pki.ca_fingerprint(), own.ca_fingerprint());
}

fn pem_contents(pem: &str) -> Vec<u8> {
    pem::parse(pem).expect("pem").into_contents()
}

fn pem_encode(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.to_vec()))
}
