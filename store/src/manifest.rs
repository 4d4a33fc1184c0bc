//! Manifests: one self-describing JSON file per stored dump (format in
//! docs/store.md), enough to rebuild the catalog row and to reassemble every
//! file of the dump. Owns (de)serialization and the version check only.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chunk::ChunkId;
use crate::durable;
use crate::error::StoreError;

/// Bump on any incompatible change to `Manifest`'s JSON; keep a reader for the
/// old version.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// One chunk of a file, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    /// Raw (uncompressed) length.
    pub len: u32,
}

/// One file of a dump (a single archive, or one file of a directory-format dump).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    /// Raw bytes; the sum of the chunks' `len`.
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
}

/// What the caller knows about a dump; stored verbatim in its manifest.
/// Dump type and format are the proto model's `label()` strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestMeta {
    pub job_id: i64,
    /// The ad-hoc task that produced it, 0 for scheduled dumps.
    pub task_id: i64,
    /// The catalog's id of the source instance (0 if unknown). Added within
    /// format version 1; manifests without it read as 0.
    #[serde(default)]
    pub instance_id: i64,
    pub host: String,
    pub port: u32,
    pub database: String,
    /// Empty when the whole database was dumped.
    pub schema: String,
    pub dump_type: String,
    pub format: String,
    pub server_version: String,
    pub client_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `pg_database_size` of the source when dumped, -1 if unknown. Added
    /// within format version 1; missing reads as -1.
    #[serde(default = "unknown_size")]
    pub database_bytes: i64,
    /// Notes the catalog row carries (e.g. "dumped from a standby"). Added
    /// within format version 1; missing reads as empty.
    #[serde(default)]
    pub notes: String,
    /// Filled by the dump-type runners (roles, ACLs, …); opaque to the store.
    pub restore_metadata: serde_json::Value,
}

fn unknown_size() -> i64 {
    -1
}

/// The durable record of one stored dump.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub dump_uuid: Uuid,
    #[serde(flatten)]
    pub meta: ManifestMeta,
    /// Sum of the files' sizes.
    pub logical_bytes: u64,
    /// Pack bytes (record headers + compressed data) this dump added.
    pub new_stored_bytes: u64,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// The file called `name`, if any.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Every chunk reference of every file, in order (with repeats).
    pub fn chunk_refs(&self) -> impl Iterator<Item = &ChunkRef> {
        self.files.iter().flat_map(|f| f.chunks.iter())
    }
}

/// `<dir>/<uuid>.json`
pub fn manifest_path(dir: &Path, dump: Uuid) -> PathBuf {
    dir.join(format!("{dump}.json"))
}

/// Parses a manifest file name back into its dump uuid.
pub fn dump_of_file_name(name: &str) -> Option<Uuid> {
    Uuid::try_parse(name.strip_suffix(".json")?).ok()
}

/// Reads and checks one manifest. The version is checked before the rest of
/// the document so a newer manifest gets a version error, not a parse error.
pub fn read_manifest(path: &Path) -> Result<Manifest, StoreError> {
    let bytes =
        std::fs::read(path).map_err(StoreError::io(format!("read manifest {}", path.display())))?;
    let bad = |detail: String| StoreError::BadManifest {
        path: path.to_path_buf(),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let found = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| bad("no numeric format_version".to_string()))?;
    if found != u64::from(MANIFEST_FORMAT_VERSION) {
        return Err(StoreError::FormatVersion {
            what: "manifest",
            path: path.to_path_buf(),
            found,
            expected: u64::from(MANIFEST_FORMAT_VERSION),
        });
    }
    let m: Manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    let expected_name = format!("{}.json", m.dump_uuid);
    if path.file_name().and_then(|n| n.to_str()) != Some(expected_name.as_str()) {
        return Err(bad(format!(
            "names dump {} but file is not {expected_name}",
            m.dump_uuid
        )));
    }
    Ok(m)
}

/// Writes a manifest atomically and durably.
pub fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(m).map_err(|e| StoreError::Invalid {
        what: "manifest",
        detail: format!("dump {}: {e}", m.dump_uuid),
    })?;
    durable::write_atomic(&manifest_path(dir, m.dump_uuid), &bytes)
}
