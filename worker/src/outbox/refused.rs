//! Events the coordinator refused (foreign or invalid: it names the event in
//! the status, `pgsnapman_proto::REFUSED_EVENT_KEY`) are moved out of the
//! outbox into `refused_events`, kept with the reason, so that one bad event
//! cannot wedge every later one and nothing is thrown away. An operator lists
//! them and queues them again (`pgsnapman-worker outbox refused|requeue`).
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::v1::Event;
use prost::Message;
use rocksdb::{IteratorMode, WriteBatch};
use uuid::Uuid;

use super::{Outbox, fit::kind_of, key_of};
use crate::state::{CF_REFUSED, State, synced};

/// Longest reason kept with a refused event (the coordinator's one line).
const MAX_REASON_BYTES: usize = 1000;

/// One refused event, as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub id: Uuid,
    /// When it was set aside (seconds since the epoch).
    pub refused_at: u64,
    pub reason: String,
    pub event: Event,
}

impl Refused {
    /// `DumpFinished`, `TaskFinished`, … (or `empty`).
    pub fn kind(&self) -> &'static str {
        self.event.body.as_ref().map_or("empty", kind_of)
    }
}

/// Value layout: refused_at (u64 BE), reason length (u32 BE), reason (UTF-8),
/// the event as protobuf.
fn encode(refused_at: u64, reason: &str, event: &[u8]) -> Vec<u8> {
    let reason = cut(reason);
    let mut v = Vec::with_capacity(12 + reason.len() + event.len());
    v.extend_from_slice(&refused_at.to_be_bytes());
    v.extend_from_slice(&u32::try_from(reason.len()).unwrap_or(0).to_be_bytes());
    v.extend_from_slice(reason.as_bytes());
    v.extend_from_slice(event);
    v
}

fn decode(key: &[u8], v: &[u8]) -> Result<Refused> {
    let id = Uuid::from_u128(key_of(key)?);
    let bad = || anyhow::anyhow!("refused event {id}: truncated record of {} bytes", v.len());
    let at: [u8; 8] = v.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
    let len: [u8; 4] = v
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    let end = 12 + u32::from_be_bytes(len) as usize;
    let reason = v.get(12..end).ok_or_else(bad)?;
    let event = Event::decode(v.get(end..).ok_or_else(bad)?)
        .with_context(|| format!("decode refused event {id}"))?;
    Ok(Refused {
        id,
        refused_at: u64::from_be_bytes(at),
        reason: String::from_utf8_lossy(reason).into_owned(),
        event,
    })
}

