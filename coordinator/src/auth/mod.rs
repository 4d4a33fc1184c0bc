//! Who may call which AdminService method: operator tokens and client
//! certificates, the three roles, the one table of required roles (`rule`),
//! the request-rate limits and the audit of mutating and refused calls. The WorkerService is not under it
//! (workers authenticate with certificates). See docs/security-auth.md.
mod audit;
pub mod cert;
mod layer;
mod rate;
pub mod token;

pub use layer::{AdminAuth, AuthState};
pub use rate::{Rate, RateLimits};

use pgsnapman_proto::reflect::ADMIN_SERVICE_PREFIX;
use pgsnapman_proto::v1;

/// What a token may do; each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    /// The catalog label (`api_tokens.role`).
    pub fn label(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn from_label(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The wire value; UNSPECIFIED and unknown numbers are `None`.
    pub fn from_proto(v: i32) -> Option<Self> {
        match v1::Role::try_from(v) {
            Ok(v1::Role::Viewer) => Some(Role::Viewer),
            Ok(v1::Role::Operator) => Some(Role::Operator),
            Ok(v1::Role::Admin) => Some(Role::Admin),
            Ok(v1::Role::Unspecified) | Err(_) => None,
        }
    }
}

/// The authenticated caller of an AdminService call, put in the request's
/// extensions by [`AdminAuth`] for handlers that decide on the arguments
/// (RestoreNow's destructive policies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The actor of the audit rows: the token name, or `cert:<name>` for
    /// an operator certificate (token names hold no `:`).
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// `token NAME` or `certificate NAME`, for messages.
    pub fn describe(&self) -> String {
        match self.name.strip_prefix(cert::ACTOR_PREFIX) {
            Some(n) => format!("certificate {n}"),
            None => format!("token {}", self.name),
        }
    }
}

/// What a method needs and whether it changes anything (then it is audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub role: Role,
    pub mutating: bool,
}

const fn read(role: Role) -> Rule {
    Rule {
        role,
        mutating: false,
    }
}

const fn write(role: Role) -> Rule {
    Rule {
        role,
        mutating: true,
    }
}

/// THE table of roles (docs/security-auth.md repeats it; a test checks that
/// both agree and that every method of the contract is named here). Keyed by
/// the full gRPC path; anything not listed needs admin and is audited, so a
/// method added later is admin-only until it is placed here.
pub fn rule(path: &str) -> Rule {
    use Role::{Admin, Operator, Viewer};
    if crate::health::is_reflection(path) {
        // The schema of the public contract: any role may read it.
        return read(Viewer);
    }
    let Some(method) = path.strip_prefix(ADMIN_SERVICE_PREFIX) else {
        return write(Admin);
    };
    match method {
        "ListWorkers" | "GetWorker" | "ListInstances" | "GetInstance" | "ListDumpJobs"
        | "GetDumpJob" | "ListDumps" | "GetDump" | "ListMessages" | "GetTask" | "WatchTask"
        | "ListTasks" | "ListStoreStats" | "ListRestoreJobs" | "GetRestoreJob"
        | "ListRestoreRuns" | "GetRestoreLog" | "ListCopyJobs" | "ListScripts" | "GetScript"
        | "PreviewRetention" | "ListNotifyChannels" | "ListNotifyRules" => read(Viewer),
        "ListTokens" | "ListAudit" => read(Admin),
        // RestoreNow with a destructive `existing` policy needs admin: the
        // handler checks that (the policy is in the request or the job).
        "DumpNow"
        | "RestoreNow"
        | "VerifyDumpNow"
        | "VerifyStore"
        | "SetWorkerStatus"
        | "SetInstanceStatus"
        | "SetDumpJobStatus"
        | "SetRestoreJobStatus"
        | "PinDump"
        | "TestNotifyChannel"
        | "CancelTask" => write(Operator),
        "RegisterWorker"
        | "SetRestoreWorker"
        | "IssueEnrollmentToken"
        | "RevokeWorker"
        | "AddInstance"
        | "UpdateInstance"
        | "RemoveInstance"
        | "AddDumpJob"
        | "UpdateDumpJob"
        | "RemoveDumpJob"
        | "DeleteDump"
        | "RebuildCatalog"
        | "AddRestoreJob"
        | "RemoveRestoreJob"
        | "AddCopyJob"
        | "RestoreServer"
        | "CreateToken"
        | "RevokeToken"
        | "UnpinDump"
        | "AddScript"
        | "RemoveScript"
        | "IssueOperatorCertificate"
        | "RegisterOperatorCertificate"
        | "AddNotifyChannel"
        | "RemoveNotifyChannel"
        | "AddNotifyRule"
        | "RemoveNotifyRule" => write(Admin),
        _ => write(Admin),
    }
}

