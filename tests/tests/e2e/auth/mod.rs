//! Operator authentication, roles, rate limits and the audit on a real
//! coordinator: every AdminService method of the compiled contract with no,
//! a bad, a viewer, an operator and an admin token, the catalog compared
//! before and after each refused call.
use std::collections::HashMap;

use pgsnapman_coordinator::auth::{Role, Rule, documented_rules};
use pgsnapman_proto::reflect::{Method, admin_methods};
use pgsnapman_proto::v1;
use pgsnapman_tests::raw::RawGrpc;
use pgsnapman_tests::{Coordinator, CoordinatorOptions, PgCluster};
use tonic::Code;

use crate::common::*;

mod certs;
mod cli;
mod inputs;
mod limits;

/// A coordinator on its own catalog, with `env` added.
pub struct Setup {
    pub catalog: PgCluster,
    pub coordinator: Coordinator,
    pub raw: RawGrpc,
}

/// Limits no test of roles reaches (the rate test sets its own).
pub fn generous_limits() -> Vec<(String, String)> {
    [
        ("PGSNAPMAN_ADMIN__REQUESTS_PER_SECOND", "100000"),
        ("PGSNAPMAN_ADMIN__BURST", "100000"),
        (
            "PGSNAPMAN_ADMIN__UNAUTHENTICATED_REQUESTS_PER_SECOND",
            "100000",
        ),
        ("PGSNAPMAN_ADMIN__UNAUTHENTICATED_BURST", "100000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Setup {
    pub async fn start(env: Vec<(String, String)>) -> Setup {
        let catalog = PgCluster::start(PG_MAJOR).unwrap();
        let coordinator = Coordinator::start(CoordinatorOptions {
            catalog_url: Some(catalog.url("postgres")),
            env,
            ..Default::default()
        })
        .await
        .unwrap();
        let raw = RawGrpc::connect(&coordinator.access()).await.unwrap();
        Setup {
            catalog,
            coordinator,
            raw,
        }
    }

    /// `Bearer <the bootstrap admin token>`.
    pub fn admin_bearer(&self) -> String {
        bearer(self.coordinator.token.as_deref().expect("an admin token"))
    }

    /// Creates a token through the API; returns its secret.
    pub async fn create_token(&self, name: &str, role: v1::Role, expires: u64) -> String {
        let mut admin = self.coordinator.admin().await.unwrap();
        admin
            .create_token(v1::CreateTokenRequest {
                name: name.into(),
                role: role as i32,
                expires_in_seconds: expires,
            })
            .await
            .unwrap()
            .into_inner()
            .secret
    }

    /// One hash per catalog table except audit_log (and the tokens' use
    /// times): equal fingerprints, unchanged catalog.
    pub fn fingerprint(&self) -> String {
        self.catalog.query("postgres", FINGERPRINT).unwrap()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.catalog
            .query("postgres", sql)
            .unwrap()
            .parse()
            .unwrap()
    }
}

const FINGERPRINT: &str = "SELECT string_agg(table_name || '=' || (xpath('/row/h/text()', \
     query_to_xml(format('SELECT md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) AS h FROM %s t', \
     ',', '', CASE WHEN table_name = 'api_tokens' THEN \
     '(SELECT id, name, role, token_sha256, created_at, created_by, expires_at, revoked_at, \
     cert_sha256, cert_serial, cert_source FROM api_tokens)' \
     ELSE quote_ident(table_name) END), false, true, '')))[1]::text, ' ' ORDER BY table_name) \
     FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
     AND table_name <> 'audit_log'";

pub fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

/// Calls `m` (an empty request) through `raw` with `auth` as a caller
/// (`who`, e.g. `token viewer-1`) of `as_role`: a method that needs more is
/// refused with PERMISSION_DENIED naming both roles and leaves the catalog
/// unchanged (then true); others get past authentication and the role check.
pub async fn role_call(
    s: &Setup,
    raw: &RawGrpc,
    m: &Method,
    auth: Option<&str>,
    rule: Rule,
    as_role: Role,
    who: &str,
) -> bool {
    let before = s.fingerprint();
    let res = raw.unary(&m.path, Vec::new(), auth).await;
    if rule.role > as_role {
        let err = res.unwrap_err();
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "{} as {who}: {err:?}",
            m.name
        );
        let want = format!(
            "{who} has the {} role; {} needs {}",
            as_role.label(),
            m.name,
            rule.role.label()
        );
        assert!(err.message().contains(&want), "{err:?}");
        assert_eq!(
            s.fingerprint(),
            before,
            "{} as {who} changed the catalog",
            m.name
        );
        return true;
    }
    if let Err(e) = res {
        assert!(
            !matches!(e.code(), Code::PermissionDenied | Code::Unauthenticated),
            "{} as {who} must be allowed: {e:?}",
            m.name
        );
    }
    false
}

/// Calls `m` as an admin (`actor` in the audit): allowed, and one audit row
/// when the method is mutating (also when it fails), none for a read.
pub async fn admin_call(
    s: &Setup,
    raw: &RawGrpc,
    m: &Method,
    auth: Option<&str>,
    actor: &str,
    rule: Rule,
) {
    let rows = format!(
        "SELECT count(*) FROM audit_log WHERE actor = '{actor}' AND method = '{}'",
        m.name
    );
    let rows_before = s.count(&rows);
    if let Err(e) = raw.unary(&m.path, Vec::new(), auth).await {
        assert!(
            !matches!(e.code(), Code::PermissionDenied | Code::Unauthenticated),
            "{} as admin {actor}: {e:?}",
            m.name
        );
    }
    assert_eq!(
        s.count(&rows) - rows_before,
        i64::from(rule.mutating),
        "{}: audit rows of the admin's call",
        m.name
    );
}

/// Role and auditing of each RPC as docs/security-auth.md documents them.
fn documented_roles() -> HashMap<String, Rule> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security-auth.md");
    let doc = std::fs::read_to_string(path).unwrap();
    documented_rules(&doc).into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_method_checks_the_token_and_the_role() {
    let s = Setup::start(generous_limits()).await;
    let viewer = bearer(&s.create_token("viewer-1", v1::Role::Viewer, 0).await);
    let operator = bearer(&s.create_token("operator-1", v1::Role::Operator, 0).await);
    let admin = s.admin_bearer();
    let documented = documented_roles();
    let methods = admin_methods();
    assert!(methods.len() >= 42, "{} methods", methods.len());

    let mut viewer_refused = 0;
    let mut operator_refused = 0;
    for m in &methods {
        let rule = documented
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} is not in docs/security-auth.md", m.name));
        let before = s.fingerprint();
        for (auth, what) in [
            (None, "no credential"),
            (Some("Bearer psm_garbage"), "a garbage token"),
            (
                Some(&*bearer(&format!("psm_{}", "A".repeat(43)))),
                "an unknown token",
            ),
        ] {
            let err = s.raw.unary(&m.path, Vec::new(), auth).await.unwrap_err();
            assert_eq!(
                err.code(),
                Code::Unauthenticated,
                "{} with {what}: {err:?}",
                m.name
            );
            assert!(!err.message().contains("AAAA"), "{err:?}");
        }
        assert_eq!(
            s.fingerprint(),
            before,
            "{} unauthenticated changed the catalog",
            m.name
        );

        for (token, as_role, name) in [
            (&viewer, Role::Viewer, "viewer-1"),
            (&operator, Role::Operator, "operator-1"),
        ] {
            let who = format!("token {name}");
            if role_call(&s, &s.raw, m, Some(token), *rule, as_role, &who).await {
                if as_role == Role::Viewer {
                    viewer_refused += 1;
                } else {
                    operator_refused += 1;
                }
            }
        }
        admin_call(&s, &s.raw, m, Some(&admin), "bootstrap-admin", *rule).await;
    }

    // Every refused call is in the audit, with the caller's address.
    let n = i64::try_from(methods.len()).unwrap();
    let unauthenticated = s.count(
        "SELECT count(*) FROM audit_log WHERE actor = '' AND NOT ok \
         AND detail LIKE 'Unauthenticated%' AND peer LIKE '127.0.0.1:%'",
    );
    assert_eq!(unauthenticated, 3 * n);
    let denied = |actor: &str| {
        s.count(&format!(
            "SELECT count(*) FROM audit_log WHERE actor = '{actor}' AND NOT ok \
             AND detail LIKE 'PermissionDenied%'"
        ))
    };
    assert_eq!(denied("viewer-1"), viewer_refused);
    assert_eq!(denied("operator-1"), operator_refused);
    assert!(viewer_refused > operator_refused && operator_refused > 0);

    // A method the table does not know needs admin.
    let unknown = "/pgsnapman.v1.AdminService/NoSuchMethodYet";
    let err = s
        .raw
        .unary(unknown, Vec::new(), Some(&operator))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = s
        .raw
        .unary(unknown, Vec::new(), Some(&admin))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");

    s.coordinator.process.assert_no_unexpected_errors(&[]);
    let mut coordinator = s.coordinator;
    coordinator.process.stop_clean().await;
}

