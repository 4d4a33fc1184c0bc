//! The dashboard's actions (POST): log out, dump now, verify now, restore.
//! Each checks the session's CSRF token, then the role `auth::rule` gives
//! the matching AdminService method, then calls that method's handler in
//! process (so its own checks apply) and audits the call as gRPC does.
use hyper::StatusCode;
use pgsnapman_proto::model::quoted;
use pgsnapman_proto::reflect::ADMIN_SERVICE_PREFIX;
use pgsnapman_proto::v1;
use pgsnapman_proto::v1::admin_service_server::AdminService;
use serde_json::{Value, json};

use super::pages::id;
use super::view::cut;
use super::{Dashboard, Req, Resp, Session, redirect, session};

impl Dashboard {
    pub(super) async fn act(&self, r: &Req, s: &Session, seg: &[&str]) -> Resp {
        let csrf_ok = r.form("csrf").is_some_and(|c| session::same(c, &s.csrf));
        let (method, args) = match seg {
            ["logout"] => {
                if !csrf_ok {
                    return self.error(StatusCode::FORBIDDEN, "refused: bad CSRF token");
                }
                if let Some(id) = &r.session_id {
                    self.sessions.close(id).await;
                }
                return redirect("/login");
            }
            ["jobs", j, "dump"] => ("DumpNow", id("job id", j).map(|j| json!({ "job_id": j }))),
            ["dumps", d, "verify"] => (
                "VerifyDumpNow",
                id("dump id", d).map(|d| json!({ "dump_id": d, "method": "read" })),
            ),
            ["dumps", d, "restore"] => ("RestoreNow", self.restore_args(r, d)),
            _ => {
                return self.error(
                    StatusCode::NOT_FOUND,
                    &format!("no dashboard action {}", quoted(&cut(&r.path))),
                );
            }
        };
        let args = args.unwrap_or_else(|m| json!({ "undecoded": m }));
        // Checked in this order, like the gRPC path: who (the session),
        // then that the form is ours (CSRF), then the role.
        if !csrf_ok {
            let m = "refused: the form's CSRF token does not match this session (reload the page)";
            self.audit(&s.caller.name, method, args, r, Some(m)).await;
            return self.error(StatusCode::FORBIDDEN, m);
        }
        let rule = crate::auth::rule(&format!("{ADMIN_SERVICE_PREFIX}{method}"));
        if s.caller.role < rule.role {
            let m = format!(
                "{} has the {} role; {method} needs {}",
                s.caller.describe(),
                s.caller.role.label(),
                rule.role.label()
            );
            self.audit(&s.caller.name, method, args, r, Some(&m)).await;
            return self.error(StatusCode::FORBIDDEN, &m);
        }
        if let Some(m) = args.get("undecoded").and_then(Value::as_str) {
            let m = m.to_string();
            self.audit(&s.caller.name, method, args, r, Some(&m)).await;
            return self.error(StatusCode::BAD_REQUEST, &m);
        }
        let result = self.call(method, &args, s).await;
        let error = result.as_ref().err().map(|st| cut(st.message()));
        self.audit(&s.caller.name, method, args, r, error.as_deref())
            .await;
        match result {
            Ok(task) => redirect(&format!("/tasks/{task}")),
            Err(st) => {
                let status = match st.code() {
                    tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                    tonic::Code::NotFound => StatusCode::NOT_FOUND,
                    tonic::Code::Internal | tonic::Code::Unavailable => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                self.error(status, &format!("{method} refused: {}", st.message()))
            }
        }
    }

    /// The restore form: target instance, database, existing-database
    /// policy, and for a destructive policy the target database typed
    /// again (the confirmation).
    fn restore_args(&self, r: &Req, dump: &str) -> Result<Value, String> {
        let dump_id = id("dump id", dump)?;
        let instance = id("instance", r.form("instance").unwrap_or_default())?;
        let database = r.form("database").unwrap_or_default().trim().to_string();
        let policy = r.form("existing").unwrap_or("RENAME");
        let existing = v1::ExistingDatabase::from_str_name(&format!("EXISTING_DATABASE_{policy}"))
            .ok_or_else(|| {
                format!(
                    "existing-database policy {} is unknown",
                    quoted(&cut(policy))
                )
            })?;
        if crate::auth::is_destructive_policy(existing as i32) {
            let confirm = r.form("confirm").unwrap_or_default().trim();
            if database.is_empty() || confirm != database {
                return Err(format!(
                    "policy {policy} destroys data in the target database: name the target database and type its name again to confirm"
                ));
            }
        }
        Ok(json!({
            "dump_id": dump_id, "instance_id": instance, "database": database,
            "existing": policy,
        }))
    }

    /// Calls the AdminService handler of `method` as `s`'s caller; the
    /// task it queued.
    async fn call(&self, method: &str, args: &Value, s: &Session) -> Result<i64, tonic::Status> {
        let n = |k: &str| args.get(k).and_then(Value::as_i64).unwrap_or(0);
        fn request<T>(msg: T, s: &Session) -> tonic::Request<T> {
            let mut req = tonic::Request::new(msg);
            req.extensions_mut().insert(s.caller.clone());
            req
        }
        let task = match method {
            "DumpNow" => {
                let msg = v1::DumpNowRequest {
                    job_id: n("job_id"),
                };
                self.admin.dump_now(request(msg, s)).await?
            }
            "VerifyDumpNow" => {
                let msg = v1::VerifyDumpNowRequest {
                    dump_id: n("dump_id"),
                    method: "read".into(),
                    ..Default::default()
                };
                self.admin.verify_dump_now(request(msg, s)).await?
            }
            "RestoreNow" => {
                let existing = args
                    .get("existing")
                    .and_then(Value::as_str)
                    .and_then(|p| {
                        v1::ExistingDatabase::from_str_name(&format!("EXISTING_DATABASE_{p}"))
                    })
                    .unwrap_or(v1::ExistingDatabase::Rename);
                let target = v1::RestoreTarget {
                    instance_id: n("instance_id"),
                    database: args
                        .get("database")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    existing_database: existing as i32,
                    roles: true,
                    ..Default::default()
                };
                let msg = v1::RestoreNowRequest {
                    what: Some(v1::restore_now_request::What::Dump(v1::AdHocRestore {
                        dump_id: n("dump_id"),
                        target: Some(target),
                    })),
                };
                self.admin.restore_now(request(msg, s)).await?
            }
            _ => return Err(tonic::Status::unimplemented(method.to_string())),
        };
        Ok(task.into_inner().id)
    }
}
