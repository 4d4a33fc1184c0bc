//! The web dashboard in plain HTTP (docs/dashboard.md) on two real
//! coordinators sharing one catalog, spoken to with raw HTTP/1.1: a session
//! opened through one works through the other and after a restart, is
//! bounded by `dashboard.max_sessions` across both, ends with a revoked
//! token or a log-out, and lives in the catalog as a hash only; cookies
//! carry no `Secure` flag; a remote plaintext listener is refused at start.
//! Also the pages the Chromium test does not drive: the jobs page in the
//! worker's time zone, the restore and copy jobs page, and the databases
//! of the last discovery list that have no job (`--discover report`).
use std::io::{Read, Write};
use std::time::Duration;

use pgsnapman_tests::{Coordinator, CoordinatorOptions, PgCluster, Worker, WorkerOptions, wait};

use crate::common::*;

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The body with minijinja's HTML escapes undone (to find values).
    fn text(&self) -> String {
        self.body
            .replace("&#x2f;", "/")
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    /// The session id of a `Set-Cookie`.
    fn cookie(&self) -> String {
        let set = self.header("set-cookie").expect("a Set-Cookie header");
        let (pair, _) = set.split_once(';').expect("cookie attributes");
        pair.strip_prefix("pgsnapman_session=")
            .expect("the session cookie")
            .to_string()
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field");
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end of the value")].to_string()
    }
}

