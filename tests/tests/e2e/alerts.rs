//! Alerts (docs/alerts.md): webhook receivers started here get exactly one
//! signed notification per incident (a failed dump, an offline worker, a
//! failing channel) and none for a success; a 500 is retried; a receiver
//! that is down is reported; mail reaches an SMTP sink (aiosmtpd); the
//! channel secret is in no listing, catalog dump or log.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgsnapman_tests::{
    Coordinator, CoordinatorOptions, PgCluster, Pgsnap, Worker, WorkerOptions, wait,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const HMAC_KEY: &str = "whsec-e2e-Tr0ub4dor-0123456789";
const FLAKY_KEY: &str = "whsec-flaky-Correct-Horse-42";
const SMTP_PASSWORD: &str = "smtp-Battery-Staple-77";

/// One POST a receiver got.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    delivery: String,
    status: u16,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver: answers each request with the next scripted status
/// (then 200) and records it.
#[derive(Clone)]
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(
            script.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let record = got.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (record, script) = (record.clone(), script.clone());
                tokio::spawn(async move {
                    let Some((headers, body)) = read_request(&mut conn).await else {
                        return;
                    };
                    let status = script.lock().unwrap().pop_front().unwrap_or(200);
                    let header = |n: &str| {
                        headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(n))
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    record.lock().unwrap().push(Received {
                        signature: header("x-pgsnapman-signature"),
                        delivery: header("x-pgsnapman-delivery"),
                        status,
                        body,
                    });
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        Receiver { url, got }
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The notifications of `class` (payload field) received so far.
    fn of_class(&self, class: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.json()["class"] == class)
            .collect()
    }
}

/// Headers and body of one HTTP/1.1 request with a Content-Length.
async fn read_request(
    conn: &mut tokio::net::TcpStream,
) -> Option<(Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((headers, body))
}

/// Checks a signature with the receiver code of docs/alerts.md (Python).
fn signature_valid(key_file: &Path, r: &Received, body: &[u8]) -> bool {
    let mut child = Command::new(test_python())
        .arg(python_dir().join("webhook_verify.py"))
        .arg(key_file)
        .arg(&r.signature)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), body).unwrap();
    child.wait().unwrap().success()
}

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// aiosmtpd on a free loopback port, writing each mail into `dir`.
struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Plain SMTP, anyone may send.
    async fn start() -> SmtpSink {
        Self::start_with(&[], None).await
    }

    /// With `args` CERT KEY USER and `password`: STARTTLS and a login are
    /// required.
    async fn start_with(args: &[&str], password: Option<&str>) -> SmtpSink {
        let port = free_port();
        let dir = pgsnapman_tests::shared_tempdir("pgsnapman-smtp-");
        let mut cmd = Command::new(test_python());
        cmd.arg(python_dir().join("smtp_sink.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::piped());
        if let Some(p) = password {
            cmd.env("SMTP_SINK_PASSWORD", p);
        }
        let child = cmd.spawn().unwrap();
        let ready = dir.path().join("ready");
        wait::until("the SMTP sink", Duration::from_secs(30), || {
            let ok = ready.exists();
            async move { ok.then_some(()) }
        })
        .await;
        SmtpSink { child, port, dir }
    }

    fn mails(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .map(|p| {
                let env = std::fs::read_to_string(p.with_extension("env")).unwrap();
                (env, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    wait::until(what, Duration::from_secs(90), || {
        let v = f();
        async move { v }
    })
    .await
}

/// Registers worker `name` and starts it on `c`; its id once connected.
async fn worker_on(c: &Coordinator, name: &str) -> (i64, Worker) {
    let id = register_worker(&c.cli(), name);
    let worker = Worker::start(WorkerOptions {
        name: name.into(),
        coordinator: c.access(),
        ..Default::default()
    })
    .unwrap();
    c.wait_worker_connected(name).await;
    (id, worker)
}

fn ok(cli: &Pgsnap, args: &[&str]) -> Value {
    cli.json(args)
        .unwrap_or_else(|e| panic!("pgsnap {args:?}: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_notify_once_signed_retried_and_by_mail() {
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let env = [
        ("PGSNAPMAN_NOTIFY__INTERVAL", "300ms"),
        ("PGSNAPMAN_NOTIFY__MAX_ATTEMPTS", "3"),
        ("PGSNAPMAN_NOTIFY__RETRY_INITIAL_INTERVAL", "200ms"),
        ("PGSNAPMAN_NOTIFY__RETRY_MAX_INTERVAL", "400ms"),
        ("PGSNAPMAN_NOTIFY__SEND_TIMEOUT", "5s"),
    ];
    // The SMTP relay below presents the coordinator's own server
    // certificate, signed by the test CA: trusted through notify.ca_file.
    let ca = pgsnapman_tests::pki::shared_ca_dir()
        .unwrap()
        .join("ca.crt");
    let mut coordinator = Coordinator::start(CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("PGSNAPMAN_NOTIFY__CA_FILE".into(), ca.display().to_string())])
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let cli = coordinator.cli();
    let (worker_id, mut worker) = worker_on(&coordinator, "w-alert").await;
    let source = PgCluster::start(PG_MAJOR).unwrap();
    source.create_database("good").unwrap();

    let hook = Receiver::start(&[]).await;
    let flaky = Receiver::start(&[500]).await;
    let down = format!("http://127.0.0.1:{}/hook", free_port());
    let smtp = SmtpSink::start().await;
    let pki = coordinator.data_dir.join("pki");
    let (cert, key) = (pki.join("server.crt"), pki.join("server.key"));
    let tls_args = [cert.to_str().unwrap(), key.to_str().unwrap(), "alerts"];
    let smtp_tls = SmtpSink::start_with(&tls_args, Some(SMTP_PASSWORD)).await;
    let keys = pgsnapman_tests::shared_tempdir("pgsnapman-keys-");
    let key_file = keys.path().join("hook.key");
    pgsnapman_proto::secret_file::write_private(&key_file, format!("{HMAC_KEY}\n").as_bytes())
        .unwrap();
    let key_path = key_file.to_str().unwrap();

    // Channels: the key from a 0600 file or from stdin, never argv.
    for (name, url) in [("hook", hook.url.as_str()), ("down", down.as_str())] {
        ok(
            &cli,
            &[
                "notify",
                "add",
                "webhook",
                "--name",
                name,
                "--url",
                url,
                "--secret-file",
                key_path,
            ],
        );
    }
    let flaky_args = [
        "notify",
        "add",
        "webhook",
        "--name",
        "flaky",
        "--url",
        &flaky.url,
        "--secret-stdin",
    ];
    cli.json_with_stdin(&flaky_args, &format!("{FLAKY_KEY}\n"))
        .unwrap();
    let port = smtp.port.to_string();
    ok(
        &cli,
        &[
            "notify",
            "add",
            "email",
            "--name",
            "mail",
            "--smtp-relay",
            "127.0.0.1",
            "--smtp-port",
            &port,
            "--smtp-tls",
            "none",
            "--from",
            "pgsnapman@example.com",
            "--to",
            "dba@example.com",
        ],
    );
    let tls_port = smtp_tls.port.to_string();
    let mail_tls = [
        "notify",
        "add",
        "email",
        "--name",
        "mail-tls",
        "--smtp-relay",
        "127.0.0.1",
        "--smtp-port",
        &tls_port,
        "--from",
        "pgsnapman@example.com",
        "--to",
        "ops@example.com",
        "--smtp-user",
        "alerts",
        "--secret-stdin",
    ];
    cli.json_with_stdin(&mail_tls, &format!("{SMTP_PASSWORD}\n"))
        .unwrap();
    // A short key is refused with the reason.
    let weak = cli
        .run_with_stdin(
            &[
                "notify",
                "add",
                "webhook",
                "--name",
                "weak",
                "--url",
                &hook.url,
                "--secret-stdin",
            ],
            "short\n",
        )
        .unwrap();
    assert!(
        !weak.success() && weak.stderr.contains("at least 16 bytes"),
        "{weak:?}"
    );

    // A test notification answers with the receiver's status.
    let t = ok(&cli, &["notify", "test", "hook"]);
    assert_eq!(t["detail"], "HTTP 200", "{t}");
    assert_eq!(hook.of_class("test").len(), 1);

    for rule in [
        vec![
            "--name",
            "failed",
            "--class",
            "dump_failed",
            "--channel",
            "hook",
            "--channel",
            "flaky",
            "--channel",
            "down",
            "--channel",
            "mail",
            "--channel",
            "mail-tls",
        ],
        vec![
            "--name",
            "offline",
            "--class",
            "worker_offline",
            "--offline-after",
            "2s",
            "--channel",
            "hook",
        ],
        vec![
            "--name",
            "channels",
            "--class",
            "channel_failed",
            "--channel",
            "hook",
        ],
    ] {
        let mut args = vec!["notify", "rule", "add"];
        args.extend(rule);
        ok(&cli, &args);
    }

    // A good dump: no notification. Then a job whose server is unreachable
    // fails twice: one incident, one notification per channel.
    let inst = add_instance(&cli, "src", source.port, "w-alert", None);
    let good_job = add_job(&cli, inst, "good");
    let t = wait_task_done(&cli, dump_now(&cli, good_job)).await;
    assert_eq!(t["state"], "SUCCEEDED", "{t}");
    let nowhere = add_instance(&cli, "nowhere", free_port(), "w-alert", None);
    let bad_job = add_job(&cli, nowhere, "postgres");
    for _ in 0..2 {
        let t = wait_task_done(&cli, dump_now(&cli, bad_job)).await;
        assert_eq!(t["state"], "FAILED", "{t}");
    }
    // The other classes: their conditions are evaluated every round; only
    // the job that never had a good dump is missing one.
    let bad = bad_job.to_string();
    for rule in [
        vec![
            "--name",
            "stale",
            "--class",
            "dump_missing",
            "--max-age",
            "1s",
            "--job",
            &bad,
        ],
        vec!["--name", "restores", "--class", "restore_failed"],
        vec!["--name", "verified", "--class", "verify_failed"],
        vec!["--name", "backlog", "--class", "outbox_backlog"],
    ] {
        let mut args = vec!["notify", "rule", "add", "--channel", "hook"];
        args.extend(rule);
        ok(&cli, &args);
    }
    // A restore job of the good dump onto the unreachable server fails.
    let good_dump = id_of(&catalog_of_job(&cli, good_job)[0]).to_string();
    let to = nowhere.to_string();
    let rj = ok(
        &cli,
        &[
            "restore-job",
            "add",
            "--from-dump",
            &good_dump,
            "--to-instance",
            &to,
            "--at",
            "2099-01-01T00:00:00Z",
        ],
    );
    let rj = id_of(&rj);
    let run = cli
        .run(&["restore", "run", &rj.to_string(), "--wait"])
        .unwrap();
    assert!(!run.success(), "{run:?}");
    let restore = wait_for("the failed-restore webhook", || {
        hook.of_class("restore_failed").pop()
    })
    .await;
    assert_eq!(restore.json()["subject"], format!("restore_job:{rj}"));
    // Ad-hoc restores onto one target: two failures, one incident.
    for _ in 0..2 {
        let run = cli
            .run(&[
                "restore",
                "now",
                "--dump",
                &good_dump,
                "--to-instance",
                &to,
                "--to-database",
                "adhoc target",
                "--wait",
            ])
            .unwrap();
        assert!(!run.success(), "{run:?}");
    }
    let adhoc = wait_for("the failed ad-hoc restore webhook", || {
        hook.of_class("restore_failed")
            .into_iter()
            .find(|r| r.json()["subject"] != format!("restore_job:{rj}"))
    })
    .await;
    assert_eq!(
        adhoc.json()["subject"],
        format!("restore_target:{nowhere}/adhoc target")
    );

    wait_for("the failed-dump webhook", || {
        hook.of_class("dump_failed").pop()
    })
    .await;
    wait_for("the retried webhook", || {
        (flaky.all().len() >= 2).then_some(())
    })
    .await;
    wait_for("the mail", || (!smtp.mails().is_empty()).then_some(())).await;
    wait_for("the mail over STARTTLS", || {
        (!smtp_tls.mails().is_empty()).then_some(())
    })
    .await;
    wait_for("the channel-failure message", || {
        let msgs = ok(&cli, &["messages", "--level", "error"]);
        msgs.as_array()?
            .iter()
            .find(|m| {
                m["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("notification channel down failed")
            })
            .cloned()
    })
    .await;
    wait_for("the failing-channel webhook", || {
        hook.of_class("channel_failed").pop()
    })
    .await;
    // Several more evaluation rounds: nothing is sent twice.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let failed = hook.of_class("dump_failed");
    assert_eq!(
        failed.len(),
        1,
        "exactly one notification for the incident: {failed:?}"
    );
    let n = failed[0].json();
    assert_eq!(n["status"], "firing");
    assert_eq!(n["subject"], format!("job:{bad_job}"), "{n}");
    assert_eq!(n["details"]["job_id"], bad_job, "{n}");
    assert_eq!(n["severity"], "critical");
    assert!(!String::from_utf8_lossy(&failed[0].body).contains(&format!("job:{good_job}")));
    assert!(
        signature_valid(&key_file, &failed[0], &failed[0].body),
        "{:?}",
        failed[0]
    );
    let mut tampered = failed[0].body.clone();
    tampered.extend_from_slice(b" ");
    assert!(
        !signature_valid(&key_file, &failed[0], &tampered),
        "a changed body must not verify"
    );

    // The 500 was retried: the same delivery, signed both times.
    let retried = flaky.all();
    assert_eq!(retried.len(), 2, "{retried:?}");
    assert_eq!((retried[0].status, retried[1].status), (500, 200));
    assert_eq!(retried[0].delivery, retried[1].delivery);
    assert_eq!(retried[0].body, retried[1].body);
    let flaky_key = keys.path().join("flaky.key");
    pgsnapman_proto::secret_file::write_private(&flaky_key, FLAKY_KEY.as_bytes()).unwrap();
    assert!(signature_valid(&flaky_key, &retried[1], &retried[1].body));

    // The failing channel is reported once, and to the other channels only.
    let chan = hook.of_class("channel_failed");
    assert_eq!(chan.len(), 1, "{chan:?}");
    assert!(
        chan[0].json()["summary"].as_str().unwrap().contains("down"),
        "{:?}",
        chan[0].json()
    );
    let listed = ok(&cli, &["notify", "list"]);
    let down_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "down")
        .unwrap();
    assert!(!down_row["failing_since"].is_null(), "{down_row}");

    // The mail over STARTTLS with a login (the default TLS mode).
    let mails = smtp_tls.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(
        mails[0].0.contains("tls True") && mails[0].0.contains("login True"),
        "{:?}",
        mails[0].0
    );
    let logins = std::fs::read_to_string(smtp_tls.dir.path().join("logins")).unwrap();
    assert!(logins.lines().all(|l| l.ends_with(" ok")), "{logins}");

    // The mail.
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].0.contains("dba@example.com"), "{:?}", mails[0].0);
    assert!(
        mails[0].1.contains("[pgsnapman CRITICAL]"),
        "{}",
        mails[0].1
    );
    assert!(
        mails[0].1.contains(&format!("job:{bad_job}")),
        "{}",
        mails[0].1
    );

    // The worker goes away: one notification once it is offline past 2s.
    worker.process.stop_clean().await;
    let off = wait_for("the worker-offline webhook", || {
        hook.of_class("worker_offline").pop()
    })
    .await;
    assert_eq!(off.json()["subject"], format!("worker:{worker_id}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.of_class("worker_offline").len(), 1);
    assert!(signature_valid(&key_file, &off, &off.body));

    let missing = hook.of_class("dump_missing");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0].json()["subject"], format!("job:{bad_job}"));
    assert_eq!(
        hook.of_class("restore_failed").len(),
        2,
        "one per restore job and one per ad-hoc target"
    );
    for quiet in ["verify_failed", "outbox_backlog"] {
        assert!(
            hook.of_class(quiet).is_empty(),
            "{quiet}: nothing to report"
        );
    }
    let rules = ok(&cli, &["notify", "rule", "list"]);
    let open = |name: &str| {
        rules
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()["open_incidents"]
            .clone()
    };
    let counts = [
        open("failed"),
        open("offline"),
        open("restores"),
        open("verified"),
    ];
    assert_eq!(counts, [1, 1, 2, 0], "{rules}");
    // A channel a rule names is not removed; a rule is.
    let refused = cli.run(&["notify", "remove", "hook"]).unwrap();
    assert!(
        !refused.success() && refused.stderr.contains("used by rule(s)"),
        "{refused:?}"
    );
    ok(&cli, &["notify", "rule", "remove", "backlog"]);
    let unknown = cli.run(&["notify", "rule", "remove", "backlog"]).unwrap();
    assert!(
        unknown
            .stderr
            .contains("notification rule \"backlog\" not found"),
        "{unknown:?}"
    );

    // The secrets are in no listing, catalog dump or log.
    let listed = ok(&cli, &["notify", "list"]);
    let hooks: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "webhook")
        .collect();
    assert_eq!(hooks.len(), 3, "{listed}");
    assert!(hooks.iter().all(|c| c["has_secret"] == true), "{listed}");
    let listed = listed.to_string();
    let dump = dump_catalog(&catalog);
    assert!(
        dump.contains("notify_channels"),
        "the catalog dump holds the channels"
    );
    let log = std::fs::read_to_string(coordinator.process.log_path()).unwrap();
    for secret in [HMAC_KEY, FLAKY_KEY, SMTP_PASSWORD] {
        assert!(!listed.contains(secret), "secret in notify list");
        assert!(!dump.contains(secret), "secret in the catalog");
        assert!(!log.contains(secret), "secret in the coordinator log");
    }

    for failed in [
        "notify: rule condition",
        "notify: evaluating",
        "notify: sending",
    ] {
        assert!(!log.contains(failed), "{failed}: a notify query failed");
    }
    coordinator.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    coordinator
        .process
        .assert_no_unexpected_errors(&["notification channel failed"]);
}

/// Two coordinators on one catalog, sharing the notify key, both evaluating
/// and sending every 100ms: a failed dump still notifies exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_notify_once() {
    let catalog = PgCluster::start(PG_MAJOR).unwrap();
    let start = |env: Vec<(String, String)>| {
        Coordinator::start(CoordinatorOptions {
            catalog_url: Some(catalog.url("postgres")),
            env,
            ..Default::default()
        })
    };
    let fast = (
        "PGSNAPMAN_NOTIFY__INTERVAL".to_string(),
        "100ms".to_string(),
    );
    let mut a = start(vec![fast.clone()]).await.unwrap();
    let key = a.data_dir.join("notify.key");
    let shared_key = (
        "PGSNAPMAN_NOTIFY__KEY_FILE".to_string(),
        key.display().to_string(),
    );
    let mut b = start(vec![fast, shared_key]).await.unwrap();
    let cli = a.cli();
    let (_, mut worker) = worker_on(&a, "w-two").await;

    let hook = Receiver::start(&[]).await;
    let keys = pgsnapman_tests::shared_tempdir("pgsnapman-keys-");
    let key_file = keys.path().join("hook.key");
    pgsnapman_proto::secret_file::write_private(&key_file, HMAC_KEY.as_bytes()).unwrap();
    let key_path = key_file.to_str().unwrap();
    ok(
        &cli,
        &[
            "notify",
            "add",
            "webhook",
            "--name",
            "hook",
            "--url",
            &hook.url,
            "--secret-file",
            key_path,
        ],
    );
    ok(
        &cli,
        &[
            "notify",
            "rule",
            "add",
            "--name",
            "failed",
            "--class",
            "dump_failed",
            "--channel",
            "hook",
        ],
    );
    // The second coordinator opens the secret the first one sealed.
    let t = ok(&b.cli(), &["notify", "test", "hook"]);
    assert_eq!(t["detail"], "HTTP 200", "{t}");

    let nowhere = add_instance(&cli, "nowhere", free_port(), "w-two", None);
    let job = add_job(&cli, nowhere, "postgres");
    let t = wait_task_done(&cli, dump_now(&cli, job)).await;
    assert_eq!(t["state"], "FAILED", "{t}");
    let got = wait_for("the failed-dump webhook", || {
        hook.of_class("dump_failed").pop()
    })
    .await;
    assert!(signature_valid(&key_file, &got, &got.body));
    // Many rounds of both coordinators later: still one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.of_class("dump_failed").len(), 1, "{:?}", hook.all());

    worker.process.stop_clean().await;
    b.process.stop_clean().await;
    a.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
    a.process.assert_no_unexpected_errors(&[]);
    b.process.assert_no_unexpected_errors(&[]);
}
