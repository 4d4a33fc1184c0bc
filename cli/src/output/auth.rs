//! Operator tokens and audit rows: as JSON (proto field names, roles without
//! their prefix) and as tables. A token's secret appears only in the output
//! of `token create`, added there.
use comfy_table::Table;
use pgsnapman_proto::v1;
use serde_json::{Value, json};

use super::json::{label, timestamp};
use super::table::{cell, first_line, text, time, with_header, yes_no};

pub fn role(r: i32) -> Value {
    label(
        v1::Role::try_from(r).map_or("ROLE_UNSPECIFIED", |r| r.as_str_name()),
        "ROLE_",
    )
}

/// `viewer`, `operator`, `admin` (as `--role` takes them).
pub fn role_text(r: i32) -> String {
    cell(role(r)).to_lowercase()
}

pub fn token_json(t: &v1::ApiToken) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "role": role(t.role),
        "created_at": timestamp(t.created_at.as_ref()),
        "created_by": t.created_by,
        "expires_at": timestamp(t.expires_at.as_ref()),
        "revoked_at": timestamp(t.revoked_at.as_ref()),
        "last_used_at": timestamp(t.last_used_at.as_ref()),
        "kind": kind(t.kind),
        "certificate_fingerprint": t.certificate_fingerprint,
        "certificate_serial": t.certificate_serial,
    })
}

/// `token`, `issued certificate`, `registered certificate`.
pub fn kind(k: i32) -> Value {
    match v1::CredentialKind::try_from(k) {
        Ok(v1::CredentialKind::IssuedCertificate) => "issued certificate",
        Ok(v1::CredentialKind::RegisteredCertificate) => "registered certificate",
        _ => "token",
    }
    .into()
}

pub fn tokens(ts: &[v1::ApiToken]) -> Table {
    let mut t = with_header(&[
        "NAME",
        "KIND",
        "ROLE",
        "CREATED",
        "BY",
        "EXPIRES",
        "REVOKED",
        "LAST USED",
        "FINGERPRINT (SHA-256)",
    ]);
    for k in ts {
        t.add_row(vec![
            k.name.clone(),
            cell(kind(k.kind)),
            role_text(k.role),
            time(k.created_at.as_ref()),
            text(&k.created_by),
            time(k.expires_at.as_ref()),
            time(k.revoked_at.as_ref()),
            time(k.last_used_at.as_ref()),
            text(&k.certificate_fingerprint),
        ]);
    }
    t
}

pub fn audit_json(e: &v1::AuditEntry) -> Value {
    json!({
        "id": e.id,
        "at": timestamp(e.at.as_ref()),
        "actor": e.actor,
        "method": e.method,
        "args": serde_json::from_str::<Value>(&e.args_json).unwrap_or(Value::Null),
        "peer": e.peer,
        "ok": e.ok,
        "detail": e.detail,
    })
}

/// Longest args and detail shown in a table cell.
const CELL_CHARS: usize = 80;

pub fn audit(es: &[v1::AuditEntry]) -> Table {
    let mut t = with_header(&["AT", "ACTOR", "METHOD", "OK", "PEER", "ARGS", "DETAIL"]);
    for e in es {
        t.add_row(vec![
            time(e.at.as_ref()),
            text(&e.actor),
            e.method.clone(),
            yes_no(e.ok),
            text(&e.peer),
            first_line(&e.args_json, CELL_CHARS),
            first_line(&e.detail, CELL_CHARS),
        ]);
    }
    t
}
