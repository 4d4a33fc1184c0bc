//! Rows of operator tokens and of the audit log. A token row never holds the
//! token itself, only its sha256, which never leaves the catalog.
use chrono::{DateTime, Utc};
use pgsnapman_proto::timestamp;
use pgsnapman_proto::v1;

use super::ts;

pub const TOKEN_COLUMNS: &str =
    "id, name, role, created_at, created_by, expires_at, revoked_at, last_used_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl TokenRow {
    pub fn to_proto(&self) -> v1::ApiToken {
        let role = match self.role.as_str() {
            "viewer" => v1::Role::Viewer,
            "operator" => v1::Role::Operator,
            "admin" => v1::Role::Admin,
            _ => v1::Role::Unspecified,
        };
        v1::ApiToken {
            id: self.id,
            name: self.name.clone(),
            role: role as i32,
            created_at: Some(timestamp(self.created_at)),
            created_by: self.created_by.clone(),
            expires_at: ts(self.expires_at),
            revoked_at: ts(self.revoked_at),
            last_used_at: ts(self.last_used_at),
        }
    }
}

pub const AUDIT_COLUMNS: &str = "id, at, actor, method, args, peer, ok, detail";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub method: String,
    pub args: serde_json::Value,
    pub peer: Option<String>,
    pub ok: bool,
    pub detail: String,
}

impl AuditRow {
    pub fn to_proto(&self) -> v1::AuditEntry {
        v1::AuditEntry {
            id: self.id,
            at: Some(timestamp(self.at)),
            actor: self.actor.clone(),
            method: self.method.clone(),
            args_json: self.args.to_string(),
            peer: self.peer.clone().unwrap_or_default(),
            ok: self.ok,
            detail: self.detail.clone(),
        }
    }
}
