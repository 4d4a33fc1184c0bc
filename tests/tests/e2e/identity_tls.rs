//! Worker identity on real processes over TLS (issue 13, enroll): raw tonic
//! clients holding real certificates from the coordinator's CA. A worker's
//! certificate cannot act for another worker; enrollment tokens work once
//! and refusals are audited; revocation cuts a real worker off and requeues
//! its task; workers renew their certificates; stream limits and call
//! timeouts hold. The bad-input matrix runs in
//! process: coordinator/tests/identity_grpc.rs.
use std::time::Duration;

use pgsnapman_proto::v1::worker_service_client::WorkerServiceClient;
use pgsnapman_proto::v1::{self, event::Body, lease_request};
use pgsnapman_tests::{
    Coordinator, CoordinatorOptions, PgCluster, Pgsnap, Worker, WorkerOptions, wait,
};
use sqlx::Connection;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::common::{self, PG_MAJOR};

type Client = WorkerServiceClient<Channel>;

struct Tls {
    _catalog: PgCluster,
    catalog_url: String,
    coordinator: Coordinator,
    cli: Pgsnap,
}

impl Tls {
    async fn start(env: &[(&str, &str)]) -> Tls {
        let catalog = PgCluster::start(PG_MAJOR).unwrap();
        let coordinator = Coordinator::start(CoordinatorOptions {
            catalog_url: Some(catalog.url("postgres")),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(
            coordinator.url().starts_with("https://"),
            "TLS is on by default"
        );
        let cli = coordinator.cli();
        Tls {
            catalog_url: catalog.url("postgres"),
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

fn hello(name: &str) -> v1::HelloRequest {
    v1::HelloRequest {
        worker_name: name.to_string(),
        ..Default::default()
    }
}

/// Sends one batch on a new upload stream; the first answer.
async fn upload(
    c: &mut Client,
    name: &str,
    events: Vec<v1::Event>,
) -> Result<v1::EventAck, Status> {
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
    lease_with(c, first).await.map(|_| ())
}

/// Catalog rows a refused request must leave alone.
fn catalog_counts(cli: &Pgsnap) -> (usize, usize, usize, String) {
    let list = |args: &[&str]| cli.json(args).unwrap().as_array().map_or(0, Vec::len);
    let tasks = cli.json(&["task", "list"]).unwrap();
    (
        list(&["task", "list"]),
        list(&["catalog", "list"]),
        list(&["messages"]),
        tasks.to_string(),
    )
}

fn expect(what: &str, r: Result<impl std::fmt::Debug, Status>, code: Code, text: &str) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), code, "{what}: {s:?}");
            assert!(
                s.message().contains(text),
                "{what}: {:?} lacks {text:?}",
                s.message()
            );
            assert!(
                s.message().len() < 2000,
                "{what}: the error echoes its input"
            );
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
    expect(
        "Hello as B",
        c.hello(hello("cert-b")).await,
        Code::PermissionDenied,
        "certificate",
    );
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
        open_lease(
            &mut c,
            lease_request::Msg::Open(v1::Open {
                worker_name: "cert-b".into(),
            }),
        )
        .await,
        Code::PermissionDenied,
        "cert-b",
    );
    expect(
        "a batch named B",
        upload(
            &mut c,
            "cert-b",
            vec![event(Body::Message(Default::default()))],
        )
        .await,
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
    open_lease(
        &mut c,
        lease_request::Msg::Open(v1::Open {
            worker_name: String::new(),
        }),
    )
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
    assert_eq!(r.worker_name, "once");
    let mut c = t.client(Some((&r.certificate_pem, &key))).await.unwrap();
    assert!(c.hello(hello("once")).await.is_ok());
    expect(
        "second use",
        t.enroll(&token).await,
        Code::Unauthenticated,
        "already used",
    );
    let wrong = format!("pse_{}", "A".repeat(43));
    expect(
        "wrong token",
        t.enroll(&wrong).await,
        Code::Unauthenticated,
        "not valid",
    );
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
    let refused = t
        .cli
        .json(&["audit", "list", "--method", "Enroll", "--failed"])
        .unwrap();
    let refused = refused.as_array().unwrap();
    for reason in ["already used", "not valid", "expired"] {
        assert!(
            log.lines().any(|l| l.contains("pgsnapman::audit")
                && l.contains("ok=false")
                && l.contains(reason)),
            "no audit line for {reason}"
        );
        assert!(
            refused
                .iter()
                .any(|r| r["detail"].as_str().unwrap_or("").contains(reason)),
            "no audit row for {reason}: {refused:?}"
        );
    }
    let enrolled = t
        .cli
        .json(&[
            "audit",
            "list",
            "--method",
            "Enroll",
            "--actor",
            "worker:once",
        ])
        .unwrap();
    assert!(
        enrolled.as_array().unwrap().iter().any(|r| r["ok"] == true),
        "no audit row for the enrollment: {enrolled}"
    );
    let all = t.cli.run(&["--output", "json", "audit", "list"]).unwrap();
    assert!(
        !all.stdout.contains(&token),
        "a token reached the audit log"
    );
    assert!(!log.contains(&token), "a token reached the log");
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
    source
        .script("postgres", "CREATE TABLE held (x int)")
        .unwrap();
    let lock = common::TableLock::hold(&source, "postgres", "held").await;
    let instance = common::add_instance(&t.cli, "src-rv", source.port, "rv", None);
    let job = common::add_job(&t.cli, instance, "postgres");
    let task = common::dump_now(&t.cli, job);
    common::TableLock::wait_dump_blocked(&source).await;
    let state =
        |cli: &Pgsnap| cli.json(&["task", "show", &task.to_string()]).unwrap()["state"].clone();
    assert_eq!(state(&t.cli), "LEASED");

    let w = t.cli.json(&["worker", "revoke", "rv"]).unwrap();
    assert!(!w["revoked_at"].is_null());
    assert_eq!(
        state(&t.cli),
        "QUEUED",
        "the leased task returns to the queue at once"
    );
    let log = || std::fs::read_to_string(worker.process.log_path()).unwrap();
    let refusals = |text: &str| text.matches("is revoked").count();
    wait::until(
        "the worker to be cut off",
        Duration::from_secs(30),
        || async { (refusals(&log()) >= 1).then_some(()) },
    )
    .await;
    // It tries again (backoff at most 1s in tests) and is refused again.
    wait::until(
        "a refused reconnection",
        Duration::from_secs(30),
        || async { (refusals(&log()) >= 2).then_some(()) },
    )
    .await;
    assert_eq!(
        state(&t.cli),
        "QUEUED",
        "never leased to the revoked worker again"
    );
    let shown = t.cli.json(&["worker", "show", "rv"]).unwrap();
    assert_eq!(shown["connected"], false);
    drop(lock);
    let mut worker = worker;
    worker.process.stop_clean().await;
    worker
        .process
        .assert_no_unexpected_errors(&["is revoked", "revoked"]);
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
    let (cert0, key0) = (
        std::fs::read_to_string(&cert_file).unwrap(),
        std::fs::read_to_string(&key_file).unwrap(),
    );
    wait::until(
        "the certificate to be renewed",
        Duration::from_secs(120),
        || async {
            let log = std::fs::read_to_string(worker.process.log_path()).unwrap();
            log.contains("worker certificate renewed").then_some(())
        },
    )
    .await;
    let (cert1, key1) = (
        std::fs::read_to_string(&cert_file).unwrap(),
        std::fs::read_to_string(&key_file).unwrap(),
    );
    assert_ne!(cert0, cert1);
    assert_ne!(key0, key1, "renewal uses a new key pair");
    let now = t.coordinator.wait_worker_connected("rn").await;
    assert_ne!(now.certificate_serial, first.certificate_serial);
    let mut worker = worker;
    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
}

/// A lease stream held open: dropping it ends the stream.
type HeldLease = (
    tokio::sync::mpsc::Sender<v1::LeaseRequest>,
    tonic::Streaming<v1::LeaseResponse>,
);

/// Opens a lease stream for the certificate's worker and keeps it.
async fn hold_lease(c: &mut Client) -> Result<HeldLease, Status> {
    lease_with(
        c,
        lease_request::Msg::Open(v1::Open {
            worker_name: String::new(),
        }),
    )
    .await
}

/// Opens a lease stream with `first` and waits for its first keepalive,
/// the proof that the stream was accepted.
async fn lease_with(c: &mut Client, first: lease_request::Msg) -> Result<HeldLease, Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::LeaseRequest { msg: Some(first) })
        .await
        .map_err(|_| Status::unknown("closed"))?;
    let mut s = c
        .lease(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    s.message()
        .await?
        .ok_or_else(|| Status::unknown("closed"))?;
    Ok((tx, s))
}

/// The hardening limits on real processes: one worker certificate holds at
/// most `lease.max_lease_streams` lease streams (the next is refused with a
/// line naming the setting, and a slot frees when a stream ends), and a
/// unary call that the catalog holds up (a table lock) ends after
/// `lease.call_timeout` with DEADLINE_EXCEEDED instead of hanging; the
/// coordinator serves on afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limits_and_call_timeouts_hold_on_real_processes() {
    let t = Tls::start(&[
        ("PGSNAPMAN_LEASE__MAX_LEASE_STREAMS", "2"),
        ("PGSNAPMAN_LEASE__CALL_TIMEOUT", "2s"),
    ])
    .await;
    let token = t.register("limited");
    let (cert, key, _) = t.enroll(&token).await.unwrap();
    let mut c = t.client(Some((&cert, &key))).await.unwrap();
    c.hello(hello("")).await.unwrap();

    let first = hold_lease(&mut c).await.unwrap();
    let _second = hold_lease(&mut c).await.unwrap();
    expect(
        "a third lease stream",
        hold_lease(&mut c).await.map(|_| ()),
        Code::ResourceExhausted,
        "lease.max_lease_streams",
    );
    drop(first);
    let third = wait::until(
        "a lease slot to free after a stream ended",
        Duration::from_secs(30),
        || {
            let mut c = c.clone();
            async move { hold_lease(&mut c).await.ok() }
        },
    )
    .await;

    // The catalog holds every query on `workers` until the lock goes.
    let mut locker = sqlx::PgConnection::connect(&t.catalog_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE workers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    expect(
        "Hello while the catalog is locked",
        c.hello(hello("")).await,
        Code::DeadlineExceeded,
        "lease.call_timeout",
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    drop(third);
    let me = c.hello(hello("")).await.unwrap().into_inner();
    assert!(me.worker_id > 0, "the coordinator serves on");
}
