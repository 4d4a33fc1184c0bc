//! Everything `pgsnap` writes to standard output: one JSON document per run
//! (`--output json`), or tables and short notes for people. Errors go to
//! stderr from `main`, never from here.
pub mod auth;
pub mod json;
pub mod restore;
pub mod retention;
pub mod script;
pub mod table;

use std::io::Write;

use anyhow::{Context, Result};
use comfy_table::Table;
use serde_json::Value;

use crate::args::OutputFormat;

/// Where command results go, in the format the operator chose.
pub struct Output {
    format: OutputFormat,
}

impl Output {
    pub fn new(format: OutputFormat) -> Self {
        Self { format }
    }

    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// One object: a JSON object, or a two-column key/value table.
    pub fn object(&self, json: Value, rows: Vec<(&'static str, String)>) -> Result<()> {
        match self.format {
            OutputFormat::Json => emit_json(&json),
            OutputFormat::Table => emit(&table::key_value(rows).to_string()),
        }
    }

    /// A list: a JSON array, or a table with one row per item.
    pub fn list(&self, json: Vec<Value>, table: Table) -> Result<()> {
        match self.format {
            OutputFormat::Json => emit_json(&Value::Array(json)),
            OutputFormat::Table => emit(&table.to_string()),
        }
    }

    /// A line for people (`created dump job 12`); JSON output leaves it out so
    /// that stdout stays one JSON document.
    pub fn note(&self, text: &str) -> Result<()> {
        match self.format {
            OutputFormat::Json => Ok(()),
            OutputFormat::Table => emit(text),
        }
    }

    /// The result of a command that created or changed an object: the object
    /// as JSON, or for people a note (`created dump job 12`) and its row.
    pub fn changed(&self, note: &str, json: Value, table: Table) -> Result<()> {
        match self.format {
            OutputFormat::Json => emit_json(&json),
            OutputFormat::Table => {
                emit(note)?;
                emit(&table.to_string())
            }
        }
    }

    /// The result of a command that returns nothing (remove): a note for
    /// people, `{"id": N, "removed": true}` for scripts.
    pub fn removed(&self, what: &str, id: i64) -> Result<()> {
        match self.format {
            OutputFormat::Json => emit_json(&serde_json::json!({ "id": id, "removed": true })),
            OutputFormat::Table => emit(&format!("removed {what} {id}")),
        }
    }
}

fn emit_json(v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).context("encode JSON output")?;
    emit(&text)
}

/// Writes `text` and a newline to stdout. A closed pipe (`pgsnap … | head`)
/// is not an error: the reader has all it wanted.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("write to standard output"),
    }
}
