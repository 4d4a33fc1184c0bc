//! Operator client certificates on a real coordinator and `pgsnap`: the role
//! table with certificate credentials (viewer, operator, admin issued by
//! `pgsnap cert issue`), a bearer token winning over a certificate,
//! revocation at once, unregistered, expired and worker certificates
//! refused, and an operator certificate refused by the WorkerService.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pgsnapman_coordinator::auth::Role;
use pgsnapman_proto::reflect::admin_methods;
use pgsnapman_proto::v1;
use pgsnapman_proto::v1::worker_service_client::WorkerServiceClient;
use pgsnapman_tests::raw::RawGrpc;
use tonic::Code;

use super::{Setup, admin_call, documented_roles, generous_limits, role_call};

const LIST: &str = "/pgsnapman.v1.AdminService/ListWorkers";

/// (certificate PEM, key PEM) of `pgsnap cert issue NAME` in `dir`.
fn read_pair(dir: &Path, name: &str) -> (String, String) {
    let cert = std::fs::read_to_string(dir.join(format!("{name}.crt"))).unwrap();
    let key = std::fs::read_to_string(dir.join(format!("{name}.key"))).unwrap();
    (cert, key)
}

/// Issues `name` with `role` through `pgsnap cert issue`; the key file must
/// be 0600 and the certificate an operator's.
fn issue(s: &Setup, dir: &Path, name: &str, role: &str) -> (String, String) {
    let v = s
        .coordinator
        .cli()
        .json(&[
            "cert",
            "issue",
            name,
            "--role",
            role,
            "--out",
            dir.to_str().unwrap(),
        ])
        .unwrap();
    assert_eq!(v["kind"], "issued certificate", "{v}");
    let key = dir.join(format!("{name}.key"));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} is written 0600", key.display());
    assert_eq!(v["key_file"], key.display().to_string());
    read_pair(dir, name)
}

