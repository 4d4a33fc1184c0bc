//! NOT YET IN main.rs: written for the tls harness (https by default,
//! `Coordinator::ca_file`, a CA key in `<data_dir>/pki/`); enable with
//! `mod identity_tls;` once it is merged, and fix what it does not compile.
//! Worker identity on real processes over TLS (issue 13, enroll): raw tonic
//! clients holding real certificates from the coordinator's CA. A worker's
//! certificate cannot act for another worker; enrollment tokens work once;
//! bad inputs get clear errors and change nothing; revocation cuts a worker
//! off and requeues its task; workers renew their certificates.
use std::path::Path;
use std::time::Duration;

use pgsnapman_proto::v1::worker_service_client::WorkerServiceClient;
use pgsnapman_proto::v1::{self, event::Body, lease_request};
use pgsnapman_tests::{Coordinator, CoordinatorOptions, PgCluster, Pgsnap, Worker, WorkerOptions, wait};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::common::{self, PG_MAJOR};

type Client = WorkerServiceClient<Channel>;

struct Tls {
    _catalog: PgCluster,
    coordinator: Coordinator,
    cli: Pgsnap,
}

impl Tls {
    async fn start(env: &[(&str, &str)]) -> Tls {
        let catalog = PgCluster::start(PG_MAJOR).unwrap();
        let coordinator = Coordinator::start(CoordinatorOptions {
            catalog_url: Some(catalog.url("postgres")),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(coordinator.url().starts_with("https://"), "TLS is on by default");
        let cli = coordinator.cli();
        Tls {
            _catalog: catalog,
            coordinator,
            cli,
        }
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.coordinator.ca_file.as_ref().unwrap()).unwrap()
    }

    /// A client presenting `identity` (certificate, key PEM), or none.
    async fn client(&self, identity: Option<(&str, &str)>) -> Result<Client, String> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.ca_pem()));
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let channel = Endpoint::from_shared(self.coordinator.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(WorkerServiceClient::new(channel))
    }

    /// `pgsnap worker register NAME`: the token it printed.
    fn register(&self, name: &str) -> String {
        let v = self.cli.json(&["worker", "register", name]).unwrap();
        v["enrollment_token"].as_str().unwrap().to_string()
    }

    fn new_token(&self, name: &str) -> String {
        let v = self.cli.json(&["worker", "enroll-token", name]).unwrap();
        v["enrollment_token"].as_str().unwrap().to_string()
    }

    /// Enrolls `name` with a fresh key: (certificate PEM, key PEM).
    async fn enroll(&self, token: &str) -> Result<(String, String, v1::EnrollResponse), Status> {
        let (key, csr) = csr("anything");
        let r = self
            .client(None)
            .await
            .unwrap()
            .enroll(v1::EnrollRequest {
                token: token.to_string(),
                csr_pem: csr,
            })
            .await?
            .into_inner();
        Ok((r.certificate_pem.clone(), key, r))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.coordinator.process.log_path()).unwrap()
    }
}

/// A key pair and a CSR whose subject says `cn` (the coordinator ignores it).
fn csr(cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    (key.serialize_pem(), csr)
}

fn name_in(cert_pem: &str) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    cert.subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn hello(name: &str) -> v1::HelloRequest {
    v1::HelloRequest {
        worker_name: name.to_string(),
        ..Default::default()
    }
}

/// Sends one batch on a new upload stream; the first answer.
async fn upload(c: &mut Client, name: &str, events: Vec<v1::Event>) -> Result<v1::EventAck, Status> {
    let batch = v1::EventBatch {
        worker_name: name.to_string(),
        events,
        outbox_backlog: 0,
    };
    let mut acks = c
        .upload_events(tokio_stream::iter(vec![batch]))
        .await?
        .into_inner();
    match acks.message().await? {
        Some(a) => Ok(a),
        None => Err(Status::unknown("upload stream closed without an answer")),
    }
}

fn event(body: Body) -> v1::Event {
    v1::Event {
        event_id: uuid::Uuid::now_v7().to_string(),
        occurred_at: Some(pgsnapman_proto::timestamp(chrono::Utc::now())),
        body: Some(body),
    }
}

fn task_failed(task_id: i64) -> Body {
    Body::TaskFailed(v1::TaskFailed {
        task: Some(v1::TaskRef {
            task_id,
            lease_id: uuid::Uuid::new_v4().to_string(),
        }),
        error: "x".into(),
    })
}

