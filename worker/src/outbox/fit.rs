//! The size limit of one event: what the outbox stores always fits a gRPC
//! message on its own. A larger event is shrunk, or replaced by a message
//! that says what was lost.
use pgsnapman_proto::v1::{MessageLevel, WorkerMessage, event};

/// Largest encoded event the outbox stores: half the gRPC message cap, so an
/// event always fits a batch on its own (docs/worker.md). A larger result is
/// shrunk or replaced at append time (see [`fit`]).
pub const MAX_EVENT_BYTES: usize = pgsnapman_proto::MAX_MESSAGE_BYTES / 2;

/// Cuts `text` to at most `max` bytes (on a character boundary), marking the
/// cut.
fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("...");
}

/// An event body as stored: one that fits [`MAX_EVENT_BYTES`] is kept as it
/// is; a larger one loses its bulky optional parts (restore metadata, a
/// task's result document, long texts) and is followed by an ERROR message
/// saying so, or, if it still does not fit, is replaced by that message. The
/// outbox never holds an event the coordinator cannot receive.
pub(super) fn fit(body: event::Body) -> Vec<event::Body> {
    // The event around the body: its id (36 characters), time and tags.
    const ENVELOPE: usize = 64;
    let size = |b: &event::Body| b.encoded_len() + ENVELOPE;
    let before = size(&body);
    if before <= MAX_EVENT_BYTES {
        return vec![body];
    }
    // Long texts are cut to 64 KiB.
    const TEXT: usize = 64 * 1024;
    let kind = kind_of(&body);
    let mut small = body;
    let what = match &mut small {
        event::Body::DumpFinished(d) => {
            d.restore_metadata_json.clear();
            cut(&mut d.error, TEXT);
            let mut what = format!("the restore metadata of dump {}", d.dump_uuid);
            if !d.table_rows.is_empty() {
                // The counts stay in the manifest (a catalog rebuild has them).
                d.table_rows.clear();
                d.table_rows_counted = false;
                d.table_rows_error =
                    "too many tables for the dump's event: the row counts are in its manifest only"
                        .to_string();
                what.push_str(" and its row counts (kept in its manifest)");
            }
            what
        }
        event::Body::TaskFinished(f) => {
            f.result_json.clear();
            cut(&mut f.error, TEXT);
            "the result document of a task".to_string()
        }
        event::Body::TaskFailed(f) => {
            cut(&mut f.error, TEXT);
            "the error text of a task".to_string()
        }
        event::Body::Message(m) => {
            cut(&mut m.text, TEXT);
            "the text of a message".to_string()
        }
        event::Body::RestoreLog(l) => {
            cut(&mut l.text, TEXT);
            "the text of a restore log line".to_string()
        }
        event::Body::RestoreFinished(f) => {
            cut(&mut f.error, TEXT);
            "the error text of a restore".to_string()
        }
        event::Body::StoreVerified(v) => {
            v.problems.truncate(1000);
            v.problems.iter_mut().for_each(|p| cut(p, 1024));
            "all but the first 1000 problem lines of a verification".to_string()
        }
        _ => String::new(),
    };
    let limit = MAX_EVENT_BYTES;
    let after = size(&small);
    let (kept, text) = if after <= limit && !what.is_empty() {
        (
            Some(small),
            format!(
                "an event of {before} bytes exceeded the {limit}-byte event limit: {what} was left out"
            ),
        )
    } else {
        (
            None,
            format!(
                "an event ({kind}) of {before} bytes exceeded the {limit}-byte event limit and was dropped"
            ),
        )
    };
    tracing::error!("{text}");
    let note = event::Body::Message(WorkerMessage {
        level: MessageLevel::Error as i32,
        class: "LINK".to_string(),
        job_id: 0,
        text,
    });
    kept.into_iter().chain(std::iter::once(note)).collect()
}

pub(super) fn kind_of(body: &event::Body) -> &'static str {
    match body {
        event::Body::DumpFinished(_) => "DumpFinished",
        event::Body::Message(_) => "WorkerMessage",
        event::Body::TaskFailed(_) => "TaskFailed",
        event::Body::TaskFinished(_) => "TaskFinished",
        event::Body::DumpsDeleted(_) => "DumpsDeleted",
        event::Body::StoreStats(_) => "StoreStats",
        event::Body::StoreVerified(_) => "StoreVerified",
        event::Body::DatabasesDiscovered(_) => "DatabasesDiscovered",
        event::Body::RestoreLog(_) => "RestoreLogEntry",
        event::Body::RestoreFinished(_) => "RestoreFinished",
        event::Body::DumpVerified(_) => "DumpVerified",
        event::Body::DumpsCompressed(_) => "DumpsCompressed",
    }
}