/// A leaf certificate signed by the test run's CA (the coordinator's):
/// SAN URI `uri` if given, valid until `days` from now (negative: expired).
fn signed_by_test_ca(uri: Option<&str>, days: i64) -> (String, String) {
    let ca_dir = pgsnapman_tests::pki::shared_ca_dir().unwrap();
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(ca_dir.join("ca.key")).unwrap();
    let ca_key = rcgen::KeyPair::from_pem(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "someone");
    if let Some(u) = uri {
        p.subject_alt_names = vec![rcgen::SanType::URI(u.try_into().unwrap())];
    }
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(30);
    p.not_after = now + time::Duration::days(days);
    let cert = p.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn raw_as(s: &Setup, pair: &(String, String)) -> RawGrpc {
    RawGrpc::connect_as(&s.coordinator.access(), Some((&pair.0, &pair.1)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_method_checks_the_certificate_and_its_role() {
    let s = Setup::start(generous_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let viewer = raw_as(&s, &issue(&s, &out, "viewer-c", "viewer")).await;
    let operator = raw_as(&s, &issue(&s, &out, "operator-c", "operator")).await;
    let admin = raw_as(&s, &issue(&s, &out, "admin-c", "admin")).await;
    let documented = documented_roles();
    let methods = admin_methods();

    let (mut viewer_refused, mut operator_refused) = (0, 0);
    for m in &methods {
        let rule = documented[&m.name];
        for (raw, as_role, name) in [
            (&viewer, Role::Viewer, "viewer-c"),
            (&operator, Role::Operator, "operator-c"),
        ] {
            let who = format!("certificate {name}");
            if role_call(&s, raw, m, None, rule, as_role, &who).await {
                if as_role == Role::Viewer {
                    viewer_refused += 1;
                } else {
                    operator_refused += 1;
                }
            }
        }
        admin_call(&s, &admin, m, None, "cert:admin-c", rule).await;
    }
    let denied = |actor: &str| {
        s.count(&format!(
            "SELECT count(*) FROM audit_log WHERE actor = '{actor}' AND NOT ok \
             AND detail LIKE 'PermissionDenied: certificate%'"
        ))
    };
    assert_eq!(denied("cert:viewer-c"), viewer_refused);
    assert_eq!(denied("cert:operator-c"), operator_refused);
    assert!(viewer_refused > operator_refused && operator_refused > 0);

    // A bearer token wins over the certificate, whichever way.
    let tokens = "/pgsnapman.v1.AdminService/ListTokens";
    viewer
        .unary(tokens, Vec::new(), Some(&s.admin_bearer()))
        .await
        .expect("the admin token on the viewer certificate's connection");
    let err = admin
        .unary(tokens, Vec::new(), Some("Bearer psm_garbage"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // token list shows the certificates, token revoke revokes at once.
    let cli = s.coordinator.cli();
    let list = cli.json(&["token", "list"]).unwrap();
    let certs: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "issued certificate")
        .collect();
    assert_eq!(certs.len(), 3, "{list}");
    assert!(certs.iter().all(|t| {
        t["certificate_fingerprint"]
            .as_str()
            .is_some_and(|f| f.len() == 95)
    }));
    viewer.unary(LIST, Vec::new(), None).await.unwrap();
    cli.json(&["token", "revoke", "viewer-c"]).unwrap();
    let err = viewer.unary(LIST, Vec::new(), None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("certificate viewer-c was revoked"),
        "{err:?}"
    );

    // pgsnap with --cert-file/--key-file and no token.
    let anonymous = pgsnapman_tests::Pgsnap::new(s.coordinator.access().with_token(None));
    let path = |n: &str| out.join(n).display().to_string();
    let (c, k) = (path("operator-c.crt"), path("operator-c.key"));
    let run = anonymous
        .run(&["--cert-file", &c, "--key-file", &k, "worker", "list"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    let refusals = "SELECT count(*) FROM audit_log WHERE actor = 'cert:operator-c' \
                    AND method = 'RegisterWorker' AND NOT ok";
    let refused_before = s.count(refusals);
    let run = anonymous
        .run(&[
            "--cert-file",
            &c,
            "--key-file",
            &k,
            "worker",
            "register",
            "w9",
        ])
        .unwrap();
    assert!(
        !run.success()
            && run
                .stderr
                .contains("certificate operator-c has the operator role"),
        "{run:?}"
    );
    assert_eq!(s.count(refusals), refused_before + 1);
    // A name is a token's or a certificate's, not both.
    let run = cli
        .run(&["token", "create", "operator-c", "--role", "viewer"])
        .unwrap();
    assert!(
        !run.success() && run.stderr.contains("exists already"),
        "{run:?}"
    );

    s.coordinator.process.assert_no_unexpected_errors(&[]);
    let mut coordinator = s.coordinator;
    coordinator.process.stop_clean().await;
}

/// Registered certificates; unregistered, expired and worker certificates;
/// an operator certificate on the WorkerService.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_revoked_expired_and_worker_certificates_are_refused() {
    let s = Setup::start(generous_limits()).await;
    let cli = s.coordinator.cli();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };

    // Signed by the coordinator's CA but registered by nobody.
    let own = signed_by_test_ca(None, 30);
    let raw = raw_as(&s, &own).await;
    let before = s.fingerprint();
    let err = raw.unary(LIST, Vec::new(), None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("is not an operator credential"),
        "{err:?}"
    );
    assert_eq!(s.fingerprint(), before);

    // Registered with a short expiry: accepted, then expired.
    let own_file = write("own.crt", &own.0);
    let v = cli
        .json(&[
            "cert",
            "register",
            "mine",
            "--role",
            "viewer",
            "--cert",
            own_file.to_str().unwrap(),
            "--expires",
            "2s",
        ])
        .unwrap();
    assert_eq!(v["kind"], "registered certificate", "{v}");
    raw.unary(LIST, Vec::new(), None).await.unwrap();
    let err = pgsnapman_tests::wait::until(
        "the 2s certificate credential to expire",
        std::time::Duration::from_secs(30),
        || async { raw.unary(LIST, Vec::new(), None).await.err() },
    )
    .await;
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("certificate mine expired at"),
        "{err:?}"
    );
    // The same certificate cannot be registered twice.
    let run = cli
        .run(&[
            "cert",
            "register",
            "again",
            "--role",
            "admin",
            "--cert",
            own_file.to_str().unwrap(),
        ])
        .unwrap();
    assert!(
        run.stderr.contains("registered already, as \"mine\""),
        "{run:?}"
    );

    // An expired certificate cannot be registered, nor get through TLS.
    let expired = signed_by_test_ca(None, -1);
    let file = write("expired.crt", &expired.0);
    let run = cli
        .run(&[
            "cert",
            "register",
            "old",
            "--role",
            "viewer",
            "--cert",
            file.to_str().unwrap(),
        ])
        .unwrap();
    assert!(
        !run.success() && run.stderr.contains("the certificate expired at"),
        "{run:?}"
    );
    let refused =
        match RawGrpc::connect_as(&s.coordinator.access(), Some((&expired.0, &expired.1))).await {
            Err(_) => true,
            Ok(raw) => raw.unary(LIST, Vec::new(), None).await.is_err(),
        };
    assert!(refused, "an expired client certificate got a reply");

    // A real worker certificate, enrolled.
    let v = cli.json(&["worker", "register", "w1"]).unwrap();
    let token = v["enrollment_token"].as_str().unwrap().to_string();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let channel = s.coordinator.access().channel().await.unwrap();
    let enrolled = WorkerServiceClient::new(channel)
        .enroll(v1::EnrollRequest {
            token,
            csr_pem: csr,
        })
        .await
        .unwrap()
        .into_inner();
    let worker = (enrolled.certificate_pem.clone(), key.serialize_pem());
    let raw = raw_as(&s, &worker).await;
    let before = s.fingerprint();
    for path in [LIST, "/pgsnapman.v1.AdminService/AddInstance"] {
        let err = raw.unary(path, Vec::new(), None).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{path}: {err:?}");
        assert!(err.message().contains("a worker certificate"), "{err:?}");
    }
    assert_eq!(s.fingerprint(), before);
    let file = write("worker.crt", &worker.0);
    let run = cli
        .run(&[
            "cert",
            "register",
            "w1-op",
            "--role",
            "admin",
            "--cert",
            file.to_str().unwrap(),
        ])
        .unwrap();
    assert!(
        !run.success() && run.stderr.contains("workers are never operators"),
        "{run:?}"
    );

    // An operator certificate on the WorkerService.
    let out = dir.path().join("issued");
    let op = issue(&s, &out, "ops", "operator");
    let channel = s
        .coordinator
        .access()
        .channel_as(Some((&op.0, &op.1)))
        .await
        .unwrap();
    let err = WorkerServiceClient::new(channel)
        .renew_certificate(v1::RenewCertificateRequest {
            csr_pem: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("operator's"), "{err:?}");

    let mut coordinator = s.coordinator;
    coordinator.process.stop_clean().await;
}