async fn open_lease(c: &mut Client, first: lease_request::Msg) -> Result<(), Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::LeaseRequest { msg: Some(first) }).await.unwrap();
    let mut s = c
        .lease(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    // The first keepalive proves the stream was accepted.
    s.message().await?.map(|_| ()).ok_or_else(|| Status::unknown("closed"))
}

/// Catalog rows a refused request must leave alone.
fn catalog_counts(cli: &Pgsnap) -> (usize, usize, usize, String) {
    let list = |args: &[&str]| cli.json(args).unwrap().as_array().map_or(0, Vec::len);
    let tasks = cli.json(&["task", "list"]).unwrap();
    (
        list(&["task", "list"]),
        list(&["dump", "list"]),
        list(&["messages"]),
        tasks.to_string(),
    )
}

fn expect(what: &str, r: Result<impl std::fmt::Debug, Status>, code: Code, text: &str) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            assert!(s.message().contains(text), "{what}: {:?} lacks {text:?}", s.message());
            assert!(s.message().len() < 2000, "{what}: the error echoes its input");
        }
        Ok(v) => panic!("{what}: accepted: {v:?}"),
    }
}

/// Worker A's certificate asking for B's schedule, lease stream or upload
/// stream, or reporting about B's task: PERMISSION_DENIED, nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_certificate_cannot_act_for_another_worker() {
    let t = Tls::start(&[]).await;
    let a = t.register("cert-a");
    t.register("cert-b");
    let (cert, key, _) = t.enroll(&a).await.unwrap();
    let mut c = t.client(Some((&cert, &key))).await.unwrap();
    // B has a queued task (B is not connected: it stays queued).
    let source = PgCluster::start(PG_MAJOR).unwrap();
    let instance = common::add_instance(&t.cli, "src-b", source.port, "cert-b", None);
    let job = common::add_job(&t.cli, instance, "postgres");
    let b_task = common::dump_now(&t.cli, job);
    let before = catalog_counts(&t.cli);

    let me = c.hello(hello("")).await.unwrap().into_inner();
    assert!(me.worker_id > 0);
    expect("Hello as B", c.hello(hello("cert-b")).await, Code::PermissionDenied, "certificate");
    expect(
        "SyncSchedule as B",
        c.sync_schedule(v1::SyncScheduleRequest {
            worker_name: "cert-b".into(),
            known_version: 0,
        })
        .await,
        Code::PermissionDenied,
        "cert-b",
    );
    expect(
        "Open as B",
        open_lease(&mut c, lease_request::Msg::Open(v1::Open { worker_name: "cert-b".into() })).await,
        Code::PermissionDenied,
        "cert-b",
    );
    expect(
        "a batch named B",
        upload(&mut c, "cert-b", vec![event(Body::Message(Default::default()))]).await,
        Code::PermissionDenied,
        "cert-b",
    );
    expect(
        "B's task reported by A",
        upload(&mut c, "", vec![event(task_failed(b_task))]).await,
        Code::PermissionDenied,
        "belongs to worker cert-b",
    );
    assert_eq!(catalog_counts(&t.cli), before, "the catalog changed");
    // A's own lease stream works, and is never handed B's task.
    open_lease(&mut c, lease_request::Msg::Open(v1::Open { worker_name: String::new() }))
        .await
        .unwrap();
}

