//! Scratch databases of restore verifications and their leftovers. A name
//! says which worker made it and in which run of the worker process:
//! `pgsnapman_verify_<worker tag>_<run>_<random>`. A worker drops only
//! databases with its own tag from an earlier run (a killed worker's), never
//! another worker's, never one of its running verifications, nothing else.
use std::sync::OnceLock;

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::restore::target::Target;

/// Every scratch database name starts so.
pub const PREFIX: &str = "pgsnapman_verify_";

/// This process's run: 8 hex digits, new at every start.
fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| Uuid::new_v4().simple().to_string()[..8].to_string())
}

/// 8 hex digits of FNV-1a 64 of the worker's name: stable across restarts,
/// and different workers' tags differ (but for a 1-in-4-billion clash).
pub fn worker_tag(worker: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in worker.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h >> 32)
}

/// `<PREFIX><tag>_`: the start of every name this worker makes.
fn own_prefix(worker: &str) -> String {
    format!("{PREFIX}{}_", worker_tag(worker))
}

/// A new scratch database name for `worker` (41 bytes: far from 63).
pub fn name(worker: &str) -> String {
    format!(
        "{}{}_{}",
        own_prefix(worker),
        run_id(),
        &Uuid::new_v4().simple().to_string()[..6]
    )
}

/// Whether `datname` is a scratch database `worker` made in an earlier
/// run of its process (pure).
fn is_leftover(worker: &str, run: &str, datname: &str) -> bool {
    let Some(rest) = datname.strip_prefix(&own_prefix(worker)) else {
        return false;
    };
    let Some((made_in, random)) = rest.split_once('_') else {
        return false;
    };
    let hex8 = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    hex8(made_in, 8) && hex8(random, 6) && made_in != run
}

/// Drops this worker's leftover scratch databases on the instance behind
/// `target` (connected to `admin_db`); returns the names dropped. Errors
/// are per database and logged; listing failures are returned.
pub async fn sweep(
    target: &Target,
    admin_db: &str,
    worker: &str,
    instance: &str,
    cancel: &CancellationToken,
) -> Result<Vec<String>> {
    let prefix = own_prefix(worker);
    // The prefix is [a-z0-9_] only: safe inside a literal; `left` avoids
    // LIKE's `_` wildcard.
    let sql = format!(
        "SELECT datname FROM pg_database WHERE left(datname, {}) = '{prefix}' ORDER BY 1",
        prefix.len()
    );
    let out = target.sql(admin_db, &[&sql], cancel).await?;
    let mut dropped = Vec::new();
    for datname in out.lines().map(str::trim) {
        if !is_leftover(worker, run_id(), datname) {
            continue;
        }
        match target.drop_database(admin_db, datname).await {
            Ok(_) => {
                tracing::warn!(database = %datname, instance, "dropped a scratch database a killed verification left behind");
                dropped.push(datname.to_string());
            }
            Err(e) => {
                tracing::error!(database = %datname, instance, "cannot drop a leftover scratch database; drop it by hand: {e:#}");
            }
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_worker_and_the_run() {
        let n = name("w1");
        assert!(
            n.starts_with(&format!("{PREFIX}{}_", worker_tag("w1"))),
            "{n}"
        );
        assert_eq!(n.len(), PREFIX.len() + 8 + 1 + 8 + 1 + 6);
        assert_ne!(worker_tag("w1"), worker_tag("w2"));
        assert_eq!(worker_tag("w1"), worker_tag("w1"));
        // Made in this run: not a leftover.
        assert!(!is_leftover("w1", run_id(), &n));
        // The same name made by an earlier run is.
        assert!(is_leftover("w1", "0badcafe", &n));
    }

    #[test]
    fn only_own_well_formed_names_are_leftovers() {
        let tag = worker_tag("w1");
        let old = format!("{PREFIX}{tag}_0badcafe_abc123");
        assert!(is_leftover("w1", "11111111", &old));
        assert!(!is_leftover("w2", "11111111", &old), "another worker's");
        for other in [
            format!("{PREFIX}deadbeef"),
            format!("{PREFIX}{tag}_0badcafe_abc123_x"),
            format!("{PREFIX}{tag}_0badcafe"),
            format!("{PREFIX}{tag}_0badcafe_ABCXYZ"),
            format!("{PREFIX}{tag}_0badcaf_abc123"),
            "postgres".to_string(),
            format!("x{PREFIX}{tag}_0badcafe_abc123"),
        ] {
            assert!(!is_leftover("w1", "11111111", &other), "{other}");
        }
    }
}
