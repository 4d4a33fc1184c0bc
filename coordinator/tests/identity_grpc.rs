//! The WorkerService believes only the certificate (issue 13, enroll): the
//! coordinator runs in process with TLS from its own PKI and an embedded
//! catalog; raw tonic clients hold real certificates it issued. Enrollment
//! works once per token, names are checked against the certificate, bad
//! inputs get clear errors, revocation locks the worker out, renewal issues
//! a new certificate.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgsnapman_coordinator::config::Config;
use pgsnapman_coordinator::pki::Pki;
use pgsnapman_proto::v1;
use pgsnapman_proto::v1::admin_service_client::AdminServiceClient;
use pgsnapman_proto::v1::worker_service_client::WorkerServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

type Client = WorkerServiceClient<Channel>;

/// Sends the admin token with every AdminService call.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

struct Running {
    addr: String,
    ca_pem: String,
    data: PathBuf,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let ready = dir.path().join("ready");
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.server.ready_file = Some(ready.clone());
    cfg.coordinator.data_dir = data.clone();
    cfg.catalog.embedded_fallback_dir = dir.path().join("fallback");
    cfg.lease.keepalive_interval = Duration::from_millis(500);
    // The built-in PKI writes its CA and server certificate; serve them.
    Pki::load(&cfg).unwrap();
    let pki = data.join("pki");
    cfg.server.cert_file = Some(pki.join("server.crt"));
    cfg.server.key_file = Some(pki.join("server.key"));
    cfg.server.client_ca_file = Some(pki.join("ca.crt"));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(pgsnapman_coordinator::server::run(cfg, shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready.exists() {
        assert!(
            !server.is_finished(),
            "the coordinator ended before it was ready"
        );
        assert!(Instant::now() < deadline, "not ready after 120s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let addr = std::fs::read_to_string(&ready).unwrap().trim().to_string();
    Running {
        addr,
        ca_pem: std::fs::read_to_string(pki.join("ca.crt")).unwrap(),
        data,
        shutdown,
        server,
        _dir: dir,
    }
}

impl Running {
    async fn channel(&self, identity: Option<(&str, &str)>) -> Result<Channel, String> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))
    }

    async fn worker(&self, identity: Option<(&str, &str)>) -> Result<Client, String> {
        Ok(WorkerServiceClient::new(self.channel(identity).await?))
    }

    /// The AdminService with the bootstrap admin token the coordinator
    /// wrote into its data directory.
    async fn admin(&self) -> AdminServiceClient<InterceptedService<Channel, Bearer>> {
        let token = std::fs::read_to_string(self.data.join("admin.token")).unwrap();
        let value: MetadataValue<Ascii> = format!("Bearer {}", token.trim()).parse().unwrap();
        AdminServiceClient::with_interceptor(self.channel(None).await.unwrap(), Bearer(value))
    }

    async fn register(&self, name: &str) -> String {
        let mut a = self.admin().await;
        a.register_worker(v1::RegisterWorkerRequest { name: name.into() })
            .await
            .unwrap();
        self.token(name).await
    }

    async fn token(&self, name: &str) -> String {
        let mut a = self.admin().await;
        a.issue_enrollment_token(by_name(name))
            .await
            .unwrap()
            .into_inner()
            .token
    }

    async fn enroll(&self, token: &str, csr_pem: String) -> Result<v1::EnrollResponse, Status> {
        let mut c = self.worker(None).await.unwrap();
        c.enroll(v1::EnrollRequest {
            token: token.into(),
            csr_pem,
        })
        .await
        .map(tonic::Response::into_inner)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(90), self.server)
            .await
            .unwrap()
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
}

fn by_name(name: &str) -> v1::WorkerRef {
    v1::WorkerRef {
        r#ref: Some(v1::worker_ref::Ref::Name(name.into())),
    }
}

fn csr(cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    (key.serialize_pem(), csr)
}

fn hello(name: &str) -> v1::HelloRequest {
    v1::HelloRequest {
        worker_name: name.into(),
        ..Default::default()
    }
}

fn expect<T: std::fmt::Debug>(what: &str, r: Result<T, Status>, code: Code, text: &str) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            assert!(
                s.message().contains(text),
                "{what}: {:?} lacks {text:?}",
                s.message()
            );
            assert!(
                s.message().len() < 1000,
                "{what}: the error echoes its input"
            );
        }
        Ok(v) => panic!("{what}: accepted: {v:?}"),
    }
}

async fn upload(
    c: &mut Client,
    name: &str,
    events: Vec<v1::Event>,
) -> Result<v1::EventAck, Status> {
    let batch = v1::EventBatch {
        worker_name: name.into(),
        events,
        outbox_backlog: 0,
    };
    let mut acks = c
        .upload_events(tokio_stream::iter(vec![batch]))
        .await?
        .into_inner();
    acks.message()
        .await?
        .ok_or_else(|| Status::unknown("closed without an answer"))
}

fn event(body: v1::event::Body) -> v1::Event {
    v1::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(pgsnapman_proto::timestamp(chrono::Utc::now())),
        body: Some(body),
    }
}

