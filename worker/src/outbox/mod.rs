//! The durable outbox: events waiting to be uploaded to the coordinator, kept
//! in RocksDB (`<data_dir>/state`, column family `outbox`) until the
//! coordinator acknowledges them, and the results of finished tasks
//! (`done_tasks`) so that a task is never run twice. Layout: docs/worker.md.
//! Calls block on disk: async code runs them in `spawn_blocking`.
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use pgsnapman_proto::v1::{Event, event};
use prost::Message;
use rocksdb::{IteratorMode, WriteBatch};
use tokio::sync::Notify;
use uuid::Uuid;

mod done;
mod fit;
mod refused;
pub mod tool;

pub use done::Finished;
pub use done::under_lease;
use done::{decode_done, encode_done, now_secs, task_of};
pub use fit::MAX_EVENT_BYTES;
use fit::fit;
pub use refused::{Refused, list as refused, list_at as refused_at};

use crate::state::{CF_DONE, CF_OUTBOX, State, synced};

/// How long a finished task is remembered after its result was
/// acknowledged: longer than any assignment can be in flight.
pub const DONE_KEEP: Duration = Duration::from_secs(3600);

/// Whether written events are new facts for the metrics (`crate::metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Yes,
    No,
}

/// Events in id (= time) order, durable once `append` returns.
pub struct Outbox {
    state: State,
    len: AtomicU64,
    /// Highest id handed out, so that ids only grow within the process and
    /// stay above every id already stored.
    last_id: Mutex<u128>,
    notify: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("len", &self.len()).finish()
    }
}

fn key_of(bytes: &[u8]) -> Result<u128> {
    let arr: [u8; 16] = bytes
        .try_into()
        .with_context(|| format!("outbox key of {} bytes, expected 16", bytes.len()))?;
    Ok(u128::from_be_bytes(arr))
}

impl Outbox {
    /// The outbox and finished tasks kept in `state`.
    pub fn open(state: &State) -> Result<Self> {
        let (len, last) = {
            let cf = state.cf(CF_OUTBOX)?;
            let mut len = 0u64;
            let mut last = 0u128;
            for item in state.db().iterator_cf(cf, IteratorMode::Start) {
                let (k, _) = item.context("scan outbox")?;
                last = last.max(key_of(&k)?);
                len += 1;
            }
            (len, last)
        };
        Ok(Self {
            state: state.clone(),
            len: AtomicU64::new(len),
            last_id: Mutex::new(last),
            notify: Notify::new(),
        })
    }

    /// Stores an event durably (synced) and wakes the uploader.
    pub fn append(&self, body: event::Body) -> Result<Uuid> {
        let ids = self.append_all(vec![body])?;
        ids.into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no event id was assigned"))
    }

    /// Stores events durably in one synced batch, in order, and wakes the
    /// uploader.
    pub fn append_all(&self, bodies: Vec<event::Body>) -> Result<Vec<Uuid>> {
        self.write_events(bodies, Count::Yes, |_, _| Ok(()))
    }

    /// Stores a finished task's result events and remembers the task
    /// (`what` it was; `finished` returns it with the result bodies) in the
    /// same synced batch: a crash keeps both or neither.
    pub fn append_result(
        &self,
        task_id: i64,
        what: &str,
        bodies: Vec<event::Body>,
    ) -> Result<Vec<Uuid>> {
        self.write_result(task_id, what, bodies, Count::Yes)
    }

    /// `append_result` for a result reported again under a new lease (the
    /// task ran once): the metrics do not count it a second time.
    pub fn append_result_again(
        &self,
        task_id: i64,
        what: &str,
        bodies: Vec<event::Body>,
    ) -> Result<Vec<Uuid>> {
        self.write_result(task_id, what, bodies, Count::No)
    }

