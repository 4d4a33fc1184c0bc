//! Operator tokens (only their sha256 is stored) and the append-only audit
//! log. The rules (who may do what, how a token is made and checked) live in
//! `crate::auth`; this file only reads and writes rows.
use chrono::{DateTime, Utc};
use pgsnapman_proto::model::quoted;

use super::Catalog;
use crate::error::{ApiError, ApiResult, is_unique_violation};
use crate::rows::{AUDIT_COLUMNS, AuditRow, TOKEN_COLUMNS, TokenRow};

/// One audit row to append (`Catalog::audit`).
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Token name, `cert:<name>` for an operator certificate,
    /// `worker:<name>` for a worker certificate, '' when unknown.
    pub actor: String,
    /// Method name (`RestoreNow`).
    pub method: String,
    /// The request, secrets redacted (`pgsnapman_proto::redact_json`).
    pub args_json: serde_json::Value,
    /// ip:port of the caller.
    pub peer: Option<String>,
    pub ok: bool,
    /// '' when ok, else the error line the caller got.
    pub detail: String,
}

/// Filters of `pgsnap audit list`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub method: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub failed: bool,
    pub limit: i64,
}

/// Longest `detail` kept (an error line that repeats an input is cut).
const MAX_DETAIL_CHARS: usize = 1000;

/// A token or certificate name in use (tokens and certificates share them).
fn name_taken(name: &str) -> ApiError {
    ApiError::Exists(format!(
        "a token or certificate named {} exists already (names stay taken after revocation)",
        quoted(name)
    ))
}

/// Text Postgres can store: no NUL, at most `max` characters.
fn storable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.replace('\0', "\u{FFFD}")
}

