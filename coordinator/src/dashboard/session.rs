//! Dashboard sessions: a random id in an HttpOnly cookie names a row of
//! `dashboard_sessions` (only the id's SHA-256 is stored) shared by every
//! coordinator on the catalog: the token's row (re-read on every request,
//! so a revoked token ends its sessions) and a CSRF token. Bounded in
//! number and lifetime; never holds the token itself.
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use rand::RngCore;

use crate::auth::{Caller, Role};
use crate::catalog::{Catalog, OpenRefused};

/// Name of the session cookie.
pub const COOKIE: &str = "pgsnapman_session";
/// Random bytes of a session id and of a CSRF token.
const RANDOM_BYTES: usize = 32;

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
}

/// The sessions of every coordinator on this catalog (a restart keeps them).
pub struct Sessions {
    catalog: Catalog,
    ttl: Duration,
    max: usize,
}

fn random() -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the catalog keeps of a session id.
fn id_hash(id: &str) -> [u8; 32] {
    crate::auth::token::sha256(id)
}

impl Sessions {
    pub fn new(catalog: Catalog, ttl: Duration, max: usize) -> Self {
        Self { catalog, ttl, max }
    }

    /// Opens a session for the token whose SHA-256 is `token_sha256`; its
    /// id. 503 when `max` unexpired sessions are open.
    pub async fn open(&self, token_sha256: [u8; 32]) -> Result<String, (StatusCode, String)> {
        let id = random();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::hours(8));
        let max = i64::try_from(self.max).unwrap_or(i64::MAX);
        let opened = self
            .catalog
            .open_dashboard_session(
                &id_hash(&id),
                &token_sha256,
                &random(),
                chrono::Utc::now() + ttl,
                max,
            )
            .await;
        match opened {
            Ok(Ok(())) => Ok(id),
            Ok(Err(OpenRefused::Full)) => Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{} dashboard sessions are open (dashboard.max_sessions); log out elsewhere or wait for one to expire",
                    self.max
                ),
            )),
            Ok(Err(OpenRefused::NoToken)) => Err((
                StatusCode::UNAUTHORIZED,
                "login refused: the token was removed".into(),
            )),
            Err(e) => {
                tracing::warn!("dashboard: open a session: {e}");
                Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the catalog did not answer (see the coordinator's log)".into(),
                ))
            }
        }
    }

    /// The unexpired session `id` whose token is still usable (not revoked,
    /// not expired since the login); a session of an unusable token is
    /// deleted.
    pub async fn get(&self, id: &str) -> Option<Session> {
        let hash = id_hash(id);
        let row = match self.catalog.dashboard_session(&hash).await {
            Ok(row) => row?,
            Err(e) => {
                tracing::warn!("dashboard: look up a session: {e}");
                return None;
            }
        };
        let usable = row.revoked_at.is_none()
            && row
                .token_expires_at
                .is_none_or(|at| at > chrono::Utc::now());
        let role = Role::from_label(&row.role).filter(|_| usable);
        let Some(role) = role else {
            self.close(id).await;
            return None;
        };
        Some(Session {
            caller: Caller {
                name: row.token_name,
                role,
            },
            csrf: row.csrf,
        })
    }

    pub async fn close(&self, id: &str) {
        if let Err(e) = self.catalog.close_dashboard_session(&id_hash(id)).await {
            tracing::warn!("dashboard: close a session: {e}");
        }
    }

    /// Seconds a new session lives (the cookie's Max-Age).
    pub fn ttl_seconds(&self) -> u64 {
        self.ttl.as_secs()
    }
}

/// The session id in a `Cookie` header, if any.
pub fn cookie_value(header: Option<&str>) -> Option<&str> {
    header?.split(';').find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then_some(value)
    })
}

/// Compares two strings in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_comparison() {
        assert_eq!(
            cookie_value(Some("a=b; pgsnapman_session=xyz")),
            Some("xyz")
        );
        assert_eq!(cookie_value(Some("pgsnapman_session=")), None);
        assert_eq!(cookie_value(Some("other=1")), None);
        assert_eq!(cookie_value(None), None);
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