/// An enrollment token works once; the second use, an expired token and a
/// wrong one are refused with their own reasons, and every refusal is
/// audited. The CSR's subject is ignored: the certificate names the token's
/// worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_work_once_and_refusals_are_audited() {
    let t = Tls::start(&[("PGSNAPMAN_ENROLLMENT__TOKEN_TTL", "2s")]).await;
    let token = t.register("once");
    let (key, csr_b) = csr("somebody-else");
    let r = t
        .client(None)
        .await
        .unwrap()
        .enroll(v1::EnrollRequest {
            token: token.clone(),
            csr_pem: csr_b,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(name_in(&r.certificate_pem), "once", "the CSR's name is ignored");
    assert_eq!(r.worker_name, "once");
    let mut c = t.client(Some((&r.certificate_pem, &key))).await.unwrap();
    assert!(c.hello(hello("once")).await.is_ok());
    expect("second use", t.enroll(&token).await, Code::Unauthenticated, "already used");
    let wrong = format!("pse_{}", "A".repeat(43));
    expect("wrong token", t.enroll(&wrong).await, Code::Unauthenticated, "not valid");
    let short_lived = t.new_token("once");
    // Until it expires a garbage CSR is refused for the CSR (the token stays
    // unused); then for the token.
    wait::until("the token to expire", Duration::from_secs(30), || {
        let token = short_lived.clone();
        let t = &t;
        async move {
            let r = t
                .client(None)
                .await
                .ok()?
                .enroll(v1::EnrollRequest {
                    token,
                    csr_pem: "garbage".into(),
                })
                .await;
            match r {
                Err(s) if s.code() == Code::Unauthenticated => {
                    assert!(s.message().contains("expired"), "{s:?}");
                    Some(())
                }
                Err(s) if s.code() == Code::InvalidArgument => None,
                other => panic!("expiring token: {other:?}"),
            }
        }
    })
    .await;
    let log = t.log();
    for reason in ["already used", "not valid", "expired"] {
        assert!(
            log.lines().any(|l| l.contains("pgsnapman::audit") && l.contains("ok=false") && l.contains(reason)),
            "no audit line for {reason}"
        );
    }
    assert!(!log.contains(&token), "a token reached the log");
}

/// More than twenty bad inputs on the WorkerService: each a clear error, the
/// coordinator keeps serving, the catalog unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_on_the_worker_service_are_refused_and_change_nothing() {
    let t = Tls::start(&[]).await;
    let token = t.register("bad-a");
    let (cert, key, _) = t.enroll(&token).await.unwrap();
    let mut anon = t.client(None).await.unwrap();
    let mut a = t.client(Some((&cert, &key))).await.unwrap();
    let before = catalog_counts(&t.cli);
    let mut count = 0;
    let mut check = |what: &str, r: Result<String, Status>, code: Code, text: &str| {
        expect(what, r, code, text);
        count += 1;
    };
    let ok = |r: Result<tonic::Response<v1::HelloResponse>, Status>| r.map(|_| String::new());
    // 1-5: no certificate.
    check("Hello, no cert", ok(anon.hello(hello("bad-a")).await), Code::Unauthenticated, "enroll this worker first");
    check(
        "SyncSchedule, no cert",
        anon.sync_schedule(v1::SyncScheduleRequest::default()).await.map(|_| String::new()),
        Code::Unauthenticated,
        "enroll",
    );
    check(
        "Lease, no cert",
        open_lease(&mut anon, lease_request::Msg::Open(v1::Open::default())).await.map(|_| String::new()),
        Code::Unauthenticated,
        "enroll",
    );
    check(
        "Upload, no cert",
        upload(&mut anon, "bad-a", vec![]).await.map(|_| String::new()),
        Code::Unauthenticated,
        "enroll",
    );
    check(
        "Renew, no cert",
        anon.renew_certificate(v1::RenewCertificateRequest { csr_pem: csr("x").1 })
            .await
            .map(|_| String::new()),
        Code::Unauthenticated,
        "enroll",
    );
    // 6-10: bad CSRs and tokens on Enroll.
    let enroll = |token: String, csr_pem: String| {
        let t = &t;
        async move {
            t.client(None)
                .await
                .unwrap()
                .enroll(v1::EnrollRequest { token, csr_pem })
                .await
                .map(|_| String::new())
        }
    };
    let fresh = t.new_token("bad-a");
    check("garbage CSR", enroll(fresh.clone(), "garbage".into()).await, Code::InvalidArgument, "certificate signing request");
    let good = csr("bad-a").1;
    check(
        "truncated CSR",
        enroll(fresh.clone(), good[..good.len() / 2].to_string()).await,
        Code::InvalidArgument,
        "certificate signing request",
    );
    check("1 MB CSR", enroll(fresh.clone(), "A".repeat(1 << 20)).await, Code::InvalidArgument, "16384");
    check("empty token", enroll(String::new(), good.clone()).await, Code::Unauthenticated, "not an enrollment token");
    check("1 MB token", enroll("pse_".to_string() + &"x".repeat(1 << 20), good.clone()).await, Code::Unauthenticated, "not an enrollment token");
    check("SQL-looking token", enroll("pse_' OR 1=1 --".into(), good.clone()).await, Code::Unauthenticated, "not valid");
    // 12-13: bad CSR on renewal; a 1 MB name.
    check(
        "garbage CSR on renewal",
        a.renew_certificate(v1::RenewCertificateRequest { csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n".into() })
            .await
            .map(|_| String::new()),
        Code::InvalidArgument,
        "certificate signing request",
    );
    check("1 MB worker name", ok(a.hello(hello(&"n".repeat(1 << 20))).await), Code::PermissionDenied, "bytes)");
    // 14-21: bad events.
    let dump = |dump_type: i32, format: i32| {
        Body::DumpFinished(v1::DumpFinished {
            dump_uuid: uuid::Uuid::now_v7().to_string(),
            dump_type,
            format,
            ..Default::default()
        })
    };
    let mut events = |what: &'static str, evs: Vec<v1::Event>, code: Code, text: &'static str| {
        let a = &mut a;
        async move { (what, upload(a, "", evs).await.map(|_| String::new()), code, text) }
    };
    let cases = vec![
        events("unknown dump type", vec![event(dump(99, 1))], Code::InvalidArgument, "newer worker").await,
        events("unknown format", vec![event(dump(1, -4))], Code::InvalidArgument, "newer worker").await,
        events(
            "unknown message level",
            vec![event(Body::Message(v1::WorkerMessage { level: 1234, ..Default::default() }))],
            Code::InvalidArgument,
            "newer worker",
        )
        .await,
        events("negative task id", vec![event(task_failed(-5))], Code::InvalidArgument, "not valid").await,
        events("huge task id", vec![event(task_failed(i64::MAX))], Code::InvalidArgument, "does not exist").await,
        events(
            "huge restore run id",
            vec![event(Body::RestoreLog(v1::RestoreLogEntry { run_id: i64::MAX, level: 1, text: "x".into() }))],
            Code::InvalidArgument,
            "does not exist",
        )
        .await,
        events(
            "event id not a UUID",
            vec![v1::Event { event_id: "'; DROP TABLE dumps; --".into(), ..event(Body::Message(Default::default())) }],
            Code::InvalidArgument,
            "not a UUID",
        )
        .await,
        events(
            "events out of order",
            {
                let (x, y) = (event(Body::Message(Default::default())), event(Body::Message(Default::default())));
                vec![y, x]
            },
            Code::InvalidArgument,
            "out of order",
        )
        .await,
    ];
    for (what, r, code, text) in cases {
        check(what, r, code, text);
    }
    // 22: an oversize batch (over the 16 MiB message limit).
    let big = Body::Message(v1::WorkerMessage {
        text: "x".repeat(17 << 20),
        ..Default::default()
    });
    let r = upload(&mut a, "", vec![event(big)]).await;
    assert!(r.is_err(), "a 17 MiB batch was accepted");
    count += 1;
    // 23: a lease stream that does not start with Open.
    check(
        "Credit before Open",
        open_lease(&mut a, lease_request::Msg::Credit(v1::Credit { slots: 1 })).await.map(|_| String::new()),
        Code::InvalidArgument,
        "must be Open",
    );
    // 24-26: certificates the CA did not issue, or that expired.
    let own_ca = rcgen::CertificateParams::new(vec![]).unwrap();
    let other_key = rcgen::KeyPair::generate().unwrap();
    let self_signed = {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, "bad-a");
        p.self_signed(&other_key).unwrap().pem()
    };
    let _ = own_ca;
    for (what, cert_pem, key_pem) in [
        ("self-signed certificate", self_signed.clone(), other_key.serialize_pem()),
        ("certificate of another CA", other_ca_cert("bad-a"), String::new()),
        ("expired certificate of our CA", our_ca_cert(&t.coordinator.data_dir, "bad-a", true), String::new()),
        ("unknown serial from our CA", our_ca_cert(&t.coordinator.data_dir, "bad-a", false), String::new()),
    ] {
        let (cert_pem, key_pem) = if key_pem.is_empty() {
            let mut parts = cert_pem.splitn(2, "\u{0}");
            (parts.next().unwrap().to_string(), parts.next().unwrap().to_string())
        } else {
            (cert_pem, key_pem)
        };
        let refused = match t.client(Some((&cert_pem, &key_pem))).await {
            Err(_) => true,
            Ok(mut c) => match c.hello(hello("bad-a")).await {
                Err(s) => {
                    assert!(
                        matches!(s.code(), Code::Unauthenticated | Code::Unavailable | Code::Unknown),
                        "{what}: {s:?}"
                    );
                    true
                }
                Ok(_) => false,
            },
        };
        assert!(refused, "{what} was accepted");
        count += 1;
    }
    // 28: garbage bytes on the port.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(&t.coordinator.addr).await.unwrap();
        let _ = s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3, 0xde, 0xad]).await;
        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\ngarbage").await;
        count += 1;
    }
    // The coordinator still serves A, and nothing changed.
    assert!(a.hello(hello("bad-a")).await.is_ok());
    assert_eq!(catalog_counts(&t.cli), before, "the catalog changed");
    assert!(count >= 20, "only {count} bad inputs");
    eprintln!("{count} bad inputs on the WorkerService refused");
}

