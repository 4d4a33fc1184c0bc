//! Prometheus metrics (docs/metrics.md): both `/metrics` endpoints parse with
//! the Prometheus project's own parsers (Python prometheus_client), a failed
//! and a successful dump change the counters, histograms and last-success
//! timestamps exactly as documented, the listeners are off by default, and a
//! stopped catalog gives `pgsnapman_catalog_up 0` without hanging.
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use pgsnapman_tests::{Coordinator, CoordinatorOptions, Worker, WorkerOptions};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// TCP ports `pid` listens on: its socket inodes (/proc/PID/fd) among the
/// kernel's listening sockets (/proc/net/tcp{,6}, state 0A).
fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = HashSet::new();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read the process's fds");
    for entry in fds.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let hex = f[1].rsplit(':').next().expect("ip:port");
                ports.push(u16::from_str_radix(hex, 16).expect("a hex port"));
            }
        }
    }
    ports.sort_unstable();
    ports
}

/// `GET /metrics` on 127.0.0.1:`port`: the body of a 200 in OpenMetrics.
async fn scrape(port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to /metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    body.to_string()
}

/// The samples of a scrape, as the Prometheus parsers read them.
struct Samples(Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    fn parse(text: &str) -> Samples {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/parse_metrics.py");
        let mut child = Command::new(test_python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the Python parser");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("feed the parser");
        let out = child.wait_with_output().expect("the parser ends");
        assert!(
            out.status.success(),
            "the scrape does not parse: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let samples: Vec<(String, BTreeMap<String, String>, f64)> =
            serde_json::from_slice(&out.stdout).expect("the parser's JSON");
        Samples(samples)
    }

    /// The value of the sample `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|s| s.2)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:?}", self.0))
    }
}

/// `pgsnapman_job_last_success_timestamp_seconds` of a FULL job on `src`.
fn last_success(s: &Samples, job: i64, database: &str) -> f64 {
    let job = job.to_string();
    let labels = [
        ("job_id", job.as_str()),
        ("pg_instance", "src"),
        ("database", database),
        ("type", "full"),
    ];
    s.value("pgsnapman_job_last_success_timestamp_seconds", &labels)
}

const OK: [(&str, &str); 2] = [("type", "full"), ("status", "succeeded")];
const FAILED: [(&str, &str); 2] = [("type", "full"), ("status", "failed")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_follow_a_failed_and_a_successful_dump() {
    let listen = [("PGSNAPMAN_METRICS__LISTEN", "127.0.0.1:0")];
    let coordinator_env = [listen[0], ("PGSNAPMAN_METRICS__CATALOG_TIMEOUT", "2s")];
    let mut stack = Stack::start_configured("w-metrics", &listen, None, &coordinator_env).await;
    let worker_ports = listening_ports(stack.worker.process.pid().expect("worker pid"));
    assert_eq!(
        worker_ports.len(),
        1,
        "the worker listens for /metrics only"
    );
    let worker_port = worker_ports[0];
    let grpc_port: u16 = stack
        .coordinator
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the coordinator's port");
    let coordinator_ports = listening_ports(stack.coordinator.process.pid().expect("pid"));
    assert_eq!(coordinator_ports.len(), 2, "gRPC and /metrics");
    assert!(coordinator_ports.contains(&grpc_port));
    let coordinator_port = coordinator_ports
        .into_iter()
        .find(|p| *p != grpc_port)
        .expect("the /metrics port");

    stack.source.create_database("sample").unwrap();
    stack
        .source
        .script(
            "sample",
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g;",
        )
        .unwrap();
    let instance = add_instance(&stack.cli, "src", stack.source.port, "w-metrics", None);
    let good = add_job(&stack.cli, instance, "sample");
    let bad = add_job(&stack.cli, instance, "no_such_database");
    // Before: no dump yet.
    let w = Samples::parse(&scrape(worker_port).await);
    assert_eq!(w.get("pgsnapman_dumps_total", &OK), None);
    assert_eq!(w.get("pgsnapman_dumps_total", &FAILED), None);
    let c = Samples::parse(&scrape(coordinator_port).await);
    assert_eq!(c.value("pgsnapman_catalog_up", &[]), 1.0);
    assert_eq!(
        c.value("pgsnapman_catalog_dumps", &[("status", "succeeded")]),
        0.0
    );
    assert_eq!(
        c.value("pgsnapman_catalog_dumps", &[("status", "failed")]),
        0.0
    );
    assert_eq!(c.value("pgsnapman_workers", &[("state", "online")]), 1.0);
    assert_eq!(last_success(&c, good, "sample"), 0.0, "never dumped: 0");
    assert_eq!(last_success(&c, bad, "no_such_database"), 0.0);
    assert_eq!(
        c.get(
            "pgsnapman_task_lease_wait_seconds_count",
            &[("kind", "dump")]
        ),
        None
    );

    // One failed dump, then one good one.
    let run = stack
        .cli
        .run(&["dump", "now", &bad.to_string(), "--wait"])
        .unwrap();
    assert_eq!(run.code, 1, "the dump of a missing database fails: {run:?}");
    let before_good = chrono::Utc::now().timestamp();
    let run = stack
        .cli
        .run(&["dump", "now", &good.to_string(), "--wait"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    let rows = catalog_of_job(&stack.cli, good);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let dump: Value = stack
        .cli
        .json(&["catalog", "show", &id_of(&rows[0]).to_string()])
        .unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(dump["finished_at"].as_str().unwrap())
        .expect("finished_at")
        .timestamp();
    assert!(finished >= before_good - 1, "{dump}");

    // After: exactly one of each, as docs/metrics.md says.
    let w = Samples::parse(&scrape(worker_port).await);
    assert_eq!(w.value("pgsnapman_dumps_total", &OK), 1.0);
    assert_eq!(w.value("pgsnapman_dumps_total", &FAILED), 1.0);
    assert_eq!(w.value("pgsnapman_dump_duration_seconds_count", &OK), 1.0);
    assert_eq!(
        w.value("pgsnapman_dump_duration_seconds_count", &FAILED),
        1.0
    );
    let inf = [("type", "full"), ("status", "succeeded"), ("le", "+Inf")];
    assert_eq!(w.value("pgsnapman_dump_duration_seconds_bucket", &inf), 1.0);
    let full = [("type", "full")];
    assert_eq!(
        w.value("pgsnapman_dump_output_bytes_total", &full),
        dump["dump_bytes"].as_f64().unwrap()
    );
    assert_eq!(
        w.value("pgsnapman_dump_stored_bytes_total", &full),
        dump["stored_bytes"].as_f64().unwrap()
    );
    assert_eq!(
        w.value(
            "pgsnapman_task_start_delay_seconds_count",
            &[("kind", "dump")]
        ),
        2.0
    );
    assert!(w.get("pgsnapman_outbox_events", &[]).is_some());
    assert!(
        w.get("pgsnapman_outbox_oldest_event_age_seconds", &[])
            .is_some()
    );

    let c = Samples::parse(&scrape(coordinator_port).await);
    assert_eq!(
        c.value("pgsnapman_catalog_dumps", &[("status", "succeeded")]),
        1.0
    );
    assert_eq!(
        c.value("pgsnapman_catalog_dumps", &[("status", "failed")]),
        1.0
    );
    assert_eq!(
        c.value(
            "pgsnapman_task_lease_wait_seconds_count",
            &[("kind", "dump")]
        ),
        2.0
    );
    assert_eq!(last_success(&c, good, "sample"), finished as f64);
    assert_eq!(
        last_success(&c, bad, "no_such_database"),
        0.0,
        "a failure is no success"
    );

    // Off by default: a worker and a coordinator without [metrics] listen
    // open no other port.
    register_worker(&stack.cli, "w-plain");
    let mut plain = Worker::start(WorkerOptions {
        name: "w-plain".into(),
        coordinator: stack.coordinator.access(),
        ..Default::default()
    })
    .expect("start a worker");
    stack.coordinator.wait_worker_connected("w-plain").await;
    assert_eq!(
        listening_ports(plain.process.pid().expect("pid")),
        Vec::<u16>::new()
    );
    plain.process.stop_clean().await;
    plain.process.assert_no_unexpected_errors(&[]);
    let mut second = Coordinator::start(CoordinatorOptions {
        catalog_url: Some(stack._catalog.url("postgres")),
        ..Default::default()
    })
    .await
    .expect("start a second coordinator");
    let second_port: u16 = second.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        listening_ports(second.process.pid().expect("pid")),
        vec![second_port]
    );
    second.process.stop_clean().await;
    second.process.assert_no_unexpected_errors(&[]);

    // A stopped catalog: the scrape answers in time, catalog_up 0, and
    // none of the catalog's figures.
    stack._catalog.stop().unwrap();
    let text = tokio::time::timeout(Duration::from_secs(30), scrape(coordinator_port))
        .await
        .expect("a scrape with the catalog down must not hang");
    let c = Samples::parse(&text);
    assert_eq!(c.value("pgsnapman_catalog_up", &[]), 0.0);
    assert!(
        !text.contains("pgsnapman_job_last_success_timestamp_seconds{"),
        "{text}"
    );
    // The worker's endpoint does not depend on the catalog.
    let w = Samples::parse(&scrape(worker_port).await);
    assert_eq!(w.value("pgsnapman_dumps_total", &OK), 1.0);
    stack._catalog.start_again().unwrap();

    stack.stop_clean(&[]).await;
}