/// The roles table of docs/security-auth.md (`| \`Method\` | role |
/// yes/no | note |` rows) as (method name, rule); rows it cannot read are
/// left out. For the tests that hold the page and the code together.
pub fn documented_rules(doc: &str) -> Vec<(String, Rule)> {
    doc.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            // RPC names only (not the config keys of other tables).
            if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
                return None;
            }
            let role = Role::from_label(cells.get(2)?)?;
            let mutating = match *cells.get(3)? {
                "yes" => true,
                "no" => false,
                _ => return None,
            };
            Some((name.to_string(), Rule { role, mutating }))
        })
        .collect()
}

/// `RestoreNow` from a gRPC path, or the whole path when it is not an
/// AdminService method (the audit's `method`).
pub fn method_name(path: &str) -> &str {
    path.strip_prefix(ADMIN_SERVICE_PREFIX).unwrap_or(path)
}

/// True for the `existing` policies that destroy data in the target
/// database (DROP, DROP_BEFORE, TRUNCATE): RestoreNow with one needs admin.
/// UNSPECIFIED means RENAME.
pub fn is_destructive_policy(existing: i32) -> bool {
    use v1::ExistingDatabase as E;
    !matches!(
        E::try_from(existing),
        Ok(E::Unspecified | E::Rename | E::Leave)
    )
}

#[cfg(test)]
mod tests {
    use pgsnapman_proto::reflect::admin_methods;

    use super::*;

    /// Reflection is open to every role, read-only; any other path outside
    /// the AdminService stays admin-only and audited.
    #[test]
    fn reflection_needs_a_viewer_and_other_services_admin() {
        for path in crate::health::REFLECTION_PATHS {
            assert_eq!(rule(path), read(Role::Viewer), "{path}");
        }
        assert_eq!(
            rule("/grpc.reflection.v2.ServerReflection/ServerReflectionInfo"),
            write(Role::Admin)
        );
        assert_eq!(
            rule("/pgsnapman.v1.WorkerService/Hello"),
            write(Role::Admin)
        );
    }

    /// The default arm makes a forgotten method admin-only; naming each one
    /// in the table is what documents it: every method must be named.
    #[test]
    fn every_method_of_the_contract_is_in_the_table() {
        let src = include_str!("mod.rs");
        let table = src
            .split("pub fn rule(")
            .nth(1)
            .and_then(|s| s.split("pub fn method_name(").next())
            .expect("the table is in this file");
        for m in admin_methods() {
            assert!(
                table.contains(&format!("\"{}\"", m.name)),
                "AdminService/{} is not in the role table of auth::rule",
                m.name
            );
        }
    }

    /// docs/security-auth.md lists every RPC with the role and auditing
    /// that `rule` gives it.
    #[test]
    fn the_documented_table_is_the_code() {
        let rows = documented_rules(include_str!("../../../docs/security-auth.md"));
        for (name, documented) in &rows {
            let r = rule(&format!("{ADMIN_SERVICE_PREFIX}{name}"));
            assert_eq!(documented, &r, "{name}: documented role and auditing");
        }
        for m in admin_methods() {
            assert!(
                rows.iter().any(|(n, _)| *n == m.name),
                "{} is missing from the roles table of docs/security-auth.md",
                m.name
            );
        }
    }

    #[test]
    fn roles_and_their_order() {
        let p = |m: &str| format!("{ADMIN_SERVICE_PREFIX}{m}");
        assert_eq!(rule(&p("ListWorkers")), read(Role::Viewer));
        assert_eq!(rule(&p("ListAudit")), read(Role::Admin));
        assert_eq!(rule(&p("DumpNow")), write(Role::Operator));
        assert_eq!(rule(&p("AddInstance")), write(Role::Admin));
        assert_eq!(rule(&p("NoSuchMethodYet")), write(Role::Admin));
        assert_eq!(
            rule("/pgsnapman.v1.WorkerService/Hello"),
            write(Role::Admin)
        );
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!(method_name(&p("DumpNow")), "DumpNow");
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::from_label(r.label()), Some(r));
        }
        assert_eq!(Role::from_proto(0), None);
        assert_eq!(Role::from_proto(99), None);
        assert_eq!(
            Role::from_proto(v1::Role::Operator as i32),
            Some(Role::Operator)
        );
    }

    #[test]
    fn destructive_policies_are_drop_drop_before_and_truncate() {
        use v1::ExistingDatabase as E;
        for e in [E::Unspecified, E::Rename, E::Leave] {
            assert!(!is_destructive_policy(e as i32), "{e:?}");
        }
        for e in [E::Drop, E::DropBefore, E::Truncate] {
            assert!(is_destructive_policy(e as i32), "{e:?}");
        }
        assert!(is_destructive_policy(77), "unknown values are refused");
    }
}
