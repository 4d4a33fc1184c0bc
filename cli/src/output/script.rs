//! Registered scripts as JSON (proto field names; the content, when shown,
//! as text) and as tables.
use comfy_table::Table;
use pgsnapman_proto::v1;
use serde_json::{Value, json};

use super::json::timestamp;
use super::table::{bytes, text, time, with_header};

fn job_list(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    text(&ids.join(","))
}

pub fn script_json(s: &v1::Script) -> Value {
    json!({
        "name": s.name,
        "hash": s.hash,
        "size_bytes": s.size_bytes,
        "comment": s.comment,
        "created_at": timestamp(s.created_at.as_ref()),
        "updated_at": timestamp(s.updated_at.as_ref()),
        "job_ids": s.job_ids,
    })
}

/// `script_json` with the content (lossy UTF-8).
pub fn script_with_content(s: &v1::Script) -> Value {
    let mut v = script_json(s);
    v["content"] = String::from_utf8_lossy(&s.content).into_owned().into();
    v
}

pub fn scripts(ss: &[v1::Script]) -> Table {
    let mut t = with_header(&["NAME", "HASH", "SIZE", "JOBS", "UPDATED", "COMMENT"]);
    for s in ss {
        t.add_row(vec![
            s.name.clone(),
            s.hash.clone(),
            bytes(s.size_bytes),
            job_list(&s.job_ids),
            time(s.updated_at.as_ref()),
            text(&s.comment),
        ]);
    }
    t
}

pub fn script_rows(s: &v1::Script) -> Vec<(&'static str, String)> {
    vec![
        ("name", s.name.clone()),
        ("hash", s.hash.clone()),
        ("size", bytes(s.size_bytes)),
        ("jobs", job_list(&s.job_ids)),
        ("comment", text(&s.comment)),
        ("created at", time(s.created_at.as_ref())),
        ("updated at", time(s.updated_at.as_ref())),
    ]
}
