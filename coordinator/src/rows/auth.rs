//! Rows of operator tokens and of the audit log. A token row never holds the
//! token itself, only its sha256, which never leaves the catalog.
use chrono::{DateTime, Utc};
use pgsnapman_proto::timestamp;
use pgsnapman_proto::v1;

use super::ts;

pub const TOKEN_COLUMNS: &str = "id, name, role, created_at, created_by, expires_at, revoked_at, \
     last_used_at, cert_sha256, cert_serial, cert_source";

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
    /// Operator certificates only (migration 0019): the SHA-256 of the
    /// DER, the serial (hex) and `issued` or `registered`.
    pub cert_sha256: Option<Vec<u8>>,
    pub cert_serial: Option<String>,
    pub cert_source: Option<String>,
}

impl TokenRow {
    pub fn kind(&self) -> v1::CredentialKind {
        match self.cert_source.as_deref() {
            None => v1::CredentialKind::Token,
            Some("issued") => v1::CredentialKind::IssuedCertificate,
            Some(_) => v1::CredentialKind::RegisteredCertificate,
        }
    }

    /// `token NAME` or `certificate NAME`, for messages.
    pub fn describe(&self) -> String {
        match self.cert_source {
            None => format!("token {}", self.name),
            Some(_) => format!("certificate {}", self.name),
        }
    }

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
            kind: self.kind() as i32,
            certificate_fingerprint: self
                .cert_sha256
                .as_deref()
                .map(crate::pki::fingerprint_of_digest)
                .unwrap_or_default(),
            certificate_serial: self.cert_serial.clone().unwrap_or_default(),
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
