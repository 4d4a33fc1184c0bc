//! `pgsnap token …`, `pgsnap audit list` and how pgsnap finds its token,
//! through the real binary.
use std::os::unix::fs::PermissionsExt;

use pgsnapman_proto::v1;
use pgsnapman_tests::Pgsnap;
use prost::Message;

use super::{Setup, generous_limits};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_the_audit_through_pgsnap() {
    let s = Setup::start(generous_limits()).await;
    let admin = s.coordinator.cli();

    // The bootstrap token: 0600, well formed, never in the log.
    let file = s.coordinator.data_dir.join("admin.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bootstrap = s.coordinator.token.clone().unwrap();
    assert!(
        bootstrap.starts_with("psm_") && bootstrap.len() == 47,
        "{bootstrap}"
    );

    // Create: the secret once, in JSON too.
    let created = admin
        .json(&[
            "token",
            "create",
            "ops",
            "--role",
            "operator",
            "--expires",
            "90d",
        ])
        .unwrap();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("psm_"), "{created}");
    assert_eq!(created["role"], "OPERATOR");
    assert!(created["expires_at"].is_string(), "{created}");
    assert_eq!(created["created_by"], "bootstrap-admin");
    let table = admin
        .run(&["token", "create", "viewer1", "--role", "viewer"])
        .unwrap();
    assert!(table.success(), "{table:?}");
    let viewer_secret = table.stdout.lines().last().unwrap().trim().to_string();
    assert!(viewer_secret.starts_with("psm_"), "{table:?}");

    // List: never a secret.
    let list = admin.run(&["--output", "json", "token", "list"]).unwrap();
    assert!(list.success(), "{list:?}");
    assert!(!list.stdout.contains("psm_"), "{}", list.stdout);
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&list.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["bootstrap-admin", "ops", "viewer1"]);

    // A token file: refused when others may read it, used when 0600.
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("ops.token");
    std::fs::write(&tf, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ops = Pgsnap::new(s.coordinator.access().with_token(None));
    let tf_arg = tf.to_string_lossy().into_owned();
    let run = ops
        .run(&["--token-file", &tf_arg, "worker", "list"])
        .unwrap();
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("readable by group or others") && run.stderr.lines().count() == 1,
        "{run:?}"
    );
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = ops
        .run(&["--token-file", &tf_arg, "worker", "list"])
        .unwrap();
    assert!(run.success(), "{run:?}");
    // The env variable names the file too.
    let run = ops
        .command(&["worker", "list"])
        .env("PGSNAPMAN_TOKEN_FILE", &tf)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");

    // The operator may not register workers; no token, nothing at all.
    let run = ops
        .run(&["--token-file", &tf_arg, "worker", "register", "w1"])
        .unwrap();
    assert_ne!(run.code, 0);
    assert_eq!(
        run.stderr.trim(),
        "pgsnap: refused by the coordinator: token ops has the operator role; RegisterWorker needs admin"
    );
    let run = ops.run(&["worker", "list"]).unwrap();
    assert!(run.stderr.contains("no credential"), "{run:?}");
    let viewer = Pgsnap::new(s.coordinator.access().with_token(Some(viewer_secret)));
    let run = viewer.run(&["audit", "list"]).unwrap();
    assert!(run.stderr.contains("ListAudit needs admin"), "{run:?}");

    // No password reaches the audit: neither one sent in clear (which the
    // coordinator refuses) nor a sealed copy.
    register_worker(&admin, "w-audit");
    let add = v1::AddInstanceRequest {
        name: "audited".into(),
        host: "127.0.0.1".into(),
        port: 5432,
        user: "postgres".into(),
        password: Some("hunter2-audit-secret".into()),
        sealed_passwords: vec![v1::SealedPassword {
            worker: Some(v1::WorkerRef {
                r#ref: Some(v1::worker_ref::Ref::Name("w-audit".into())),
            }),
            ciphertext: b"hunter2-sealed-copy".repeat(4),
            key_fingerprint: "hunter2-fingerprint".into(),
        }],
        ..Default::default()
    };
    let err = s
        .raw
        .unary(
            "/pgsnapman.v1.AdminService/AddInstance",
            add.encode_to_vec(),
            Some(&s.admin_bearer()),
        )
        .await
        .unwrap_err();
    assert!(!err.message().contains("hunter2"), "{err:?}");
    let rows = admin
        .json(&["audit", "list", "--method", "AddInstance"])
        .unwrap();
    let row = &rows[0];
    assert_eq!(row["actor"], "bootstrap-admin");
    assert_eq!(row["ok"], false);
    assert_eq!(row["args"]["password"], "<redacted>", "{row}");
    assert_eq!(row["args"]["sealed_passwords"], "<redacted>", "{row}");
    assert_eq!(row["args"]["name"], "audited");
    assert_eq!(
        s.count("SELECT count(*) FROM audit_log WHERE args::text LIKE '%hunter2%' OR detail LIKE '%hunter2%'"),
        0
    );
    assert_eq!(
        s.count("SELECT count(*) FROM audit_log WHERE args::text LIKE '%aHVudGVyM%'"),
        0,
        "the base64 of a ciphertext is in the audit"
    );

    // Filters.
    let failed = admin
        .json(&["audit", "list", "--failed", "--actor", "ops"])
        .unwrap();
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["method"], "RegisterWorker");
    assert_eq!(failed[0]["args"]["name"], "w1");
    assert!(
        failed[0]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let none = admin.json(&["audit", "list", "--until", "1d"]).unwrap();
    assert_eq!(none.as_array().unwrap().len(), 0);
    let recent = admin
        .json(&["audit", "list", "--since", "1h", "--limit", "2"])
        .unwrap();
    assert_eq!(recent.as_array().unwrap().len(), 2);
    let run = admin
        .run(&["audit", "list", "--since", "1h", "--until", "2h"])
        .unwrap();
    assert!(
        run.stderr.contains("--since must be before --until"),
        "{run:?}"
    );

    // Revocation is effective at once.
    let revoked = admin.json(&["token", "revoke", "ops"]).unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let run = ops
        .run(&["--token-file", &tf_arg, "worker", "list"])
        .unwrap();
    assert!(run.stderr.contains("token ops was revoked"), "{run:?}");

    // No token in the coordinator's log.
    let log = std::fs::read_to_string(s.coordinator.process.log_path()).unwrap();
    for t in [&bootstrap, &secret] {
        assert!(
            !log.contains(t.as_str()),
            "a token is in the coordinator log"
        );
    }
    let mut coordinator = s.coordinator;
    coordinator.process.stop_clean().await;
}
