//! The coordinator as grpcurl and other gRPC tooling see it, through an
//! independent implementation (Python grpcio, tests/python/grpc_client.py):
//! the health service answers without a token and follows the catalog
//! (SERVING, NOT_SERVING while it is down, SERVING again); reflection lists
//! and describes the services for a viewer token, refuses without one; a
//! pgsnapman.v1 method is called with its types found through reflection.
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use pgsnapman_tests::{Coordinator, CoordinatorOptions, PgCluster, wait};
use serde_json::Value;

use crate::common::*;

/// Runs the Python client against `coordinator` with `token` (or none) and
/// returns its JSON output; exit status 3 (a gRPC error) is output too.
fn python(coordinator: &Coordinator, token: Option<&str>, args: &[&str]) -> Value {
    let python = test_python();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/grpc_client.py");
    let ca = coordinator.ca_file.as_ref().expect("a TLS coordinator");
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--target", &coordinator.addr, "--ca"])
        .arg(ca);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    let out = cmd.args(args).output().expect("run the Python client");
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 3)),
        "python client {args:?}: {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python client {args:?} printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

async fn wait_health(coordinator: &Coordinator, want: &str) {
    wait::until(
        &format!("health {want}"),
        Duration::from_secs(30),
        || async {
            let v = python(coordinator, None, &["health"]);
            (v["status"] == want).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_for_standard_grpc_tooling() {
    let mut catalog = PgCluster::start(PG_MAJOR).unwrap();
    let mut coordinator = Coordinator::start(CoordinatorOptions {
        catalog_url: Some(catalog.url("postgres")),
        env: vec![("PGSNAPMAN_SERVER__HEALTH_INTERVAL".into(), "200ms".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let cli = coordinator.cli();
    register_worker(&cli, "w-grpc");
    let viewer = cli
        .json(&["token", "create", "grpc-viewer", "--role", "viewer"])
        .unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();

    // Health: no token needed; every service named.
    for service in [
        "",
        "pgsnapman.v1.AdminService",
        "pgsnapman.v1.WorkerService",
    ] {
        let v = python(&coordinator, None, &["health", service]);
        assert_eq!(v["status"], "SERVING", "{service:?}: {v}");
    }
    let v = python(&coordinator, None, &["health", "no.such.Service"]);
    assert_eq!(v["code"], "NOT_FOUND", "{v}");

    // Reflection: a viewer lists and describes; without a token, refused.
    let v = python(&coordinator, Some(&viewer), &["list"]);
    let services: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for s in [
        "pgsnapman.v1.AdminService",
        "pgsnapman.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&s), "{s} not in {services:?}");
    }
    let v = python(&coordinator, None, &["list"]);
    assert_eq!(v["code"], "UNAUTHENTICATED", "{v}");
    let v = python(
        &coordinator,
        Some(&viewer),
        &["describe", "pgsnapman.v1.AdminService"],
    );
    let methods = v["methods"].as_array().unwrap();
    let described: Vec<&str> = methods.iter().filter_map(|m| m["name"].as_str()).collect();
    let contract = pgsnapman_proto::reflect::admin_methods();
    assert_eq!(described.len(), contract.len(), "{described:?}");
    let watch = methods.iter().find(|m| m["name"] == "WatchTask").unwrap();
    assert_eq!(watch["server_streaming"], true, "{watch}");

    // A pgsnapman.v1 call with types from reflection; roles still hold.
    let v = python(
        &coordinator,
        Some(&viewer),
        &["call", "pgsnapman.v1.AdminService/ListWorkers", "{}"],
    );
    assert_eq!(v["workers"][0]["name"], "w-grpc", "{v}");
    let v = python(
        &coordinator,
        Some(&viewer),
        &[
            "call",
            "pgsnapman.v1.AdminService/RegisterWorker",
            r#"{"name": "w-refused"}"#,
        ],
    );
    assert_eq!(v["code"], "PERMISSION_DENIED", "{v}");

    // Health follows the catalog.
    catalog.stop().unwrap();
    wait_health(&coordinator, "NOT_SERVING").await;
    let v = python(&coordinator, None, &["health", "pgsnapman.v1.AdminService"]);
    assert_eq!(v["status"], "NOT_SERVING", "{v}");
    catalog.start_again().unwrap();
    wait_health(&coordinator, "SERVING").await;

    coordinator.process.stop_clean().await;
    coordinator
        .process
        .assert_no_unexpected_errors(&["the catalog does not answer"]);
}
