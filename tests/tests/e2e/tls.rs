//! TLS on the link: `pgsnap` and the worker name the URL and the reason for
//! each way a connection can fail (unknown CA, name mismatch, expired
//! certificate, plaintext against TLS and the reverse, an unreadable CA
//! file, `http://` off loopback); a client certificate from the CA works.
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgsnapman_tests::{
    Access, Coordinator, CoordinatorOptions, PgCluster, Pgsnap, Worker, WorkerOptions,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::common::*;

/// A certificate and key signed by the test run's shared CA (`None`: a
/// self-signed CA of its own), written as `<dir>/<name>.crt|key`.
fn issue(
    dir: &Path,
    name: &str,
    by_shared_ca: bool,
    expired: bool,
    eku: ExtendedKeyUsagePurpose,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![eku];
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - Duration::from_secs(3 * 86400);
        params.not_after = now - Duration::from_secs(86400);
    }
    let cert = if by_shared_ca {
        let ca = pgsnapman_tests::pki::shared_ca_dir().unwrap();
        let ca_key =
            KeyPair::from_pem(&std::fs::read_to_string(ca.join("ca.key")).unwrap()).unwrap();
        let ca_pem = std::fs::read_to_string(ca.join("ca.crt")).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        params.signed_by(&key, &issuer).unwrap()
    } else {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap()
    };
    let (crt, key_file) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&crt, cert.pem()).unwrap();
    pgsnapman_proto::secret_file::write_private(&key_file, key.serialize_pem().as_bytes()).unwrap();
    (crt, key_file)
}

