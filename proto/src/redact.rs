//! Hand-written Debug for the messages that carry a password, so that a
//! `{:?}` in a log line can never print a secret.
use std::fmt;

use crate::v1::{AddInstanceRequest, InstanceConnection, UpdateInstanceRequest};

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
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