/// `reason` cut to [`MAX_REASON_BYTES`] on a character boundary.
fn cut(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_BYTES {
        return reason;
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Every refused event of `state`, oldest first. Works on a read-only state
/// (beside a running worker); a state from before this feature has none.
pub fn list(state: &State) -> Result<Vec<Refused>> {
    let Ok(cf) = state.cf(CF_REFUSED) else {
        return Ok(Vec::new());
    };
    state
        .db()
        .iterator_cf(cf, IteratorMode::Start)
        .map(|item| {
            let (k, v) = item.context("read refused events")?;
            decode(&k, &v)
        })
        .collect()
}

impl Outbox {
    /// Moves event `id` from the outbox to the refused events with `reason`
    /// (one synced batch). False when the outbox no longer holds it.
    pub fn set_aside(&self, id: Uuid, reason: &str) -> Result<bool> {
        let outbox = self.cf()?;
        let refused = self.state.cf(CF_REFUSED)?;
        let Some(event) = self
            .state
            .db()
            .get_cf(outbox, id.as_bytes())
            .with_context(|| format!("read outbox event {id}"))?
        else {
            return Ok(false);
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            refused,
            id.as_bytes(),
            encode(
                u64::try_from(super::now_secs()).unwrap_or(0),
                reason,
                &event,
            ),
        );
        batch.delete_cf(outbox, id.as_bytes());
        self.state
            .db()
            .write_opt(batch, &synced())
            .with_context(|| format!("set aside refused event {id}"))?;
        self.len.fetch_sub(1, Ordering::SeqCst);
        Ok(true)
    }

    /// Puts every refused event back into the outbox under its own id (so
    /// it is sent again, before newer events). Returns how many.
    pub fn requeue_refused(&self) -> Result<u64> {
        let outbox = self.cf()?;
        let refused = self.state.cf(CF_REFUSED)?;
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        for r in list(&self.state)? {
            batch.put_cf(outbox, r.id.as_bytes(), r.event.encode_to_vec());
            batch.delete_cf(refused, r.id.as_bytes());
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        self.state
            .db()
            .write_opt(batch, &synced())
            .context("queue the refused events again")?;
        self.len.fetch_add(n, Ordering::SeqCst);
        self.notify.notify_one();
        Ok(n)
    }
}

/// The refused events of the worker whose state is at `path`, opened
/// read-only (beside a running worker).
pub fn list_at(path: &std::path::Path) -> Result<Vec<Refused>> {
    if !path.exists() {
        bail!("{} does not exist: no worker state there", path.display());
    }
    list(&State::open_read_only(path)?)
}

#[cfg(test)]
mod tests {
    use pgsnapman_proto::v1::{MessageLevel, WorkerMessage, event};

    use super::*;

    fn msg(text: &str) -> event::Body {
        event::Body::Message(WorkerMessage {
            level: MessageLevel::Info as i32,
            class: "T".into(),
            job_id: 0,
            text: text.into(),
        })
    }

    fn texts(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match &e.body {
                Some(event::Body::Message(m)) => m.text.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_refused_event_is_kept_aside_and_can_be_queued_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&crate::state::dir(dir.path())).unwrap();
        let outbox = Outbox::open(&state).unwrap();
        let ids = outbox
            .append_all(vec![msg("a"), msg("bad"), msg("c")])
            .unwrap();
        let long = "é".repeat(MAX_REASON_BYTES);
        assert!(outbox.set_aside(ids[1], &long).unwrap());
        assert!(!outbox.set_aside(ids[1], "again").unwrap(), "moved once");
        assert_eq!(outbox.len(), 2);
        assert_eq!(texts(&outbox.oldest(10).unwrap()), ["a", "c"]);

        let refused = list(&state).unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].id, ids[1]);
        assert_eq!(refused[0].kind(), "WorkerMessage");
        assert_eq!(texts(std::slice::from_ref(&refused[0].event)), ["bad"]);
        assert!(refused[0].reason.len() <= MAX_REASON_BYTES);
        assert!(refused[0].reason.starts_with('é'));

        assert_eq!(outbox.requeue_refused().unwrap(), 1);
        assert!(list(&state).unwrap().is_empty());
        assert_eq!(outbox.len(), 3);
        // Back under its own id: in its old place, before the newer ones.
        assert_eq!(texts(&outbox.oldest(10).unwrap()), ["a", "bad", "c"]);
        assert_eq!(outbox.requeue_refused().unwrap(), 0);
    }

    #[test]
    fn refused_events_survive_a_reopen_and_read_beside_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::state::dir(dir.path());
        let id = {
            let state = State::open(&path).unwrap();
            let outbox = Outbox::open(&state).unwrap();
            let id = outbox.append(msg("x")).unwrap();
            outbox.set_aside(id, "task 9 belongs to worker b").unwrap();
            id
        };
        let state = State::open(&path).unwrap();
        assert_eq!(Outbox::open(&state).unwrap().len(), 0);
        let seen = list_at(&path).unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].id, seen[0].reason.as_str()),
            (id, "task 9 belongs to worker b")
        );
    }

    #[test]
    fn truncated_records_are_an_error_not_a_panic() {
        for v in [
            &[][..],
            &[0u8; 8][..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 1][..],
        ] {
            assert!(decode(&[0u8; 16], v).is_err());
        }
    }
}
