//! Rate limits on the AdminService: per token, and per peer address for
//! failed authentications (no timing assertions: a burst well over the
//! limit must meet some refusals, then the bucket must refill); and the
//! bounds of the audit log.
use std::time::Duration;

use pgsnapman_tests::wait;
use sqlx::Executor;
use tonic::Code;

use super::{Setup, bearer};

const LIST: &str = "/pgsnapman.v1.AdminService/ListWorkers";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_failing_peers_are_rate_limited() {
    let env = [
        ("PGSNAPMAN_ADMIN__REQUESTS_PER_SECOND", "1"),
        ("PGSNAPMAN_ADMIN__BURST", "5"),
        ("PGSNAPMAN_ADMIN__UNAUTHENTICATED_REQUESTS_PER_SECOND", "1"),
        ("PGSNAPMAN_ADMIN__UNAUTHENTICATED_BURST", "3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let s = Setup::start(env).await;
    let admin = s.admin_bearer();

    // burst + 20 calls: at 1/s they cannot all pass unless they take 20s.
    let mut ok = 0;
    let mut limited = Vec::new();
    for _ in 0..25 {
        match s.raw.unary(LIST, Vec::new(), Some(&admin)).await {
            Ok(_) => ok += 1,
            Err(e) => limited.push(e),
        }
    }
    assert!(ok >= 5, "the burst of 5 passes ({ok} did)");
    assert!(
        !limited.is_empty(),
        "25 calls at a limit of 1/s, none refused"
    );
    for e in &limited {
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_eq!(
            e.message(),
            "rate limit of 1 requests/s for token bootstrap-admin exceeded; retry later"
        );
    }
    wait::until(
        "the token's bucket to refill",
        Duration::from_secs(30),
        || async { s.raw.unary(LIST, Vec::new(), Some(&admin)).await.ok() },
    )
    .await;

    // Failed authentications from one address: 3, then refused unread.
    let unknown = bearer(&format!("psm_{}", "B".repeat(43)));
    let mut codes = Vec::new();
    for _ in 0..15 {
        let e = s
            .raw
            .unary(LIST, Vec::new(), Some(&unknown))
            .await
            .unwrap_err();
        codes.push(e.code());
        if e.code() == Code::ResourceExhausted {
            assert!(
                e.message()
                    .contains("unauthenticated requests/s from 127.0.0.1"),
                "{e:?}"
            );
        }
    }
    assert_eq!(codes[0], Code::Unauthenticated);
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    // Only the calls that were looked up are audited, not the flood.
    let audited = s.count("SELECT count(*) FROM audit_log WHERE detail LIKE '%unknown token%'");
    let refused = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    assert_eq!(audited, i64::try_from(refused).unwrap());
    assert!(refused < 15);
    // The address may call again once its bucket has refilled.
    wait::until(
        "the peer's bucket to refill",
        Duration::from_secs(30),
        || async { s.raw.unary(LIST, Vec::new(), Some(&admin)).await.ok() },
    )
    .await;
    let mut coordinator = s.coordinator;
    coordinator.process.stop_clean().await;
}

/// The audit keeps `retention.audit`; `Catalog::audit` stores what it is
/// given, NUL and overlong details included (in process, on a real catalog).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_are_stored_and_pruned_by_age() {
    use pgsnapman_coordinator::catalog::{AuditEntry, AuditFilter, Catalog};
    let cluster = pgsnapman_tests::PgCluster::start(crate::common::PG_MAJOR).unwrap();
    let catalog = Catalog::open(cluster.url("postgres").parse().unwrap(), 4, 3)
        .await
        .unwrap();
    catalog
        .audit(AuditEntry {
            actor: "worker:w\0x".into(),
            method: "Enroll".into(),
            args_json: serde_json::json!({ "name": "w" }),
            peer: Some("192.0.2.7:5555".into()),
            ok: false,
            detail: format!("PermissionDenied: {}", "d".repeat(5000)),
        })
        .await;
    let rows = catalog
        .list_audit(&AuditFilter {
            failed: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor, "worker:w\u{FFFD}x");
    assert!(
        rows[0].detail.len() < 1100,
        "{} bytes",
        rows[0].detail.len()
    );
    catalog
        .pool
        .execute("UPDATE audit_log SET at = now() - interval '400 days'")
        .await
        .unwrap();
    catalog
        .audit(AuditEntry {
            actor: "ops".into(),
            method: "DumpNow".into(),
            args_json: serde_json::json!({}),
            peer: None,
            ok: true,
            detail: String::new(),
        })
        .await;
    let pruned = catalog
        .prune_audit(Duration::from_secs(365 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let left = catalog
        .list_audit(&AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].actor, "ops");
}
