//! Hand-written Debug for the messages that carry a password, so that a
//! `{:?}` in a log line can never print a secret, and `redact_url` for
//! Postgres URLs that are logged.
use std::fmt;

use crate::v1::{
    AddInstanceRequest, EnrollRequest, EnrollmentToken, InstanceConnection, UpdateInstanceRequest,
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
            .finish()
    }
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