impl Catalog {
    /// Stores a new token (its sha256 only). A taken name is `Exists`.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        sha256: &[u8],
        expires_at: Option<DateTime<Utc>>,
        created_by: &str,
    ) -> ApiResult<TokenRow> {
        let res = sqlx::query_as::<_, TokenRow>(&format!(
            "INSERT INTO api_tokens (name, role, token_sha256, expires_at, created_by) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(role)
        .bind(sha256)
        .bind(expires_at)
        .bind(created_by)
        .fetch_one(&self.pool)
        .await;
        match res {
            Ok(row) => Ok(row),
            Err(e) if is_unique_violation(&e) => Err(name_taken(name)),
            Err(e) => Err(e.into()),
        }
    }

    /// The token with this sha256, whatever its state (the caller checks
    /// revocation and expiry, so that it can say which).
    pub async fn token_by_sha256(&self, sha256: &[u8]) -> ApiResult<Option<TokenRow>> {
        self.credential_by("token_sha256", sha256).await
    }

    /// The row whose `column` (`token_sha256` or `cert_sha256`) is `sha256`.
    async fn credential_by(&self, column: &str, sha256: &[u8]) -> ApiResult<Option<TokenRow>> {
        Ok(sqlx::query_as::<_, TokenRow>(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE {column} = $1"
        ))
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stores an operator certificate (its SHA-256, serial and `source`,
    /// `issued` or `registered`) in the tokens' name space. A taken name or
    /// a certificate registered already is `Exists`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_certificate(
        &self,
        name: &str,
        role: &str,
        cert_sha256: &[u8],
        serial: &str,
        source: &str,
        expires_at: DateTime<Utc>,
        created_by: &str,
    ) -> ApiResult<TokenRow> {
        let res = sqlx::query_as::<_, TokenRow>(&format!(
            "INSERT INTO api_tokens (name, role, cert_sha256, cert_serial, cert_source, \
             expires_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(role)
        .bind(cert_sha256)
        .bind(serial)
        .bind(source)
        .bind(expires_at)
        .bind(created_by)
        .fetch_one(&self.pool)
        .await;
        match res {
            Ok(row) => Ok(row),
            Err(e) if is_unique_violation(&e) => {
                let by_cert = sqlx::query_scalar::<_, String>(
                    "SELECT name FROM api_tokens WHERE cert_sha256 = $1",
                )
                .bind(cert_sha256)
                .fetch_optional(&self.pool)
                .await?;
                Err(match by_cert {
                    Some(other) => ApiError::Exists(format!(
                        "this certificate is registered already, as {}",
                        quoted(&other)
                    )),
                    None => name_taken(name),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The operator certificate with this SHA-256 (of its DER), whatever
    /// its state.
    pub async fn token_by_cert_sha256(&self, sha256: &[u8]) -> ApiResult<Option<TokenRow>> {
        self.credential_by("cert_sha256", sha256).await
    }

    /// Notes a use of the token, at most once a minute (a busy token does
    /// not write at every call).
    pub async fn touch_token(&self, id: i64) -> ApiResult<()> {
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = now() WHERE id = $1 \
             AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_tokens(&self) -> ApiResult<Vec<TokenRow>> {
        Ok(sqlx::query_as::<_, TokenRow>(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Revokes a token or operator certificate by name (the next call with
    /// it is refused). Revoking
    /// a revoked token keeps its first revocation time.
    pub async fn revoke_token(&self, name: &str) -> ApiResult<TokenRow> {
        sqlx::query_as::<_, TokenRow>(&format!(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) \
             WHERE name = $1 RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("no token or certificate named {}", quoted(name)))
        })
    }

    /// True when some admin token is neither revoked nor expired. Admin
    /// certificates do not count: losing a certificate's key never locks
    /// the admins out (the bootstrap token is made again).
    pub async fn has_usable_admin_token(&self) -> ApiResult<bool> {
        Ok(sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE role = 'admin' \
             AND token_sha256 IS NOT NULL \
             AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()))",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Appends one audit row. A failure to write it is logged as an ERROR
    /// (a human must look) and not returned: the call it records has
    /// already happened or been refused.
    pub async fn audit(&self, entry: AuditEntry) {
        let res = sqlx::query(
            "INSERT INTO audit_log (actor, method, args, peer, ok, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(storable(&entry.actor, 200))
        .bind(storable(&entry.method, 200))
        .bind(&entry.args_json)
        .bind(entry.peer.as_deref().map(|p| storable(p, 200)))
        .bind(entry.ok)
        .bind(storable(&entry.detail, MAX_DETAIL_CHARS))
        .execute(&self.pool)
        .await;
        if let Err(e) = res {
            tracing::error!(
                actor = %entry.actor,
                method = %entry.method,
                ok = entry.ok,
                "audit row not written: {e}"
            );
        }
    }

    /// Deletes audit rows older than `keep` (`retention.audit`).
    pub async fn prune_audit(&self, keep: std::time::Duration) -> ApiResult<u64> {
        self.prune_table("audit_log", "at", keep).await
    }

    /// Audit rows matching `f`, newest first.
    pub async fn list_audit(&self, f: &AuditFilter) -> ApiResult<Vec<AuditRow>> {
        Ok(sqlx::query_as::<_, AuditRow>(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log \
             WHERE ($1::text IS NULL OR actor = $1) \
               AND ($2::text IS NULL OR method = $2) \
               AND ($3::timestamptz IS NULL OR at >= $3) \
               AND ($4::timestamptz IS NULL OR at < $4) \
               AND (NOT $5 OR NOT ok) \
             ORDER BY at DESC, id DESC LIMIT $6"
        ))
        .bind(f.actor.as_deref())
        .bind(f.method.as_deref())
        .bind(f.since)
        .bind(f.until)
        .bind(f.failed)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_text_has_no_nul_and_is_cut() {
        assert_eq!(storable("a\0b", 10), "a\u{FFFD}b");
        assert_eq!(storable("abcdef", 3), "abc…");
        assert_eq!(storable("abc", 3), "abc");
    }
}