/// Percent-encodes a form value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends one request (a form when `form` is not empty) and reads the answer.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> Answer {
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let body = body.join("&");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: pgsnapman_session={c}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the dashboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    stream.write_all(req.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn login(addr: &str, token: &str) -> Answer {
    http(addr, "POST", "/login", None, &[("token", token)])
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn token(cli: &pgsnapman_tests::Pgsnap, name: &str, role: &str) -> String {
    let created = cli
        .json(&["token", "create", name, "--role", role])
        .expect("create a token");
    created["secret"].as_str().expect("a secret").to_string()
}

/// A plaintext coordinator on `catalog` with its dashboard on `dash`.
fn plain(
    catalog: &PgCluster,
    dash: &str,
    listen: &str,
    extra: &[(&str, &str)],
) -> CoordinatorOptions {
    let mut env = vec![("PGSNAPMAN_DASHBOARD__LISTEN".to_string(), dash.to_string())];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        listen: Some(listen.to_string()),
        plaintext: true,
        env,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_live_in_the_catalog_over_plain_http() {
    let catalog = PgCluster::start(PG_MAJOR).expect("start the catalog cluster");
    let dash_a = format!("127.0.0.1:{}", free_port());
    let dash_b = format!("127.0.0.1:{}", free_port());
    let opts_a = plain(
        &catalog,
        &dash_a,
        &format!("127.0.0.1:{}", free_port()),
        &[],
    );
    let mut a = Coordinator::start(opts_a.clone()).await.expect("start A");
    // B allows two sessions on the catalog, whoever opened them.
    let mut b = Coordinator::start(plain(
        &catalog,
        &dash_b,
        "127.0.0.1:0",
        &[("PGSNAPMAN_DASHBOARD__MAX_SESSIONS", "2")],
    ))
    .await
    .expect("start B");
    let cli = a.cli();
    let operator = token(&cli, "dash-operator", "operator");
    let viewer = token(&cli, "viewer", "viewer");

    // Plain HTTP: the cookie has no Secure flag.
    let logged = login(&dash_a, &operator);
    assert_eq!(logged.status, 303, "{logged:?}");
    let set = logged.header("set-cookie").unwrap_or_default();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"),
        "{set}"
    );
    let cookie = logged.cookie();

    // The session works through the other coordinator, with its CSRF token.
    let page_a = http(&dash_a, "GET", "/jobs", Some(&cookie), &[]);
    let page_b = http(&dash_b, "GET", "/jobs", Some(&cookie), &[]);
    assert_eq!(page_b.status, 200, "{page_b:?}");
    assert!(
        page_b.body.contains("data-role=\"operator\""),
        "{}",
        page_b.body
    );
    assert!(
        page_b.body.contains("dash-operator (operator)"),
        "{}",
        page_b.body
    );
    assert_eq!(page_a.csrf(), page_b.csrf(), "one session, one CSRF token");

    // Only the id's SHA-256 is in the catalog, never the id.
    let stored = catalog
        .query(
            "postgres",
            &format!(
                "SELECT count(*) FILTER (WHERE id_sha256 = sha256(convert_to('{cookie}', 'UTF8'))), \
                 count(*) FILTER (WHERE position('{cookie}' IN s::text) > 0) \
                 FROM dashboard_sessions s"
            ),
        )
        .expect("read the sessions");
    assert_eq!(stored.trim(), "1|0", "hash stored, id not: {stored}");

    // A restart of A keeps the session.
    a.process.stop_clean().await;
    a.process.assert_no_unexpected_errors(&[]);
    let mut a = Coordinator::start(opts_a.clone())
        .await
        .expect("start A again");
    let after_restart = http(&dash_a, "GET", "/", Some(&cookie), &[]);
    assert_eq!(after_restart.status, 200, "{after_restart:?}");

    // max_sessions counts every coordinator's sessions: B (2) is full at the
    // second login from anywhere.
    let second = login(&dash_a, &viewer);
    assert_eq!(second.status, 303, "{second:?}");
    let viewer_cookie = second.cookie();
    let third = login(&dash_b, &viewer);
    assert_eq!(third.status, 503, "{third:?}");
    assert!(
        third
            .body
            .contains("2 dashboard sessions are open (dashboard.max_sessions)"),
        "{}",
        third.body
    );

    // A revoked token's session is refused at its next request, on both.
    let revoked = cli
        .run(&["token", "revoke", "viewer"])
        .expect("revoke the viewer token");
    assert!(revoked.success(), "{revoked:?}");
    for dash in [&dash_b, &dash_a] {
        let refused = http(dash, "GET", "/jobs", Some(&viewer_cookie), &[]);
        assert_eq!(refused.status, 303, "{refused:?}");
        assert_eq!(refused.header("location").as_deref(), Some("/login"));
    }
    // Log out through B ends the session on A too; a slot is free again.
    let page = http(&dash_b, "GET", "/", Some(&cookie), &[]);
    let out = http(
        &dash_b,
        "POST",
        "/logout",
        Some(&cookie),
        &[("csrf", &page.csrf())],
    );
    assert_eq!(out.status, 303, "{out:?}");
    let gone = http(&dash_a, "GET", "/", Some(&cookie), &[]);
    assert_eq!(
        gone.header("location").as_deref(),
        Some("/login"),
        "{gone:?}"
    );
    let left = catalog
        .query("postgres", "SELECT count(*) FROM dashboard_sessions")
        .expect("count the sessions");
    assert_eq!(left.trim(), "0", "revoked and logged-out sessions deleted");

    // Plain HTTP off loopback is refused at start, in one line.
    let remote = format!("0.0.0.0:{}", free_port());
    let err = match Coordinator::start(plain(&catalog, &remote, "127.0.0.1:0", &[])).await {
        Ok(_) => panic!("a remote plaintext dashboard started"),
        Err(e) => format!("{e:#}"),
    };
    let line = err
        .lines()
        .find(|l| l.starts_with("pgsnapman-coordinator: dashboard.listen"))
        .unwrap_or_else(|| panic!("no refusal line in: {err}"));
    assert!(
        line.contains(&remote) && line.contains("dashboard.allow_remote_plaintext"),
        "{line}"
    );

    pages_in_the_workers_zone(&a, &dash_a, &cli, &operator).await;
    restore_jobs_page_at_scale(&catalog, &dash_a, &operator);

    b.process.stop_clean().await;
    a.process.stop_clean().await;
    b.process.assert_no_unexpected_errors(&[]);
    a.process.assert_no_unexpected_errors(&[]);
}

/// 100,000 restore jobs: the page is a keyset read of `restore_jobs_pkey`
/// (the plan is checked, no time asserted).
fn restore_jobs_page_at_scale(catalog: &PgCluster, dash: &str, operator: &str) {
    catalog
        .script(
            "postgres",
            "INSERT INTO restore_jobs (source_dump_id, target_instance_id, target_database, \
               restore_type, existing_database, kind, status) \
             SELECT 1, (SELECT min(id) FROM instances), 'bulk_' || g, 'FULL', 'LEAVE', \
               'SINGLE', 'HALTED' FROM generate_series(1, 100000) g; \
             ANALYZE restore_jobs;",
        )
        .expect("add 100,000 restore jobs");
    let cookie = login(dash, operator).cookie();
    let middle = http(dash, "GET", "/restore-jobs?after=50000", Some(&cookie), &[]);
    assert_eq!(middle.status, 200, "{middle:?}");
    assert_eq!(middle.body.matches("<tr class=\"restore-job").count(), 50);
    assert!(middle.body.contains("id=\"next\""), "a next page");
    let query = pgsnapman_coordinator::catalog::dashboard::restore_jobs_query();
    let plan = catalog
        .query(
            "postgres",
            &format!("PREPARE page AS {query}; EXPLAIN EXECUTE page(50000, 51)"),
        )
        .expect("explain the page");
    eprintln!("{plan}");
    assert!(plan.contains("restore_jobs_pkey"), "{plan}");
}

/// A worker in Asia/Tokyo: the jobs page reads its crons there; a copy job
/// and its run on the restore jobs page; a database of a report-only
/// discovery list on the "not backed up" page.
async fn pages_in_the_workers_zone(
    coordinator: &Coordinator,
    dash: &str,
    cli: &pgsnapman_tests::Pgsnap,
    operator: &str,
) {
    register_worker(cli, "w-tokyo");
    let mut worker = Worker::start(WorkerOptions {
        name: "w-tokyo".into(),
        coordinator: coordinator.access(),
        data_dir: None,
        env: vec![("PGSNAPMAN_SCHEDULER__TIMEZONE".into(), "Asia/Tokyo".into())],
    })
    .expect("start the worker");
    coordinator.wait_worker_connected("w-tokyo").await;
    let source = PgCluster::start(PG_MAJOR).expect("start the source cluster");
    source.create_database("app").expect("create app");
    source
        .script(
            "app",
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10) g;",
        )
        .expect("fill app");
    source
        .create_database("unlisted \"yet\" ü")
        .expect("create a database");
    let owned = instance_add_args("src", source.port, "w-tokyo");
    let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
    args.extend(["--auto-discover", "--discover", "report"]);
    let instance = id_of(&cli.json(&args).expect("add the instance"));
    let added = cli
        .json(&[
            "copy",
            "add",
            "--instance",
            &instance.to_string(),
            "--database",
            "app",
            "--cron",
            "0 3 * * *",
            "--to",
            &format!("{instance}:app_copy"),
        ])
        .expect("add a copy");
    let job = added["dump_job"]["id"]
        .as_i64()
        .expect("the copy's dump job");
    let copy = added["restore_jobs"][0]["id"]
        .as_i64()
        .expect("its restore job");

    let cookie = login(dash, operator).cookie();
    // The jobs page: next fire at 03:00 Tokyo time, the zone named.
    let jobs = wait::until(
        "the worker's time zone on the jobs page",
        Duration::from_secs(30),
        || async {
            let page = http(dash, "GET", "/jobs", Some(&cookie), &[]);
            page.text()
                .contains("data-zone=\"Asia/Tokyo\"")
                .then_some(page)
        },
    )
    .await;
    assert!(jobs.body.contains(" 03:00 JST"), "{}", jobs.body);

    // The copy: its source, the source's last dump, the run with its log.
    let task = dump_now(cli, job);
    assert_eq!(wait_task_done(cli, task).await["state"], "SUCCEEDED");
    let run = cli
        .run(&["restore", "run", &copy.to_string(), "--wait"])
        .expect("run the copy");
    assert_eq!(run.code, 0, "{run:?}");
    let page = http(dash, "GET", "/restore-jobs", Some(&cookie), &[]);
    assert_eq!(page.status, 200, "{page:?}");
    let row = page
        .body
        .split("<tr class=\"restore-job copy\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no copy row: {}", page.body));
    assert!(
        row.contains(&format!("href=\"/catalog?job={job}\"")),
        "{row}"
    );
    assert!(
        row.contains("app_copy") && row.contains("SUCCEEDED"),
        "{row}"
    );
    let log_link = row
        .split("href=\"/restores/")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no link to the run's log: {row}"));
    let log = http(
        dash,
        "GET",
        &format!("/restores/{log_link}"),
        Some(&cookie),
        &[],
    );
    assert_eq!(log.status, 200, "{log:?}");
    assert!(log.body.contains("id=\"log\""), "{}", log.body);
    let bad = http(
        dash,
        "GET",
        "/restore-jobs?after=%3Cb%3E",
        Some(&cookie),
        &[],
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("&lt;b&gt;"), "{}", bad.body);

    // Report-only discovery: the listed databases without a job are shown,
    // and no job was added for them.
    let unprotected = wait::until(
        "the discovered databases",
        Duration::from_secs(60),
        || async {
            let page = http(dash, "GET", "/unprotected", Some(&cookie), &[]);
            page.text().contains("unlisted \"yet\" ü").then_some(page)
        },
    )
    .await;
    assert!(
        unprotected.body.contains("discovered, no job"),
        "{}",
        unprotected.body
    );
    let jobs = cli.json(&["job", "list"]).expect("list jobs");
    assert_eq!(
        jobs.as_array().map_or(0, Vec::len),
        1,
        "report-only discovery adds no job: {jobs}"
    );
    assert!(
        !unprotected.body.contains("<td>app</td>"),
        "app has its job: {}",
        unprotected.body
    );

    worker.process.stop_clean().await;
    worker.process.assert_no_unexpected_errors(&[]);
}