/// A PEM certificate and key (joined by NUL) naming `name`, signed by a CA
/// made here.
fn other_ca_cert(name: &str) -> String {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    leaf(name, &issuer, false)
}

/// The same, signed by the coordinator's own CA (its key is in its data
/// directory): expired, or valid but never recorded in the catalog.
fn our_ca_cert(data_dir: &Path, name: &str, expired: bool) -> String {
    let ca_pem = std::fs::read_to_string(data_dir.join("pki/ca.crt")).unwrap();
    let key_pem = std::fs::read_to_string(data_dir.join("pki/ca.key")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, key).unwrap();
    leaf(name, &issuer, expired)
}

fn leaf(name: &str, issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, expired: bool) -> String {
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
    format!("{}\u{0}{}", cert.pem(), key.serialize_pem())
}

/// A revoked worker is cut off within one keepalive period, cannot connect
/// again, and its leased task returns to the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_worker_is_cut_off_and_its_task_requeued() {
    let t = Tls::start(&[]).await;
    t.register("rv");
    let worker = Worker::start(WorkerOptions {
        name: "rv".into(),
        coordinator: t.coordinator.access(),
        ..Default::default()
    })
    .unwrap();
    t.coordinator.wait_worker_connected("rv").await;
    // A dump that waits for a table lock keeps its task leased.
    let source = PgCluster::start(PG_MAJOR).unwrap();
    source.script("postgres", "CREATE TABLE held (x int)").unwrap();
    let lock = common::TableLock::hold(&source, "postgres", "held").await;
    let instance = common::add_instance(&t.cli, "src-rv", source.port, "rv", None);
    let job = common::add_job(&t.cli, instance, "postgres");
    let task = common::dump_now(&t.cli, job);
    common::TableLock::wait_dump_blocked(&source).await;
    let state = |cli: &Pgsnap| cli.json(&["task", "show", &task.to_string()]).unwrap()["state"].clone();
    assert_eq!(state(&t.cli), "LEASED");

    let w = t.cli.json(&["worker", "revoke", "rv"]).unwrap();
    assert!(!w["revoked_at"].is_null());
    assert_eq!(state(&t.cli), "QUEUED", "the leased task returns to the queue at once");
    let log = || std::fs::read_to_string(worker.process.log_path()).unwrap();
    let refusals = |text: &str| text.matches("is revoked").count();
    wait::until("the worker to be cut off", Duration::from_secs(30), || async {
        (refusals(&log()) >= 1).then_some(())
    })
    .await;
    // It tries again (backoff at most 1s in tests) and is refused again.
    wait::until("a refused reconnection", Duration::from_secs(30), || async {
        (refusals(&log()) >= 2).then_some(())
    })
    .await;
    assert_eq!(state(&t.cli), "QUEUED", "never leased to the revoked worker again");
    let shown = t.cli.json(&["worker", "show", "rv"]).unwrap();
    assert_eq!(shown["connected"], false);
    drop(lock);
    let mut worker = worker;
    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&["is revoked", "revoked"]);
}