/// `pgsnap worker list` through `access`; returns its stderr line.
fn fails(access: Access, extra: &[&str]) -> String {
    let mut args = extra.to_vec();
    args.extend(["worker", "list"]);
    let run = Pgsnap::new(access).run(&args).unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line: {run:?}");
    run.stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgsnap_names_the_url_and_the_reason_of_each_tls_failure() {
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let scratch = pgsnapman_tests::shared_tempdir("pgsnapman-tls-");
    let dir = scratch.path();
    let opts = || CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        ..Default::default()
    };
    let mut main = Coordinator::start(opts()).await.unwrap();
    let ok = main.access();
    assert!(ok.url.starts_with("https://"), "{}", ok.url);
    let run = main.cli().run(&["worker", "list"]).unwrap();
    assert!(run.success(), "TLS with the CA works: {run:?}");

    // A CA that did not sign the server's certificate.
    let (foreign_ca, _) = issue(
        dir,
        "foreign-ca",
        false,
        false,
        ExtendedKeyUsagePurpose::Any,
    );
    let line = fails(
        Access {
            ca_file: Some(foreign_ca.clone()),
            ..ok.clone()
        },
        &[],
    );
    assert!(
        line.contains(&ok.url) && line.contains("not signed by a CA we trust"),
        "{line}"
    );

    // The CA file cannot be read, or holds no certificate.
    let line = fails(
        Access {
            ca_file: Some(dir.join("missing.crt")),
            ..ok.clone()
        },
        &[],
    );
    assert!(
        line.contains("cannot read the CA file") && line.contains("missing.crt"),
        "{line}"
    );
    let empty = dir.join("empty.crt");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let line = fails(
        Access {
            ca_file: Some(empty),
            ..ok.clone()
        },
        &[],
    );
    assert!(line.contains("holds no PEM certificate"), "{line}");

    // A plaintext client against the TLS port.
    let plain_url = format!("http://{}", main.addr);
    let line = fails(ok.with_url(plain_url.clone()), &[]);
    assert!(
        line.contains(&plain_url) && line.contains("speaks TLS: use https://"),
        "{line}"
    );

    // http:// to a host that is not loopback is refused before connecting.
    let line = fails(ok.with_url("http://192.0.2.1:7431"), &[]);
    assert!(
        line.contains("refusing http://") && line.contains("192.0.2.1"),
        "{line}"
    );

    // A client certificate from the coordinator's CA is accepted; one from
    // another CA is refused by the coordinator.
    let (crt, key) = issue(dir, "op", true, false, ExtendedKeyUsagePurpose::ClientAuth);
    let (crt, key) = (
        crt.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    );
    let run = main
        .cli()
        .run(&["--cert-file", &crt, "--key-file", &key, "worker", "list"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    let (bad_crt, bad_key) = issue(
        dir,
        "stranger",
        false,
        false,
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (bad_crt, bad_key) = (
        bad_crt.to_string_lossy().into_owned(),
        bad_key.to_string_lossy().into_owned(),
    );
    let line = fails(
        ok.clone(),
        &["--cert-file", &bad_crt, "--key-file", &bad_key],
    );
    assert!(
        line.contains(&ok.url) && line.contains("refused the client certificate"),
        "{line}"
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let line = fails(ok.clone(), &["--cert-file", &crt, "--key-file", &key]);
    assert!(line.contains("chmod 600"), "{line}");

    // A certificate that does not name the host in the URL.
    let mut named = Coordinator::start(CoordinatorOptions {
        env: vec![("PGSNAPMAN_SERVER__NAMES".into(), "[\"localhost\"]".into())],
        ..opts()
    })
    .await
    .unwrap();
    let line = fails(named.access(), &[]);
    assert!(
        line.contains("not valid for") && line.contains("localhost"),
        "{line}"
    );
    let port = named.addr.rsplit(':').next().unwrap().to_string();
    let run = Pgsnap::new(named.access().with_url(format!("https://localhost:{port}")))
        .run(&["worker", "list"])
        .unwrap();
    assert!(run.success(), "the certificate's own name works: {run:?}");

    // An expired server certificate (brought by the operator).
    let (crt, key) = issue(
        dir,
        "expired",
        true,
        true,
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let mut expired = Coordinator::start(CoordinatorOptions {
        env: vec![
            (
                "PGSNAPMAN_SERVER__CERT_FILE".into(),
                crt.to_string_lossy().into_owned(),
            ),
            (
                "PGSNAPMAN_SERVER__KEY_FILE".into(),
                key.to_string_lossy().into_owned(),
            ),
        ],
        ..opts()
    })
    .await
    .unwrap();
    let line = fails(expired.access(), &[]);
    assert!(line.contains("expired"), "{line}");

    // A TLS client against a plaintext coordinator.
    let mut plain = Coordinator::start(CoordinatorOptions {
        plaintext: true,
        ..opts()
    })
    .await
    .unwrap();
    assert!(plain.url().starts_with("http://"));
    let run = plain.cli().run(&["worker", "list"]).unwrap();
    assert!(run.success(), "plaintext on loopback when asked: {run:?}");
    let tls_url = format!("https://{}", plain.addr);
    let line = fails(ok.with_url(tls_url.clone()), &[]);
    assert!(
        line.contains(&tls_url) && line.contains("does not speak TLS"),
        "{line}"
    );

    for c in [&mut main, &mut named, &mut expired, &mut plain] {
        c.process.stop_clean().await;
        c.process.assert_no_unexpected_errors(&[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_logs_the_tls_reason_and_keeps_retrying() {
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let scratch = pgsnapman_tests::shared_tempdir("pgsnapman-tls-worker-");
    let mut coordinator = Coordinator::start(CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        ..Default::default()
    })
    .await
    .unwrap();
    register_worker(&coordinator.cli(), "w-tls");
    let (foreign_ca, _) = issue(
        scratch.path(),
        "foreign-ca",
        false,
        false,
        ExtendedKeyUsagePurpose::Any,
    );
    let plain_url = format!("http://{}", coordinator.addr);
    let cases = [
        (
            Access {
                ca_file: Some(foreign_ca),
                ..coordinator.access()
            },
            "not signed by a CA we trust",
        ),
        (
            coordinator.access().with_url(plain_url),
            "speaks TLS: use https://",
        ),
    ];
    for (access, reason) in cases {
        let url = access.url.clone();
        let mut worker = Worker::start(WorkerOptions {
            name: "w-tls".into(),
            coordinator: access,
            ..Default::default()
        })
        .unwrap();
        let log = worker.process.log_path().to_path_buf();
        pgsnapman_tests::wait::until(
            &format!("the worker to log {reason:?} twice"),
            Duration::from_secs(30),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let n = text
                    .lines()
                    .filter(|l| l.contains(&url) && l.contains(reason))
                    .count();
                std::future::ready((n >= 2).then_some(()))
            },
        )
        .await;
        assert!(worker.process.is_running(), "the worker keeps retrying");
        worker.process.stop_clean().await;
        worker.process.assert_no_unexpected_errors(&[]);
    }

    // Its enrolled identity (identity/worker.crt|key, from a real
    // enrollment: the coordinator believes only certificates it recorded)
    // is its client certificate: a key others can read is refused, then it
    // connects.
    let data_dir = scratch.path().join("worker");
    let mut worker = Worker::start(WorkerOptions {
        name: "w-tls".into(),
        coordinator: coordinator.access(),
        data_dir: Some(data_dir.clone()),
        ..Default::default()
    })
    .unwrap();
    coordinator.wait_worker_connected("w-tls").await;
    worker.process.stop_clean().await;
    let key = data_dir.join("identity/worker.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let mut worker = Worker::start(WorkerOptions {
        name: "w-tls".into(),
        coordinator: coordinator.access(),
        data_dir: Some(data_dir),
        ..Default::default()
    })
    .unwrap();
    let log = worker.process.log_path().to_path_buf();
    pgsnapman_tests::wait::until(
        "the worker to refuse its open key",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            std::future::ready(
                text.contains("worker.key is accessible by group or others")
                    .then_some(()),
            )
        },
    )
    .await;
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    coordinator.wait_worker_connected("w-tls").await;
    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);

    // http:// off loopback: the configuration is refused at start.
    let mut worker = Worker::start(WorkerOptions {
        name: "w-tls".into(),
        coordinator: Access::plain("http://192.0.2.1:7431"),
        ..Default::default()
    })
    .unwrap();
    pgsnapman_tests::wait::until(
        "the worker to refuse its configuration",
        Duration::from_secs(30),
        || std::future::ready((!worker.process.is_running()).then_some(())),
    )
    .await;
    let text = std::fs::read_to_string(worker.process.log_path()).unwrap();
    assert!(text.contains("refusing http://"), "{text}");

    coordinator.process.stop_clean().await;
    coordinator.process.assert_no_unexpected_errors(&[]);
}
