//! Dashboard sessions (`dashboard_sessions`, migration 0029): rows keyed by
//! the SHA-256 of the session id, shared by every coordinator on the
//! catalog. The rules (lifetime, how many, who) live in `crate::dashboard`;
//! this file only reads and writes rows.
use chrono::{DateTime, Utc};

use super::Catalog;
use crate::error::ApiResult;

/// An open session with its token's current row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub token_name: String,
    pub role: String,
    pub csrf: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub token_expires_at: Option<DateTime<Utc>>,
}

/// Why a session was not opened.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenRefused {
    /// `max` unexpired sessions are open on this catalog.
    Full,
    /// The token's row is gone (removed between the check and now).
    NoToken,
}

impl Catalog {
    /// Opens a session for the token whose SHA-256 is `token_sha256`: first
    /// deletes the expired sessions, then refuses when `max` are open. The
    /// table is locked for the count and insert, so that coordinators that
    /// log in at once cannot pass `max` together.
    pub async fn open_dashboard_session(
        &self,
        id_sha256: &[u8; 32],
        token_sha256: &[u8; 32],
        csrf: &str,
        expires_at: DateTime<Utc>,
        max: i64,
    ) -> ApiResult<Result<(), OpenRefused>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE dashboard_sessions IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= now()")
            .execute(&mut *tx)
            .await?;
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM dashboard_sessions")
            .fetch_one(&mut *tx)
            .await?;
        if open >= max {
            tx.commit().await?;
            return Ok(Err(OpenRefused::Full));
        }
        let inserted = sqlx::query(
            "INSERT INTO dashboard_sessions (id_sha256, token_id, csrf, expires_at) \
             SELECT $1, id, $3, $4 FROM api_tokens WHERE token_sha256 = $2",
        )
        .bind(&id_sha256[..])
        .bind(&token_sha256[..])
        .bind(csrf)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(Err(OpenRefused::NoToken));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// The unexpired session whose id has this SHA-256, with its token's
    /// row as it is now.
    pub async fn dashboard_session(&self, id_sha256: &[u8; 32]) -> ApiResult<Option<SessionRow>> {
        Ok(sqlx::query_as::<_, SessionRow>(
            "SELECT t.name AS token_name, t.role, s.csrf, t.revoked_at, \
               t.expires_at AS token_expires_at \
             FROM dashboard_sessions s JOIN api_tokens t ON t.id = s.token_id \
             WHERE s.id_sha256 = $1 AND s.expires_at > now()",
        )
        .bind(&id_sha256[..])
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Ends a session (log out, or its token was revoked).
    pub async fn close_dashboard_session(&self, id_sha256: &[u8; 32]) -> ApiResult<()> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE id_sha256 = $1")
            .bind(&id_sha256[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
