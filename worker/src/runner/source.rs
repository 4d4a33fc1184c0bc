//! What the worker asks a source server around a dump: the probe (version,
//! size, recovery), the dump-on-demand marker, and pausing WAL replay on a
//! standby. Runs SQL through a `Session`; knows nothing of the store.
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::connection::Session;
use super::process::excerpt;

/// The probe query: `SHOW server_version` text, its number, and the size of
/// the connected database.
pub(crate) const PROBE_SQL: &str = "SELECT current_setting('server_version'), \
     current_setting('server_version_num'), pg_database_size(current_database()), \
     pg_is_in_recovery()";

/// Pause state of WAL replay on a standby (PostgreSQL 14 and later report
/// whether the pause has taken effect; older ones only that it was requested).
const PAUSE_STATE_SQL: &str = "SELECT CASE WHEN current_setting('server_version_num')::int >= 140000 \
     THEN pg_get_wal_replay_pause_state() \
     ELSE CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END END";

/// What the probe learned about the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub version: String,
    pub version_num: u32,
    pub database_bytes: i64,
    /// The server is a standby (in recovery).
    pub in_recovery: bool,
}

impl ServerInfo {
    pub fn major(&self) -> u32 {
        self.version_num / 10000
    }
}

/// Parses psql's unaligned output `version|version_num|size`.
pub fn parse_probe(out: &str) -> Result<ServerInfo> {
    let line = out.trim();
    let mut parts = line.rsplitn(4, '|');
    let (Some(recovery), Some(size), Some(num), Some(version)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("unexpected probe output {:?}", excerpt(line));
    };
    let version_num: u32 = num
        .trim()
        .parse()
        .with_context(|| format!("server_version_num {num:?} is not a number"))?;
    let database_bytes: i64 = size.trim().parse().unwrap_or(-1);
    Ok(ServerInfo {
        version: version.to_string(),
        version_num,
        database_bytes,
        in_recovery: recovery.trim() == "t",
    })
}

/// Whether a TAKE_BACKUP value asks for a dump (`None`) or not (why).
fn demand_decision(val: &str) -> Option<String> {
    let v = val.trim();
    if v.is_empty() {
        Some("no dump requested: pgsnapman.metainfo has no TAKE_BACKUP row".into())
    } else if v.eq_ignore_ascii_case("no") {
        Some("no dump requested: pgsnapman.metainfo TAKE_BACKUP is NO".into())
    } else {
        None
    }
}

/// Reads the dump-on-demand marker in `database`: `None` when the source
/// asks for a dump, otherwise why not. The marker is never created by
/// pgsnapman.
pub(crate) async fn demand(session: &Session, database: &str) -> Result<Option<String>> {
    let exists = session
        .run_uncancelled(
            database,
            &["SELECT to_regclass('pgsnapman.metainfo') IS NOT NULL"],
        )
        .await?;
    if exists != "t" {
        return Ok(Some(
            "no dump requested: the source has no table pgsnapman.metainfo (see docs/worker.md, dump on demand)"
                .into(),
        ));
    }
    let val = session
        .run_uncancelled(
            database,
            &["SELECT val FROM pgsnapman.metainfo WHERE key = 'TAKE_BACKUP'"],
        )
        .await?;
    Ok(demand_decision(&val))
}

/// Pauses WAL replay (the statement only).
pub(crate) async fn pause_replay(session: &Session, database: &str) -> Result<()> {
    session
        .run_uncancelled(database, &["SELECT pg_wal_replay_pause()"])
        .await?;
    Ok(())
}

/// Resumes WAL replay.
pub(crate) async fn resume_replay(session: &Session, database: &str) -> Result<()> {
    session
        .run_uncancelled(database, &["SELECT pg_wal_replay_resume()"])
        .await?;
    Ok(())
}

/// Waits (up to 30 s) until a requested pause of WAL replay took effect.
pub(crate) async fn wait_for_pause(session: &Session, database: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = session
            .run_uncancelled(database, &[PAUSE_STATE_SQL])
            .await?;
        if state == "paused" {
            tracing::info!("WAL replay paused on the standby");
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("WAL replay did not pause within 30s (state: {state})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_marker_values() {
        assert!(demand_decision("").is_some());
        assert!(demand_decision(" no\n").is_some());
        assert!(demand_decision("NO").is_some());
        assert_eq!(demand_decision("YES"), None);
        assert_eq!(demand_decision("please"), None);
    }
    #[test]
    fn probe_output_is_parsed() {
        let i = parse_probe("15.14 (Debian 15.14-0+deb12u1)|150014|7890123|f\n").unwrap();
        assert!(!i.in_recovery);
        assert!(parse_probe("15.1|150001|1|t").unwrap().in_recovery);
        assert_eq!(i.version, "15.14 (Debian 15.14-0+deb12u1)");
        assert_eq!(i.major(), 15);
        assert_eq!(i.database_bytes, 7_890_123);
        assert_eq!(parse_probe("9.6.24|90624|1|f").unwrap().major(), 9);
        assert!(parse_probe("garbage").is_err());
    }
}