/// A certificate for `name` signed by the coordinator's own CA (its key is
/// in its data directory) but never recorded, or one that expired: (PEM
/// certificate, PEM key).
fn forged(data: &Path, name: &str, expired: bool) -> (String, String) {
    let ca_pem = std::fs::read_to_string(data.join("pki/ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(data.join("pki/ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    leaf(name, &issuer, expired)
}

fn leaf(name: &str, issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, expired: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.subject_alt_names = vec![rcgen::SanType::URI(
        format!("pgsnapman://worker/{name}").try_into().unwrap(),
    )];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 2, 1);
    }
    let cert = p.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Refused at the TLS handshake or by the service, never served.
async fn refused(r: &Running, what: &str, cert: &str, key: &str) {
    match r.worker(Some((cert, key))).await {
        Err(_) => {}
        Ok(mut c) => match c.hello(hello("")).await {
            Err(s) => assert!(
                matches!(
                    s.code(),
                    Code::Unauthenticated | Code::Unavailable | Code::Unknown | Code::Cancelled
                ),
                "{what}: {s:?}"
            ),
            Ok(_) => panic!("{what} was accepted"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_service_believes_only_the_certificate() {
    let r = start().await;
    let token_a = r.register("grpc-a").await;
    r.register("grpc-b").await;
    let mut bad_inputs = 0;

    // Enrollment: the CSR's subject is ignored, the token works once.
    let (key_a, csr_a) = csr("grpc-b");
    let e = r.enroll(&token_a, csr_a).await.unwrap();
    assert_eq!(e.worker_name, "grpc-a");
    assert!(e.ca_pem.contains("BEGIN CERTIFICATE"));
    let id = pgsnapman_coordinator::identity::identity_of_der(
        &x509_parser::pem::parse_x509_pem(e.certificate_pem.as_bytes())
            .unwrap()
            .1
            .contents,
    )
    .unwrap();
    assert_eq!(
        id.worker_name, "grpc-a",
        "a CSR for another name gets the token's name"
    );
    bad_inputs += 1;
    expect(
        "second use of a token",
        r.enroll(&token_a, csr("x").1).await,
        Code::Unauthenticated,
        "already used",
    );
    let wrong = format!("pse_{}", "A".repeat(43));
    expect(
        "wrong token",
        r.enroll(&wrong, csr("x").1).await,
        Code::Unauthenticated,
        "not valid",
    );
    expect(
        "empty token",
        r.enroll("", csr("x").1).await,
        Code::Unauthenticated,
        "not an enrollment token",
    );
    expect(
        "1 MB token",
        r.enroll(&"pse_x".repeat(200_000), csr("x").1).await,
        Code::Unauthenticated,
        "not an enrollment token",
    );
    expect(
        "SQL-looking token",
        r.enroll("pse_' OR 1=1; --", csr("x").1).await,
        Code::Unauthenticated,
        "not valid",
    );
    let fresh = r.token("grpc-a").await;
    expect(
        "garbage CSR",
        r.enroll(&fresh, "garbage".into()).await,
        Code::InvalidArgument,
        "signing request",
    );
    let good = csr("x").1;
    expect(
        "truncated CSR",
        r.enroll(&fresh, good[..good.len() / 2].into()).await,
        Code::InvalidArgument,
        "signing request",
    );
    expect(
        "1 MB CSR",
        r.enroll(&fresh, "A".repeat(1 << 20)).await,
        Code::InvalidArgument,
        "16384",
    );
    bad_inputs += 8;

    let mut a = r.worker(Some((&e.certificate_pem, &key_a))).await.unwrap();
    let me = a.hello(hello("")).await.unwrap().into_inner();
    assert!(me.worker_id > 0);
    assert!(a.hello(hello("grpc-a")).await.is_ok());

    // Names other than the certificate's, and no certificate at all.
    expect(
        "Hello as B",
        a.hello(hello("grpc-b")).await,
        Code::PermissionDenied,
        "certificate",
    );
    expect(
        "SyncSchedule as B",
        a.sync_schedule(v1::SyncScheduleRequest {
            worker_name: "grpc-b".into(),
            known_version: 0,
        })
        .await,
        Code::PermissionDenied,
        "grpc-b",
    );
    expect(
        "a batch named B",
        upload(&mut a, "grpc-b", vec![]).await,
        Code::PermissionDenied,
        "grpc-b",
    );
    expect(
        "a 1 MB name",
        a.hello(hello(&"n".repeat(1 << 20))).await,
        Code::PermissionDenied,
        "bytes)",
    );
    let mut anon = r.worker(None).await.unwrap();
    expect(
        "Hello without a certificate",
        anon.hello(hello("grpc-a")).await,
        Code::Unauthenticated,
        "enroll this worker first",
    );
    expect(
        "SyncSchedule without a certificate",
        anon.sync_schedule(v1::SyncScheduleRequest::default()).await,
        Code::Unauthenticated,
        "enroll",
    );
    expect(
        "upload without a certificate",
        upload(&mut anon, "grpc-a", vec![]).await,
        Code::Unauthenticated,
        "enroll",
    );
    expect(
        "renewal without a certificate",
        anon.renew_certificate(v1::RenewCertificateRequest {
            csr_pem: csr("x").1,
        })
        .await,
        Code::Unauthenticated,
        "enroll",
    );
    bad_inputs += 8;

    // Bad events.
    use v1::event::Body;
    let task_failed = |task_id: i64| {
        Body::TaskFailed(v1::TaskFailed {
            task: Some(v1::TaskRef {
                task_id,
                lease_id: uuid::Uuid::new_v4().to_string(),
            }),
            error: "x".into(),
        })
    };
    let cases: Vec<(&str, Vec<v1::Event>, Code, &str)> = vec![
        (
            "unknown dump type",
            vec![event(Body::DumpFinished(v1::DumpFinished {
                dump_uuid: uuid::Uuid::now_v7().to_string(),
                dump_type: 99,
                ..Default::default()
            }))],
            Code::InvalidArgument,
            "newer worker",
        ),
        (
            "unknown message level",
            vec![event(Body::Message(v1::WorkerMessage {
                level: 1234,
                ..Default::default()
            }))],
            Code::InvalidArgument,
            "newer worker",
        ),
        (
            "negative task id",
            vec![event(task_failed(-5))],
            Code::InvalidArgument,
            "not valid",
        ),
        (
            "huge task id",
            vec![event(task_failed(i64::MAX))],
            Code::InvalidArgument,
            "does not exist",
        ),
        (
            "event id not a UUID",
            vec![v1::Event {
                event_id: "'; DROP TABLE dumps; --".into(),
                ..event(Body::Message(Default::default()))
            }],
            Code::InvalidArgument,
            "not a UUID",
        ),
    ];
    for (what, evs, code, text) in cases {
        expect(what, upload(&mut a, "", evs).await, code, text);
        bad_inputs += 1;
    }
    let big = event(Body::Message(v1::WorkerMessage {
        text: "x".repeat(17 << 20),
        ..Default::default()
    }));
    assert!(
        upload(&mut a, "", vec![big]).await.is_err(),
        "a 17 MiB batch was accepted"
    );
    bad_inputs += 1;

    // Certificates the catalog did not issue or that expired.
    let (c, k) = forged(&r.data, "grpc-a", false);
    refused(
        &r,
        "a certificate of our CA the catalog never issued",
        &c,
        &k,
    )
    .await;
    let (c, k) = forged(&r.data, "grpc-a", true);
    refused(&r, "an expired certificate", &c, &k).await;
    let other_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other = rcgen::Issuer::new(ca, other_key);
    let (c, k) = leaf("grpc-a", &other, false);
    refused(&r, "a certificate of another CA", &c, &k).await;
    bad_inputs += 3;
    // Garbage on the port.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(&r.addr).await.unwrap();
        let _ = s
            .write_all(b"\x16\x03\x01\xff\xffgarbage frames\r\n\r\n")
            .await;
        bad_inputs += 1;
    }
    // Still serving.
    assert!(a.hello(hello("")).await.is_ok());
    assert!(bad_inputs >= 20, "{bad_inputs}");
    eprintln!("{bad_inputs} bad inputs refused");

    // Renewal over the link: a new certificate for a new key.
    let (key2, csr2) = csr("whatever");
    let renewed = a
        .renew_certificate(v1::RenewCertificateRequest { csr_pem: csr2 })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(renewed.serial, e.serial);
    let mut a2 = r
        .worker(Some((&renewed.certificate_pem, &key2)))
        .await
        .unwrap();
    assert_eq!(
        a2.hello(hello("")).await.unwrap().into_inner().worker_id,
        me.worker_id
    );

    // Revocation: every certificate of the worker is refused from now on,
    // and an open upload stream is cut.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::EventBatch::default()).await.unwrap();
    let mut acks = a2
        .upload_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    acks.message().await.unwrap().unwrap();
    let mut admin = r.admin().await;
    let w = admin
        .revoke_worker(by_name("grpc-a"))
        .await
        .unwrap()
        .into_inner();
    assert!(w.revoked_at.is_some());
    let cut = tokio::time::timeout(Duration::from_secs(10), acks.message())
        .await
        .expect("the open stream is cut at once");
    match cut {
        Err(s) => assert_eq!(s.code(), Code::PermissionDenied, "{s:?}"),
        Ok(m) => panic!("stream not cut: {m:?}"),
    }
    drop(tx);
    expect(
        "Hello after revocation",
        a.hello(hello("")).await,
        Code::PermissionDenied,
        "revoked",
    );
    expect(
        "renewed certificate after revocation",
        a2.hello(hello("")).await,
        Code::PermissionDenied,
        "revoked",
    );
    // A new token enrolls it again.
    let again = r.token("grpc-a").await;
    let (key3, csr3) = csr("x");
    let e3 = r.enroll(&again, csr3).await.unwrap();
    let mut a3 = r.worker(Some((&e3.certificate_pem, &key3))).await.unwrap();
    assert!(a3.hello(hello("")).await.is_ok());
    r.stop().await;
}
