//! Hand-written Debug for the messages that carry a password, so that a
//! `{:?}` in a log line can never print a secret, and `redact_url` for
//! Postgres URLs that are logged, and `redact_json` for requests that are
//! written to the audit.
use std::fmt;

use crate::v1::{
    AddInstanceRequest, CreateTokenResponse, EnrollRequest, EnrollmentToken, InstanceConnection,
    SealedPassword, UpdateInstanceRequest,
};

fn secret(present: bool) -> &'static str {
    if present { "<redacted>" } else { "<none>" }
}

impl fmt::Debug for InstanceConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceConnection")
            .field("instance_id", &self.instance_id)
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &secret(!self.password.is_empty()))
            .field("maintenance_db", &self.maintenance_db)
            .field("status", &self.status)
            .field("discover", &self.discover)
            .field("sslmode", &self.sslmode)
            .field(
                "sealed_password",
                &self
                    .sealed_password
                    .as_ref()
                    .map(|s| (crate::seal::Sealed(&s.ciphertext), &s.key_fingerprint)),
            )
            .finish()
    }
}

/// Each sealed copy as (worker, size, key fingerprint).
fn sealed_list(list: &[SealedPassword]) -> Vec<String> {
    list.iter()
        .map(|s| {
            format!(
                "{:?} {:?} {}",
                s.worker,
                crate::seal::Sealed(&s.ciphertext),
                s.key_fingerprint
            )
        })
        .collect()
}

impl fmt::Debug for AddInstanceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddInstanceRequest")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &secret(self.password.is_some()))
            .field("maintenance_db", &self.maintenance_db)
            .field("default_worker", &self.default_worker)
            .field("comment", &self.comment)
            .field("auto_discover", &self.auto_discover)
            .field("backup_window_start", &self.backup_window_start)
            .field("backup_window_end", &self.backup_window_end)
            .field("discovered_status", &self.discovered_status)
            .field("discovered_retention", &self.discovered_retention)
            .field("sslmode", &self.sslmode)
            .field("sealed_passwords", &sealed_list(&self.sealed_passwords))
            .field("id", &self.id)
            .field("discover_report_only", &self.discover_report_only)
            .finish()
    }
}

impl fmt::Debug for UpdateInstanceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateInstanceRequest")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &secret(self.password.is_some()))
            .field("clear_password", &self.clear_password)
            .field("maintenance_db", &self.maintenance_db)
            .field("default_worker", &self.default_worker)
            .field("comment", &self.comment)
            .field("auto_discover", &self.auto_discover)
            .field("backup_window_start", &self.backup_window_start)
            .field("backup_window_end", &self.backup_window_end)
            .field("discovered_status", &self.discovered_status)
            .field("discovered_retention", &self.discovered_retention)
            .field("sslmode", &self.sslmode)
            .field("sealed_passwords", &sealed_list(&self.sealed_passwords))
            .field("discover_report_only", &self.discover_report_only)
            .finish()
    }
}

impl fmt::Debug for CreateTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateTokenResponse")
            .field("token", &self.token)
            .field("secret", &secret(!self.secret.is_empty()))
            .finish()
    }
}

/// A `postgres://` URL with every password replaced by `***`: the userinfo
/// password (`user:***@host`) and `password`/`sslpassword` query parameters
/// (any case). Anything else is kept as written.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_string(),
            },
            None => base.to_string(),
        },
        None => base.to_string(),
    };
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _))
                    if key.eq_ignore_ascii_case("password")
                        || key.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{key}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Longest string kept whole in a redacted JSON document (longer ones are cut
/// with an ellipsis: an audit row never holds a 1 MB input).
pub const MAX_JSON_STRING: usize = 256;
/// Most elements of one array kept in a redacted JSON document.
pub const MAX_JSON_ARRAY: usize = 100;
/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// True for a field name that holds a secret: passwords, tokens, sealed
/// passwords, secrets and private keys (any case, anywhere in the name).
/// `has_password` (a flag) and `token_name` (a name) are not secrets.
pub fn is_secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.starts_with("has_") || n.ends_with("_name") {
        return false;
    }
    ["password", "token", "secret", "sealed", "private_key"]
        .iter()
        .any(|s| n.contains(s))
}