    fn write_result(
        &self,
        task_id: i64,
        what: &str,
        bodies: Vec<event::Body>,
        count: Count,
    ) -> Result<Vec<Uuid>> {
        let done = self.state.cf(CF_DONE)?;
        self.write_events(bodies, count, |batch, events| {
            let last = events.last().map_or(0, |e| e.0);
            // Only what completes the task is reported again.
            let bodies = events
                .iter()
                .filter(|e| e.1.body.as_ref().and_then(task_of) == Some(task_id))
                .map(|e| e.1.clone())
                .collect();
            batch.put_cf(
                done,
                task_id.to_be_bytes(),
                encode_done(last, now_secs(), what, bodies),
            );
            Ok(())
        })
    }

    /// Ids are assigned and written under one lock: otherwise a later id
    /// could be written (and uploaded, acknowledged and deleted with
    /// `delete_up_to`) before an earlier one is written, and the earlier one
    /// would be deleted unsent. `extra` adds to the same write batch.
    fn write_events(
        &self,
        bodies: Vec<event::Body>,
        count: Count,
        extra: impl FnOnce(&mut WriteBatch, &[(u128, Event)]) -> Result<()>,
    ) -> Result<Vec<Uuid>> {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let cf = self.cf()?;
        let mut last = self.last_id.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = *last;
        let mut batch = WriteBatch::default();
        let mut events = Vec::with_capacity(bodies.len());
        let now = Some(pgsnapman_proto::timestamp(chrono::Utc::now()));
        for body in bodies.into_iter().flat_map(fit) {
            // UUIDv7, strictly greater than every earlier one.
            let fresh = Uuid::now_v7().as_u128();
            next = if fresh > next { fresh } else { next + 1 };
            let id = Uuid::from_u128(next);
            let event = Event {
                event_id: id.to_string(),
                occurred_at: now,
                body: Some(body),
            };
            batch.put_cf(cf, id.as_bytes(), event.encode_to_vec());
            events.push((next, event));
        }
        extra(&mut batch, &events)?;
        self.state
            .db()
            .write_opt(batch, &synced())
            .with_context(|| format!("append {} event(s) to the outbox", events.len()))?;
        *last = next;
        drop(last);
        self.len.fetch_add(events.len() as u64, Ordering::SeqCst);
        self.notify.notify_one();
        if count == Count::Yes {
            for body in events.iter().filter_map(|e| e.1.body.as_ref()) {
                crate::metrics::get().observe(body);
            }
        }
        Ok(events.into_iter().map(|e| Uuid::from_u128(e.0)).collect())
    }

    /// The highest event id stored when called (`None`: empty). Every event
    /// appended earlier has an id at or below it.
    pub fn backlog_mark(&self) -> Option<u128> {
        let last = *self.last_id.lock().unwrap_or_else(|e| e.into_inner());
        (!self.is_empty()).then_some(last)
    }

    /// What a task this worker finished was, and its result bodies, if it
    /// is still remembered.
    pub fn finished(&self, task_id: i64) -> Result<Option<Finished>> {
        let cf = self.state.cf(CF_DONE)?;
        let Some(v) = self
            .state
            .db()
            .get_cf(cf, task_id.to_be_bytes())
            .context("read finished tasks")?
        else {
            return Ok(None);
        };
        let done = decode_done(&v)
            .with_context(|| format!("decode the finished-task record of task {task_id}"))?;
        Ok(Some(Finished {
            what: done.what,
            bodies: done.bodies,
        }))
    }

