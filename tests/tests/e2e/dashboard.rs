//! The web dashboard (docs/dashboard.md) on the real coordinator and worker,
//! under TLS and tokens, driven by headless Chromium (Debian's chromium and
//! chromedriver, deploy/chromium.sh) through tests/python/dashboard_browser.py:
//! log in, see a failed and a successful dump, dump now and see it finish,
//! odd names shown as text; a viewer sees no action; forged POSTs get 403;
//! a page of a 100,000-row catalog. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/dashboard-e2e/`.
use std::process::Command;

use pgsnapman_coordinator::catalog::dashboard::{DUMPS, MESSAGES};
use serde_json::{Value, json};

use crate::common::*;

/// A database name that must render as text.
const ODD: &str = "no \"such\" <b>db</b> ü";

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs the driver script in `mode`; what it saw.
fn drive(mode: &str, cfg: &Value) -> Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/dashboard_browser.py");
    let out = Command::new(test_python())
        .arg(script)
        .arg(mode)
        .arg(cfg.to_string())
        .output()
        .expect("run the dashboard driver");
    assert!(
        out.status.success(),
        "dashboard driver ({mode}) failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("the driver's JSON")
}

fn token(stack: &Stack, name: &str, role: &str) -> String {
    let created = stack
        .cli
        .json(&["token", "create", name, "--role", role])
        .expect("create a token");
    created["secret"].as_str().expect("a secret").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sees_dumps_acts_as_operator_and_refuses_forgeries() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let coordinator_env = [("PGSNAPMAN_DASHBOARD__LISTEN", listen.as_str())];
    let stack = Stack::start_configured("w-dash", &[], None, &coordinator_env).await;
    stack.source.create_database("sample").unwrap();
    stack
        .source
        .script(
            "sample",
            "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g;",
        )
        .unwrap();
    let instance = add_instance(&stack.cli, "src", stack.source.port, "w-dash", None);
    let good = add_job(&stack.cli, instance, "sample");
    let bad = add_job(&stack.cli, instance, ODD);
    let run = stack
        .cli
        .run(&["dump", "now", &bad.to_string(), "--wait"])
        .unwrap();
    assert_eq!(run.code, 1, "the dump of a missing database fails: {run:?}");
    let first = dump_now(&stack.cli, good);
    assert_eq!(
        wait_task_done(&stack.cli, first).await["state"],
        "SUCCEEDED"
    );
    let dumps_before = catalog_of_job(&stack.cli, good).len();

    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-e2e");
    std::fs::create_dir_all(&out).expect("create the screenshot directory");
    let cfg = json!({
        "url": format!("https://{listen}"),
        "operator": token(&stack, "dash-op", "operator"),
        "viewer": token(&stack, "dash-viewer", "viewer"),
        "good_job": good,
        "bad_job": bad,
        "out": out,
        "chromium": env_or("PGSNAPMAN_CHROMIUM", "/usr/bin/chromium"),
        "chromedriver": env_or("PGSNAPMAN_CHROMEDRIVER", "/usr/bin/chromedriver"),
    });

    let seen = drive("browser", &cfg);
    assert_eq!(seen["unauthenticated_lands_on"], "/login", "{seen}");
    let bad_login = seen["bad_token_error"].to_string();
    assert!(bad_login.contains("unknown token"), "{bad_login}");
    assert_eq!(seen["operator_role"], "operator");
    assert_eq!(seen["catalog_statuses"], json!(["FAILED", "SUCCEEDED"]));
    assert_eq!(
        seen["stale_jobs"],
        json!([bad]),
        "only the failing job is red"
    );
    let jobs = seen["jobs_text"].as_str().unwrap_or_default();
    assert!(jobs.contains(ODD), "the odd name is shown as text: {jobs}");
    assert_eq!(seen["injected_elements"], 0);
    assert_eq!(seen["operator_actions_on_jobs"], 2, "one Dump now per job");
    assert!(
        seen["after_dump_now"]
            .as_str()
            .is_some_and(|p| p.starts_with("/tasks/")),
        "{seen}"
    );
    assert_eq!(seen["task_state"], "SUCCEEDED");
    assert_eq!(seen["new_dump_status"], "SUCCEEDED");
    assert_eq!(seen["operator_actions_on_dump"], 2, "verify and restore");
    for page in [
        "/",
        "/restores",
        "/restore-jobs",
        "/unprotected",
        "/messages?level=ERROR",
    ] {
        let p = &seen[format!("page {page}")];
        assert_eq!(p["error"], json!([]), "{page}: {p}");
    }
    let fleet = seen["page /"]["text"].as_str().unwrap_or_default();
    assert!(
        fleet.contains("w-dash") && fleet.contains("online"),
        "{fleet}"
    );
    let errors = seen["page /messages?level=ERROR"]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(errors.contains(ODD), "the failed dump's message: {errors}");
    assert_eq!(seen["verify_state"], "SUCCEEDED", "{seen}");
    let unconfirmed = seen["drop_unconfirmed"].to_string();
    assert!(unconfirmed.contains("type its name again"), "{unconfirmed}");
    let confirmed = seen["drop_confirmed"].to_string();
    assert!(
        confirmed.contains("policy EXISTING_DATABASE_DROP needs admin"),
        "{confirmed}"
    );
    assert_eq!(seen["restore_state"], "SUCCEEDED", "{seen}");
    let copied = stack
        .source
        .query("sample_copy", "SELECT count(*) FROM t")
        .expect("the restored copy");
    assert_eq!(copied.trim(), "1000");
    assert_eq!(seen["after_logout"], "/login");
    assert_eq!(seen["viewer_role"], "viewer");
    assert_eq!(seen["viewer_actions_on_jobs"], 0);
    assert_eq!(seen["viewer_post_forms_on_jobs"], 0);
    assert_eq!(seen["viewer_actions_on_dump"], 0);
    assert_eq!(
        catalog_of_job(&stack.cli, good).len(),
        dumps_before + 1,
        "the browser's dump is in the catalog"
    );

    let forged = drive("forge", &cfg);
    assert_eq!(forged["no_session"], 403, "{forged}");
    assert_eq!(forged["operator_login"], 303, "{forged}");
    assert_eq!(forged["operator_no_csrf"], 403, "{forged}");
    assert_eq!(forged["operator_wrong_csrf"], 403, "{forged}");
    assert_eq!(forged["viewer_login"], 303, "{forged}");
    assert_eq!(forged["viewer_with_csrf"], 403, "{forged}");
    assert!(
        forged["viewer_refusal"]
            .to_string()
            .contains("DumpNow needs operator"),
        "{forged}"
    );
    assert_eq!(forged["oversized_form"], 413, "{forged}");
    assert_eq!(forged["cross_origin_login"], 403, "{forged}");
    assert_eq!(forged["cross_origin_action"], 403, "{forged}");
    assert_eq!(
        forged["guess_statuses"],
        json!([401, 429]),
        "guessing tokens is limited per address: {forged}"
    );
    // The guesses spent this address's bucket of failed authentications,
    // which the gRPC listener shares (5/s): the CLI from the same address
    // is let in again once it refills.
    let listed = pgsnapman_tests::wait::until(
        "the address's failed-authentication bucket to refill",
        std::time::Duration::from_secs(30),
        || async {
            stack
                .cli
                .json(&["catalog", "list", "--job", &good.to_string()])
                .ok()
        },
    )
    .await;
    assert_eq!(
        listed.as_array().map_or(0, Vec::len),
        dumps_before + 1,
        "no forged POST queued a dump"
    );
    let audit = stack
        .cli
        .json(&["audit", "list", "--method", "DumpNow", "--failed"])
        .expect("the audit");
    let refused = audit.as_array().map_or(0, Vec::len);
    assert_eq!(refused, 3, "the three forged POSTs with a session: {audit}");
    let logins = stack
        .cli
        .json(&["audit", "list", "--method", "DashboardLogin", "--failed"])
        .expect("the audit");
    let refused_logins = logins.as_array().map_or(0, Vec::len);
    let expected = 1 + forged["guesses_refused"].as_u64().unwrap_or(0);
    assert_eq!(
        refused_logins as u64, expected,
        "refused logins are audited, rate-limited ones not: {logins}"
    );

    // 100,000 catalog rows and messages: pages still come (timed, not asserted).
    stack
        ._catalog
        .script(
            "postgres",
            "INSERT INTO dumps (dump_uuid, job_id, worker_id, instance_id, host, port, database, \
               dump_type, format, status, started_at, finished_at, dump_bytes, stored_bytes) \
             SELECT gen_random_uuid(), 1000000 + g % 500, (SELECT min(id) FROM workers), 1, 'h', 5432, \
               'bulk_' || g, 'FULL', 'CUSTOM', CASE WHEN g % 10 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END, \
               now() - g * interval '1 minute', now() - g * interval '1 minute' + interval '5 s', \
               1000, 100 FROM generate_series(1, 100000) g; \
             INSERT INTO messages (level, class, text) \
             SELECT 2, 'BULK', 'bulk message ' || g FROM generate_series(1, 100000) g; \
             ANALYZE dumps; ANALYZE messages;",
        )
        .unwrap();
    let scaled = drive("scale", &cfg);
    assert_eq!(scaled["login"], 303, "{scaled}");
    eprintln!("dashboard pages over 100,000 catalog rows: {scaled}");
    for page in ["catalog_first", "catalog_middle", "messages_first"] {
        assert_eq!(scaled[page]["status"], 200, "{page}: {scaled}");
        assert_eq!(scaled[page]["rows"], 50, "{page}: a full page: {scaled}");
    }
    assert_eq!(scaled["messages_errors"]["status"], 200, "{scaled}");
    assert_eq!(scaled["jobs"]["status"], 200, "{scaled}");
    // Filters and bad input (escaped in the answer, named in the error).
    for (page, rows) in [
        ("messages_worker", 1),
        ("messages_other_worker", 0),
        ("messages_job", 1),
        ("messages_other_job", 0),
    ] {
        assert_eq!(scaled[page]["rows"], rows, "{page}: {scaled}");
    }
    for (page, status, texts) in [
        ("bad_level", 400, ["LOUD", "is not one of DEBUG"]),
        ("bad_before", 400, ["&lt;b&gt;", "is not a positive number"]),
        ("missing_dump", 404, ["999999999", ""]),
    ] {
        assert_eq!(scaled[page]["status"], status, "{page}: {scaled}");
        let error = scaled[page]["error"].to_string();
        assert!(texts.iter().all(|t| error.contains(t)), "{page}: {error}");
    }
    // The pages read an index from the newest row down, whatever the size.
    for (query, args, index) in [
        (DUMPS, "9223372036854775807, 51, NULL", "dumps_pkey"),
        (
            MESSAGES,
            "9223372036854775807, 51, 1, NULL, NULL",
            "messages_pkey",
        ),
    ] {
        let plan = stack
            ._catalog
            .query(
                "postgres",
                &format!("PREPARE page AS {query}; EXPLAIN EXECUTE page({args})"),
            )
            .expect("explain a page");
        eprintln!("{plan}");
        assert!(plan.contains(index), "{plan}");
    }

    stack.stop_clean(&[]).await;
}
