//! The record of a finished task in the `done_tasks` column family (layout
//! in docs/worker.md), and the result bodies it keeps, reported again under
//! a new lease if the task is assigned again.
use anyhow::{Context, Result, bail};
use pgsnapman_proto::v1::{Event, EventBatch, TaskRef, event};
use prost::Message;

/// Version byte of a `done_tasks` value.
const DONE_FORMAT: u8 = 1;

pub(super) fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// What `Outbox::finished` returns about a task.
#[derive(Debug)]
pub struct Finished {
    /// What the task was (see `Done::what`).
    pub what: String,
    /// The result bodies that name the task.
    pub bodies: Vec<event::Body>,
}

/// A finished task as remembered.
#[derive(Debug, Default)]
pub(super) struct Done {
    /// The id of its last result event.
    pub event: u128,
    /// When it finished (Unix seconds).
    pub at: i64,
    /// What the task was (kind and object, e.g. `restore run 7 of <uuid>`):
    /// a task id alone could be reused by a catalog restored from a backup.
    pub what: String,
    /// The result bodies that name the task.
    pub bodies: Vec<event::Body>,
}

/// Longest `what` kept.
const MAX_WHAT: usize = 1024;

/// `done_tasks` value: version byte, the last result event id (16 bytes
/// BE), the finish time (i64 BE Unix seconds), the length of `what` (u16
/// BE) and `what` (UTF-8), then the result bodies as a protobuf
/// `EventBatch` (only `events[].body` set).
pub(super) fn encode_done(last_event: u128, at: i64, what: &str, events: Vec<Event>) -> Vec<u8> {
    let bodies = EventBatch {
        events: events
            .into_iter()
            .map(|e| Event {
                body: e.body,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut end = what.len().min(MAX_WHAT);
    while !what.is_char_boundary(end) {
        end -= 1;
    }
    let what = &what.as_bytes()[..end];
    let mut out = vec![DONE_FORMAT];
    out.extend_from_slice(&last_event.to_be_bytes());
    out.extend_from_slice(&at.to_be_bytes());
    out.extend_from_slice(&u16::try_from(what.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(what);
    out.extend_from_slice(&bodies.encode_to_vec());
    out
}

pub(super) fn decode_done(v: &[u8]) -> Result<Done> {
    let Some((&version, rest)) = v.split_first() else {
        bail!("empty record");
    };
    if version != DONE_FORMAT {
        bail!("record version {version}, this worker reads version {DONE_FORMAT}");
    }
    if rest.len() < 26 {
        bail!("record of {} bytes is too short", v.len());
    }
    let (id, rest) = rest.split_at(16);
    let (at, rest) = rest.split_at(8);
    let (len, rest) = rest.split_at(2);
    let len = usize::from(u16::from_be_bytes(len.try_into().context("length")?));
    if rest.len() < len {
        bail!("record of {} bytes is too short", v.len());
    }
    let (what, rest) = rest.split_at(len);
    let batch = EventBatch::decode(rest).context("result bodies")?;
    Ok(Done {
        event: u128::from_be_bytes(id.try_into().context("event id")?),
        at: i64::from_be_bytes(at.try_into().context("finish time")?),
        what: String::from_utf8_lossy(what).into_owned(),
        bodies: batch.events.into_iter().filter_map(|e| e.body).collect(),
    })
}

/// The task reference an event body carries, if any.
fn task_ref_mut(body: &mut event::Body) -> Option<&mut Option<TaskRef>> {
    match body {
        event::Body::DumpFinished(d) => Some(&mut d.task),
        event::Body::TaskFailed(f) => Some(&mut f.task),
        event::Body::TaskFinished(f) => Some(&mut f.task),
        event::Body::RestoreFinished(f) => Some(&mut f.task),
        event::Body::StoreVerified(v) => Some(&mut v.task),
        _ => None,
    }
}

/// The task an event body reports about.
pub(super) fn task_of(body: &event::Body) -> Option<i64> {
    let task = match body {
        event::Body::DumpFinished(d) => &d.task,
        event::Body::TaskFailed(f) => &f.task,
        event::Body::TaskFinished(f) => &f.task,
        event::Body::RestoreFinished(f) => &f.task,
        event::Body::StoreVerified(v) => &v.task,
        _ => return None,
    };
    task.as_ref().map(|t| t.task_id)
}

/// The same result bodies reported under another lease (a task assigned
/// again after it finished here).
pub fn under_lease(bodies: Vec<event::Body>, task: &TaskRef) -> Vec<event::Body> {
    bodies
        .into_iter()
        .map(|mut b| {
            if let Some(t) = task_ref_mut(&mut b)
                && t.as_ref().is_some_and(|t| t.task_id == task.task_id)
            {
                *t = Some(task.clone());
            }
            b
        })
        .collect()
}