/// RestoreNow: an operator may restore only with a policy that keeps the
/// existing database; a restore job's own policy counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_restores_need_admin() {
    use prost::Message;
    let s = Setup::start(generous_limits()).await;
    let operator = bearer(&s.create_token("ops", v1::Role::Operator, 0).await);
    let admin = s.admin_bearer();
    let path = "/pgsnapman.v1.AdminService/RestoreNow";
    let req = |existing: v1::ExistingDatabase| {
        v1::RestoreNowRequest {
            what: Some(v1::restore_now_request::What::Dump(v1::AdHocRestore {
                dump_id: 4242,
                target: Some(v1::RestoreTarget {
                    instance_id: 1,
                    existing_database: existing as i32,
                    ..Default::default()
                }),
            })),
        }
        .encode_to_vec()
    };
    use v1::ExistingDatabase as E;
    for e in [E::Drop, E::DropBefore, E::Truncate] {
        let before = s.fingerprint();
        let err = s
            .raw
            .unary(path, req(e), Some(&operator))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{e:?}: {err:?}");
        assert!(
            err.message().contains(e.as_str_name()) && err.message().contains("needs admin"),
            "{err:?}"
        );
        assert_eq!(s.fingerprint(), before);
        // The admin gets past the role check (to the missing dump).
        let err = s.raw.unary(path, req(e), Some(&admin)).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{e:?} as admin: {err:?}");
    }
    for e in [E::Unspecified, E::Rename, E::Leave] {
        let err = s
            .raw
            .unary(path, req(e), Some(&operator))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{e:?} as operator: {err:?}");
    }
    // The refusals are audited with the policy in the arguments.
    let rows = s.count(
        "SELECT count(*) FROM audit_log WHERE actor = 'ops' AND method = 'RestoreNow' \
         AND NOT ok AND detail LIKE 'PermissionDenied%' \
         AND args->'dump'->'target'->>'existing_database' IN \
         ('EXISTING_DATABASE_DROP', 'EXISTING_DATABASE_DROP_BEFORE', 'EXISTING_DATABASE_TRUNCATE')",
    );
    assert_eq!(rows, 3);

    // A restore job's own policy counts when it is run now.
    let cli = s.coordinator.cli();
    register_worker(&cli, "w-restore");
    let inst = add_instance(&cli, "src", 5432, "w-restore", None);
    let job = add_job(&cli, inst, "app");
    let restore_job = |existing: &str| {
        let v = cli
            .json(&[
                "restore-job",
                "add",
                "--from-job",
                &job.to_string(),
                "--to-instance",
                &inst.to_string(),
                "--to-database",
                existing,
                "--kind",
                "repeat",
                "--cron",
                "0 3 1 1 *",
                "--existing",
                existing,
            ])
            .unwrap();
        id_of(&v).to_string()
    };
    let (drop_job, leave_job) = (restore_job("drop"), restore_job("leave"));
    let ops = pgsnapman_tests::Pgsnap::new(
        s.coordinator
            .access()
            .with_token(Some(operator["Bearer ".len()..].to_string())),
    );
    let run = ops.run(&["restore", "run", &drop_job]).unwrap();
    assert!(
        run.stderr.contains("EXISTING_DATABASE_DROP needs admin"),
        "operator running a DROP restore job: {run:?}"
    );
    // LEAVE passes the role check (and fails on the missing dump).
    let run = ops.run(&["restore", "run", &leave_job]).unwrap();
    assert!(
        !run.stderr.contains("needs admin") && !run.stderr.contains("refused"),
        "{run:?}"
    );
    let mut coordinator = s.coordinator;
    coordinator.process.stop_clean().await;
}