/// The one redaction of a decoded request before it is stored or logged:
/// the value of every secret field (at any depth, [`is_secret_field`])
/// becomes `"<redacted>"` (an empty one stays empty, so that "no password"
/// remains visible), long strings and arrays are cut, NUL characters (which
/// Postgres text cannot hold) become U+FFFD.
pub fn redact_json(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if is_secret_field(k) && !matches!(val, Value::Bool(_) | Value::Null) {
                    let empty = matches!(val, Value::String(s) if s.is_empty());
                    if !empty {
                        *val = Value::String(REDACTED.into());
                    }
                } else {
                    redact_json(val);
                }
            }
        }
        Value::Array(items) => {
            let total = items.len();
            if total > MAX_JSON_ARRAY {
                items.truncate(MAX_JSON_ARRAY);
                items.push(Value::String(format!("… {} more", total - MAX_JSON_ARRAY)));
            }
            items.iter_mut().for_each(redact_json);
        }
        Value::String(s) => {
            let mut t = if s.chars().count() > MAX_JSON_STRING {
                let mut cut: String = s.chars().take(MAX_JSON_STRING).collect();
                cut.push_str(&format!("… ({} bytes)", s.len()));
                cut
            } else {
                std::mem::take(s)
            };
            if t.contains('\0') {
                t = t.replace('\0', "\u{FFFD}");
            }
            *s = t;
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

// Enrollment tokens are bearer secrets: never in a log line.
impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("worker", &self.worker)
            .field("token", &secret(!self.token.is_empty()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("token", &secret(!self.token.is_empty()))
            .field("csr_pem_bytes", &self.csr_pem.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_every_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u@h/db?password=secret"),
            "postgres://u@h/db?password=***"
        );
        assert_eq!(
            redact_url("postgresql://h/db?sslmode=require&PASSWORD=secret&application_name=x"),
            "postgresql://h/db?sslmode=require&PASSWORD=***&application_name=x"
        );
        assert_eq!(
            redact_url("postgres://u:a@h/db?user=u&password=b&sslpassword=c"),
            "postgres://u:***@h/db?user=u&password=***&sslpassword=***"
        );
        assert_eq!(
            redact_url("postgres://h/db?passwordless=1"),
            "postgres://h/db?passwordless=1"
        );
        assert_eq!(redact_url(""), "");
        for url in [
            "postgres://u:secret@h/db?password=secret",
            "postgres:///db?host=/run&password=secret",
        ] {
            assert!(!redact_url(url).contains("secret"), "{url}");
        }
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = InstanceConnection {
            password: "hunter2-secret".into(),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let a = AddInstanceRequest {
            password: Some("hunter2-secret".into()),
            ..Default::default()
        };
        assert!(!format!("{a:?}").contains("hunter2"));
        let u = UpdateInstanceRequest {
            password: Some("hunter2-secret".into()),
            ..Default::default()
        };
        assert!(!format!("{u:?}").contains("hunter2"));
        let t = CreateTokenResponse {
            secret: "psm_hunter2".into(),
            ..Default::default()
        };
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn json_loses_every_secret_at_any_depth() {
        let mut v = serde_json::json!({
            "name": "db1",
            "password": "hunter2",
            "has_password": true,
            "clear_password": false,
            "connection": {"password": "hunter3", "user": "u"},
            "sealed_password": "AGE-hunter4",
            "enroll_token": "psm_hunter5",
            "secret": "hunter6",
            "list": [{"sslpassword": "hunter7"}],
            "token_name": "ops",
            "empty_password": "",
        });
        redact_json(&mut v);
        let text = v.to_string();
        assert!(!text.contains("hunter"), "{text}");
        assert_eq!(v["name"], "db1");
        assert_eq!(v["password"], REDACTED);
        assert_eq!(v["has_password"], true);
        assert_eq!(v["clear_password"], false);
        assert_eq!(v["connection"]["user"], "u");
        assert_eq!(v["connection"]["password"], REDACTED);
        assert_eq!(v["token_name"], "ops");
        assert_eq!(v["empty_password"], "");
    }

    #[test]
    fn json_strings_and_arrays_are_bounded_and_nul_free() {
        let mut v = serde_json::json!({
            "comment": "x".repeat(1 << 20),
            "options": vec![1; 1000],
            "name": "a\0b",
        });
        redact_json(&mut v);
        let comment = v["comment"].as_str().unwrap();
        assert!(
            comment.len() < 400 && comment.contains("1048576 bytes"),
            "{comment}"
        );
        assert_eq!(v["options"].as_array().unwrap().len(), MAX_JSON_ARRAY + 1);
        assert_eq!(v["name"], "a\u{FFFD}b");
    }

    #[test]
    fn debug_never_shows_an_enrollment_token() {
        let t = EnrollmentToken {
            token: "pse_secret-token".into(),
            ..Default::default()
        };
        assert!(!format!("{t:?}").contains("secret-token"));
        let r = EnrollRequest {
            token: "pse_secret-token".into(),
            csr_pem: "-----BEGIN".into(),
        };
        assert!(!format!("{r:?}").contains("secret-token"));
    }
}
