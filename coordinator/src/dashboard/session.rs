//! Dashboard sessions: a random id in an HttpOnly cookie maps (in memory,
//! server-side) to the caller, the SHA-256 of its token (re-checked on every
//! request, so a revoked token ends its sessions) and a CSRF token. Bounded
//! in number and lifetime; never holds the token itself.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::auth::Caller;

/// Name of the session cookie.
pub const COOKIE: &str = "pgsnapman_session";
/// Random bytes of a session id and of a CSRF token.
const RANDOM_BYTES: usize = 32;

/// One logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub token_sha256: [u8; 32],
    pub csrf: String,
    expires: Instant,
}

/// The sessions of this coordinator process (a restart logs everyone out).
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    ttl: Duration,
    max: usize,
}

fn random() -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            ttl,
            max,
        }
    }

    /// Opens a session; `Err` when `max` unexpired sessions are open.
    pub fn open(&self, caller: Caller, token_sha256: [u8; 32]) -> Result<String, String> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max {
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= self.max {
            return Err(format!(
                "{} dashboard sessions are open (dashboard.max_sessions); log out elsewhere or wait for one to expire",
                self.max
            ));
        }
        let id = random();
        let session = Session {
            caller,
            token_sha256,
            csrf: random(),
            expires: now + self.ttl,
        };
        map.insert(id.clone(), session);
        Ok(id)
    }

    /// The unexpired session `id` (an expired one is removed).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
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
    use crate::auth::Role;

    fn caller() -> Caller {
        Caller {
            name: "ci".into(),
            role: Role::Viewer,
        }
    }

    #[test]
    fn sessions_are_bounded_and_expire() {
        let s = Sessions::new(Duration::from_secs(60), 2);
        let a = s.open(caller(), [0; 32]).expect("first");
        let b = s.open(caller(), [0; 32]).expect("second");
        assert_ne!(a, b);
        let err = s.open(caller(), [0; 32]).unwrap_err();
        assert!(err.contains("dashboard.max_sessions"), "{err}");
        assert_ne!(s.get(&a).expect("open").csrf, s.get(&b).expect("open").csrf);
        s.close(&a);
        assert!(s.get(&a).is_none());
        s.open(caller(), [0; 32]).expect("a slot was freed");

        let short = Sessions::new(Duration::ZERO, 1);
        let id = short.open(caller(), [0; 32]).expect("open");
        assert!(short.get(&id).is_none(), "expired at once");
        short
            .open(caller(), [0; 32])
            .expect("the expired one is purged");
    }

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