/// Revoked and expired tokens are refused at once, naming the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_tokens_are_refused() {
    let s = Setup::start(generous_limits()).await;
    let list = "/pgsnapman.v1.AdminService/ListWorkers";
    let viewer = bearer(&s.create_token("soon-gone", v1::Role::Viewer, 0).await);
    s.raw.unary(list, Vec::new(), Some(&viewer)).await.unwrap();
    let mut admin = s.coordinator.admin().await.unwrap();
    admin
        .revoke_token(v1::RevokeTokenRequest {
            name: "soon-gone".into(),
        })
        .await
        .unwrap();
    let err = s
        .raw
        .unary(list, Vec::new(), Some(&viewer))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("token soon-gone was revoked"),
        "{err:?}"
    );

    let short = bearer(&s.create_token("short", v1::Role::Viewer, 1).await);
    let err = pgsnapman_tests::wait::until(
        "the 1s token to expire",
        std::time::Duration::from_secs(30),
        || async { s.raw.unary(list, Vec::new(), Some(&short)).await.err() },
    )
    .await;
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("token short expired at"), "{err:?}");
    let rows = s.count(
        "SELECT count(*) FROM audit_log WHERE NOT ok AND \
         (detail LIKE '%soon-gone was revoked%' OR detail LIKE '%short expired%')",
    );
    assert_eq!(rows, 2);
    let mut coordinator = s.coordinator;
    coordinator.process.stop_clean().await;
}