/// With a 90 s certificate the worker renews after 60 s over its link (new
/// key pair), swaps the files and reconnects with the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_renews_its_certificate_over_the_link() {
    let t = Tls::start(&[("PGSNAPMAN_ENROLLMENT__CERT_VALIDITY", "90s")]).await;
    t.register("rn");
    let worker = Worker::start(WorkerOptions {
        name: "rn".into(),
        coordinator: t.coordinator.access(),
        ..Default::default()
    })
    .unwrap();
    let first = t.coordinator.wait_worker_connected("rn").await;
    let cert_file = worker.data_dir.join("identity/worker.crt");
    let key_file = worker.data_dir.join("identity/worker.key");
    let (cert0, key0) = (std::fs::read_to_string(&cert_file).unwrap(), std::fs::read_to_string(&key_file).unwrap());
    wait::until("the certificate to be renewed", Duration::from_secs(120), || async {
        let log = std::fs::read_to_string(worker.process.log_path()).unwrap();
        log.contains("worker certificate renewed").then_some(())
    })
    .await;
    let (cert1, key1) = (std::fs::read_to_string(&cert_file).unwrap(), std::fs::read_to_string(&key_file).unwrap());
    assert_ne!(cert0, cert1);
    assert_ne!(key0, key1, "renewal uses a new key pair");
    let now = t.coordinator.wait_worker_connected("rn").await;
    assert_ne!(now.certificate_serial, first.certificate_serial);
    let mut worker = worker;
    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
}
