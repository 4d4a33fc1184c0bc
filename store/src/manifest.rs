//! Manifests: one self-describing JSON file per stored dump (format in
//! docs/store.md), enough to rebuild the catalog row and to reassemble every
//! file of the dump. Owns (de)serialization, the version check and the lazy
//! listing of the manifests directory.

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
    /// SCRIPT dumps: `sha256:<hex>` of the script that made it (empty for
    /// other dumps). Added within format version 1; missing reads as empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub script_hash: String,
    /// Filled by the dump-type runners (roles, ACLs, …); opaque to the store.
    pub restore_metadata: serde_json::Value,
    /// Rows of every table's data, counted as the dump streamed in
    /// (docs/verification.md); `None` when not counted (see
    /// `table_rows_error`, or a manifest written before counting existed).
    /// Added within format version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_rows: Option<Vec<TableRows>>,
    /// Why the rows could not be counted; empty when they were. Added within
    /// format version 1.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub table_rows_error: String,
}

/// The rows of one table's data in a dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// The database, in a cluster dump (pg_dumpall); empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub database: String,
    pub schema: String,
    pub table: String,
    pub rows: u64,
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

/// One listed manifest: its dump, and the manifest or why it is unreadable.
pub type ManifestRead = (Uuid, Result<Manifest, StoreError>);

/// The manifest files of a directory, listed lazily: one directory entry at
/// a time, in directory order, so that memory does not grow with the
/// number of dumps. A manifest renamed into place while the listing runs
/// may or may not be listed (readdir's rule).
pub struct ManifestFiles {
    dir: PathBuf,
    entries: std::fs::ReadDir,
}

impl ManifestFiles {
    pub fn list(dir: &Path) -> Result<ManifestFiles, StoreError> {
        let entries =
            std::fs::read_dir(dir).map_err(StoreError::io(format!("list {}", dir.display())))?;
        Ok(ManifestFiles {
            dir: dir.to_path_buf(),
            entries,
        })
    }

    /// The next manifest, read and checked: yields `(dump, result)` per file
    /// and skips a manifest deleted between the listing and the read.
    pub fn next_read(&mut self) -> Option<Result<ManifestRead, StoreError>> {
        loop {
            let (dump, path) = match self.next()? {
                Ok(v) => v,
                Err(e) => return Some(Err(e)),
            };
            match read_manifest(&path) {
                Err(StoreError::Io { error, .. })
                    if error.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                read => return Some(Ok((dump, read))),
            }
        }
    }
}

impl Iterator for ManifestFiles {
    /// A manifest file's dump and path.
    type Item = Result<(Uuid, PathBuf), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        for entry in self.entries.by_ref() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let dir = self.dir.display();
                    return Some(Err(StoreError::io(format!("list {dir}"))(e)));
                }
            };
            if let Some(dump) = entry.file_name().to_str().and_then(dump_of_file_name) {
                return Some(Ok((dump, entry.path())));
            }
        }
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dump: Uuid) -> Manifest {
        serde_json::from_value(serde_json::json!({
            "format_version": MANIFEST_FORMAT_VERSION, "dump_uuid": dump,
            "job_id": 1, "task_id": 0, "host": "h", "port": 5432, "database": "d",
            "schema": "", "dump_type": "FULL", "format": "CUSTOM",
            "server_version": "15", "client_version": "15",
            "started_at": "2026-11-24T01:00:00Z", "finished_at": "2026-11-24T01:05:00Z",
            "restore_metadata": null, "logical_bytes": 0, "new_stored_bytes": 0,
            "files": []
        }))
        .unwrap()
    }

    /// gc and rebuild hold one manifest at a time: each is read only when
    /// the listing reaches it. Damage done after the first read shows up in
    /// every later item, so none was read ahead; a deleted one is skipped.
    #[test]
    fn manifests_are_read_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let dumps: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        for d in &dumps {
            write_manifest(dir.path(), &manifest(*d)).unwrap();
        }
        std::fs::write(dir.path().join("not-a-manifest.txt"), b"x").unwrap();
        let mut files = ManifestFiles::list(dir.path()).unwrap();
        let (first, read) = files.next_read().unwrap().unwrap();
        assert_eq!(read.unwrap().dump_uuid, first);
        let rest: Vec<Uuid> = dumps.iter().copied().filter(|d| *d != first).collect();
        std::fs::remove_file(manifest_path(dir.path(), rest[0])).unwrap();
        for d in &rest[1..] {
            std::fs::write(manifest_path(dir.path(), *d), b"{").unwrap();
        }
        let mut later = Vec::new();
        while let Some(item) = files.next_read() {
            let (dump, read) = item.unwrap();
            assert!(
                matches!(read, Err(StoreError::BadManifest { .. })),
                "{dump} was read before the listing reached it"
            );
            later.push(dump);
        }
        later.sort();
        let mut expected = rest[1..].to_vec();
        expected.sort();
        assert_eq!(later, expected);
    }
}