    /// Forgets finished tasks whose results were acknowledged (no longer in
    /// the outbox) and that finished more than `keep` ago. Returns how many.
    pub fn prune_finished(&self, keep: Duration) -> Result<usize> {
        let cf = self.state.cf(CF_DONE)?;
        // Events are deleted oldest first: below the oldest stored id means
        // acknowledged.
        let oldest = self.oldest_id()?.unwrap_or(u128::MAX);
        let cutoff = now_secs().saturating_sub(i64::try_from(keep.as_secs()).unwrap_or(i64::MAX));
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for item in self.state.db().iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.context("read finished tasks")?;
            // Unreadable: nothing can use it.
            let done = decode_done(&v).unwrap_or_default();
            if done.event < oldest && done.at < cutoff {
                batch.delete_cf(cf, &k);
                n += 1;
            }
        }
        if n > 0 {
            self.state
                .db()
                .write_opt(batch, &synced())
                .context("prune finished tasks")?;
        }
        Ok(n)
    }

    /// The id (a UUIDv7, as u128) of the oldest event waiting, if any.
    pub fn oldest_id(&self) -> Result<Option<u128>> {
        match self
            .state
            .db()
            .iterator_cf(self.cf()?, IteratorMode::Start)
            .next()
        {
            Some(item) => Ok(Some(key_of(&item.context("read outbox")?.0)?)),
            None => Ok(None),
        }
    }

    /// Up to `max_events` oldest events of at most `max_bytes` encoded bytes
    /// in all, but always the oldest one (an event is at most
    /// [`MAX_EVENT_BYTES`]).
    pub fn oldest_bounded(&self, max_events: usize, max_bytes: usize) -> Result<Vec<Event>> {
        let cf = self.cf()?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self
            .state
            .db()
            .iterator_cf(cf, IteratorMode::Start)
            .take(max_events)
        {
            let (k, v) = item.context("read outbox")?;
            // Framing of a repeated field: tag and length prefix.
            let size = v.len() + prost::length_delimiter_len(v.len()) + 1;
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            let event = Event::decode(&*v).with_context(|| {
                format!(
                    "decode outbox event {}",
                    Uuid::from_u128(key_of(&k).unwrap_or(0))
                )
            })?;
            out.push(event);
        }
        Ok(out)
    }

    /// Up to `n` oldest events.
    pub fn oldest(&self, n: usize) -> Result<Vec<Event>> {
        self.oldest_bounded(n, usize::MAX)
    }

    /// Deletes every event with an id up to and including `id` (synced).
    /// Returns how many were deleted.
    pub fn delete_up_to(&self, id: Uuid) -> Result<u64> {
        let cf = self.cf()?;
        let limit = id.as_u128();
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        for item in self.state.db().iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = item.context("read outbox")?;
            if key_of(&k)? > limit {
                break;
            }
            batch.delete_cf(cf, &k);
            n += 1;
        }
        if n > 0 {
            self.state
                .db()
                .write_opt(batch, &synced())
                .with_context(|| format!("delete outbox events up to {id}"))?;
            self.len.fetch_sub(n, Ordering::SeqCst);
        }
        Ok(n)
    }

    /// Events waiting.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves after the next `append` (or at once if one happened since
    /// the last wait).
    pub async fn appended(&self) {
        self.notify.notified().await;
    }

    fn cf(&self) -> Result<&rocksdb::ColumnFamily> {
        self.state.cf(CF_OUTBOX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use pgsnapman_proto::v1::{EventBatch, MessageLevel, TaskRef, WorkerMessage};

    fn open(data_dir: &std::path::Path) -> Outbox {
        Outbox::open(&State::open(&crate::state::dir(data_dir)).unwrap()).unwrap()
    }

    fn msg(text: &str) -> event::Body {
        event::Body::Message(WorkerMessage {
            level: MessageLevel::Info as i32,
            class: "TEST".into(),
            job_id: 0,
            text: text.into(),
        })
    }

    fn text_of(e: &Event) -> String {
        match &e.body {
            Some(event::Body::Message(m)) => m.text.clone(),
            other => panic!("unexpected body {other:?}"),
        }
    }

    #[test]
    fn appends_in_order_and_deletes_up_to_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let ob = open(dir.path());
        assert!(ob.is_empty());
        let ids: Vec<Uuid> = (0..50)
            .map(|i| ob.append(msg(&format!("m{i}"))).unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids must grow");
        assert_eq!(ob.len(), 50);
        let first = ob.oldest(10).unwrap();
        assert_eq!(first.len(), 10);
        assert_eq!(text_of(&first[0]), "m0");
        assert_eq!(first[9].event_id, ids[9].to_string());
        assert_eq!(ob.delete_up_to(ids[9]).unwrap(), 10);
        assert_eq!(ob.len(), 40);
        assert_eq!(text_of(&ob.oldest(1).unwrap()[0]), "m10");
        // Deleting again is a no-op.
        assert_eq!(ob.delete_up_to(ids[9]).unwrap(), 0);
        assert_eq!(ob.delete_up_to(ids[49]).unwrap(), 40);
        assert!(ob.oldest(5).unwrap().is_empty());
    }

    /// Appenders racing an uploader that deletes up to the last id it sent:
    /// every event must be seen by the uploader exactly once.
    #[test]
    fn concurrent_appends_are_never_deleted_unsent() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Arc::new(open(dir.path()));
        const THREADS: usize = 4;
        const EACH: usize = 200;
        let appenders: Vec<_> = (0..THREADS)
            .map(|t| {
                let ob = Arc::clone(&ob);
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        if i % 3 == 0 {
                            ob.append_all(vec![
                                msg(&format!("{t}-{i}a")),
                                msg(&format!("{t}-{i}b")),
                            ])
                            .unwrap();
                        } else {
                            ob.append(msg(&format!("{t}-{i}"))).unwrap();
                        }
                    }
                })
            })
            .collect();
        let expected = THREADS * (EACH + EACH.div_ceil(3));
        let mut seen = std::collections::HashSet::new();
        while seen.len() < expected {
            let batch = ob.oldest(7).unwrap();
            if let Some(last) = batch.last() {
                for e in &batch {
                    assert!(
                        seen.insert(e.event_id.clone()),
                        "seen twice: {}",
                        e.event_id
                    );
                }
                let upto = Uuid::parse_str(&last.event_id).unwrap();
                ob.delete_up_to(upto).unwrap();
            } else if appenders.iter().all(std::thread::JoinHandle::is_finished) {
                // Everything is written: an empty outbox now means lost events.
                assert!(
                    !ob.oldest(1).unwrap().is_empty(),
                    "appenders done but only {} of {expected} events seen",
                    seen.len()
                );
            }
        }
        for a in appenders {
            a.join().unwrap();
        }
        assert_eq!(seen.len(), expected);
        assert!(ob.is_empty());
    }

    #[test]
    fn events_survive_reopen_and_new_ids_sort_after_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let ob = open(dir.path());
            ob.append(msg("a")).unwrap();
            ob.append(msg("b")).unwrap()
        };
        let ob = open(dir.path());
        assert_eq!(ob.len(), 2);
        let next = ob.append(msg("c")).unwrap();
        assert!(next > last);
        let all = ob.oldest(10).unwrap();
        let texts: Vec<String> = all.iter().map(text_of).collect();
        assert_eq!(texts, ["a", "b", "c"]);
    }

    #[test]
    fn batches_are_bounded_by_bytes_but_hold_at_least_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let ob = open(dir.path());
        let big = "x".repeat(100_000);
        for i in 0..10 {
            ob.append(msg(&format!("{i}{big}"))).unwrap();
        }
        // About 100 kB each: 3 fit in 350 kB, 1000 would not.
        let batch = ob.oldest_bounded(1000, 350_000).unwrap();
        assert_eq!(batch.len(), 3);
        let bytes: usize = batch.iter().map(|e| e.encoded_len()).sum();
        assert!(bytes <= 350_000, "{bytes}");
        // One event larger than the bound still goes alone.
        assert_eq!(ob.oldest_bounded(1000, 10).unwrap().len(), 1);
        // The count bound still applies.
        assert_eq!(ob.oldest_bounded(2, usize::MAX).unwrap().len(), 2);
        // Ten of them exceed the bound, so the whole backlog takes several
        // batches, each within it.
        let all = ob.oldest_bounded(1000, 1_000_000).unwrap();
        assert_eq!(all.len(), 9);
        let framed = EventBatch {
            events: all,
            ..Default::default()
        }
        .encoded_len();
        assert!(framed <= 1_000_000, "{framed}");
    }

    #[test]
    fn an_event_over_the_limit_is_shrunk_or_replaced_at_append() {
        let dir = tempfile::tempdir().unwrap();
        let ob = open(dir.path());
        let huge = "y".repeat(MAX_EVENT_BYTES + 10);
        let dump = event::Body::DumpFinished(pgsnapman_proto::v1::DumpFinished {
            dump_uuid: "d1".into(),
            succeeded: true,
            restore_metadata_json: huge.clone(),
            ..Default::default()
        });
        ob.append_all(vec![dump, msg(&huge)]).unwrap();
        let events = ob.oldest(10).unwrap();
        assert!(events.iter().all(|e| e.encoded_len() <= MAX_EVENT_BYTES));
        // The dump row is kept without its metadata, with a note; the
        // message is cut, with a note.
        assert_eq!(events.len(), 4, "{:?}", events.len());
        match &events[0].body {
            Some(event::Body::DumpFinished(d)) => {
                assert_eq!(d.dump_uuid, "d1");
                assert!(d.restore_metadata_json.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(text_of(&events[1]).contains("restore metadata of dump d1"));
        assert!(text_of(&events[2]).len() <= 64 * 1024);
        assert!(text_of(&events[2]).ends_with("..."));
        assert!(text_of(&events[3]).contains("exceeded the"));
    }

    #[test]
    fn finished_tasks_are_remembered_durably_until_acknowledged_and_old() {
        let dir = tempfile::tempdir().unwrap();
        let task = |lease: &str| TaskRef {
            task_id: 7,
            lease_id: lease.into(),
        };
        let result = event::Body::TaskFailed(pgsnapman_proto::v1::TaskFailed {
            task: Some(task("l1")),
            error: "boom".into(),
        });
        let ids = {
            let ob = open(dir.path());
            assert!(ob.backlog_mark().is_none());
            assert!(ob.finished(7).unwrap().is_none());
            ob.append_result(7, "verify", vec![msg("note"), result])
                .unwrap()
        };
        let ob = open(dir.path());
        assert_eq!(ob.backlog_mark(), Some(ids[1].as_u128()));
        let done = ob.finished(7).unwrap().expect("remembered after reopen");
        assert_eq!(done.what, "verify");
        // Only the body that completes the task, reported under a new lease.
        let again = under_lease(done.bodies, &task("l2"));
        assert_eq!(again.len(), 1);
        match &again[0] {
            event::Body::TaskFailed(f) => {
                assert_eq!(f.task, Some(task("l2")));
                assert_eq!(f.error, "boom");
            }
            other => panic!("unexpected {other:?}"),
        }
        // Not acknowledged yet: kept however old.
        assert_eq!(ob.prune_finished(Duration::ZERO).unwrap(), 0);
        ob.delete_up_to(ids[1]).unwrap();
        assert!(ob.backlog_mark().is_none());
        // Acknowledged but recent: kept.
        assert_eq!(ob.prune_finished(Duration::from_secs(3600)).unwrap(), 0);
        assert!(ob.finished(7).unwrap().is_some());
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(ob.prune_finished(Duration::ZERO).unwrap(), 1);
        assert!(ob.finished(7).unwrap().is_none());
    }

    #[tokio::test]
    async fn append_wakes_a_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let ob = Arc::new(open(dir.path()));
        let waiter = {
            let ob = ob.clone();
            tokio::spawn(async move { ob.appended().await })
        };
        tokio::task::yield_now().await;
        ob.append(msg("x")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
