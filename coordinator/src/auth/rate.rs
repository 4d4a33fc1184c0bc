//! Token buckets for the AdminService: one per operator token, and one per
//! peer IP address for calls that fail to authenticate (so that garbage
//! tokens cannot make the catalog look up tokens at will). In memory, per
//! coordinator; both maps are bounded.
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Most peer addresses with a partly spent bucket that are remembered; when
/// full, refilled buckets are forgotten, and if none is, a new peer's failed
/// call is refused as over the limit (docs/security-auth.md).
pub const MAX_PEERS: usize = 10_000;
/// Most token buckets (tokens are made by admins; this only bounds memory).
const MAX_TOKENS: usize = 100_000;

/// Rate and burst of one kind of bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// The limits of the AdminService (config `[admin]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Per operator token.
    pub token: Rate,
    /// Per peer IP, for calls that fail to authenticate.
    pub unauthenticated: Rate,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * f64::from(rate.per_second)).min(f64::from(rate.burst));
        self.at = now;
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.tokens >= f64::from(rate.burst)
    }
}

/// Buckets keyed by `K`, at most `max` of them.
struct Buckets<K> {
    rate: Rate,
    max: usize,
    map: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    fn new(rate: Rate, max: usize) -> Self {
        Self {
            rate,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket; false when it is empty.
    fn take(&self, key: &K, now: Instant) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(key) && map.len() >= self.max {
            map.retain(|_, b| !b.is_full(self.rate, now));
            if map.len() >= self.max {
                return false;
            }
        }
        let b = map
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(self.rate, now));
        b.refill(self.rate, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True if `key` could take a request now (takes nothing).
    fn has_credit(&self, key: &K, now: Instant) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key) {
            None => true,
            Some(b) => {
                let mut b = *b;
                b.refill(self.rate, now);
                b.tokens >= 1.0
            }
        }
    }
}

/// The AdminService's limiter.
pub struct Limiter {
    limits: RateLimits,
    tokens: Buckets<String>,
    peers: Buckets<Option<IpAddr>>,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            tokens: Buckets::new(limits.token, MAX_TOKENS),
            peers: Buckets::new(limits.unauthenticated, MAX_PEERS),
        }
    }

    /// One call with token `name`; `Err` is the reason for the caller.
    pub fn take_token(&self, name: &str, now: Instant) -> Result<(), String> {
        if self.tokens.take(&name.to_string(), now) {
            Ok(())
        } else {
            Err(format!(
                "rate limit of {} requests/s for token {name} exceeded; retry later",
                self.limits.token.per_second
            ))
        }
    }

    /// Before looking a token up: `Err` when `peer` has spent its allowance
    /// of failed authentications.
    pub fn check_peer(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), String> {
        if self.peers.has_credit(&peer, now) {
            Ok(())
        } else {
            Err(self.peer_reason(peer))
        }
    }

    /// One failed authentication from `peer`; `Err` when over its limit.
    pub fn take_peer(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), String> {
        if self.peers.take(&peer, now) {
            Ok(())
        } else {
            Err(self.peer_reason(peer))
        }
    }

    fn peer_reason(&self, peer: Option<IpAddr>) -> String {
        let from = peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string());
        format!(
            "rate limit of {} unauthenticated requests/s from {from} exceeded; retry later",
            self.limits.unauthenticated.per_second
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter() -> Limiter {
        Limiter::new(RateLimits {
            token: Rate {
                per_second: 2,
                burst: 3,
            },
            unauthenticated: Rate {
                per_second: 1,
                burst: 2,
            },
        })
    }

    #[test]
    fn a_token_gets_its_burst_then_its_rate() {
        let l = limiter();
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take_token("ops", t0).unwrap();
        }
        let err = l.take_token("ops", t0).unwrap_err();
        assert_eq!(
            err,
            "rate limit of 2 requests/s for token ops exceeded; retry later"
        );
        // Another token has its own bucket.
        l.take_token("ci", t0).unwrap();
        // 2/s: half a second later, one more.
        let t1 = t0 + Duration::from_millis(500);
        l.take_token("ops", t1).unwrap();
        assert!(l.take_token("ops", t1).is_err());
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            l.take_token("ops", t2).unwrap();
        }
        assert!(l.take_token("ops", t2).is_err());
    }

    #[test]
    fn failed_authentications_spend_the_peers_bucket() {
        let l = limiter();
        let t0 = Instant::now();
        let a: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let b: Option<IpAddr> = Some("192.0.2.2".parse().unwrap());
        l.check_peer(a, t0).unwrap();
        l.take_peer(a, t0).unwrap();
        l.take_peer(a, t0).unwrap();
        let err = l.check_peer(a, t0).unwrap_err();
        assert!(err.contains("from 192.0.2.1"), "{err}");
        assert!(l.take_peer(a, t0).is_err());
        l.check_peer(b, t0).unwrap();
        l.check_peer(a, t0 + Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn the_peer_map_is_bounded() {
        let rate = Rate {
            per_second: 1,
            burst: 1,
        };
        let buckets: Buckets<u32> = Buckets::new(rate, 2);
        let t0 = Instant::now();
        assert!(buckets.take(&1, t0));
        assert!(buckets.take(&2, t0));
        // Full of spent buckets: a third peer is refused…
        assert!(!buckets.take(&3, t0));
        // …until the others have refilled and can be forgotten.
        assert!(buckets.take(&3, t0 + Duration::from_secs(2)));
        assert!(buckets.map.lock().unwrap().len() <= 2);
    }
}
