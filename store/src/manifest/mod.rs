//! Manifests: one self-describing file per stored dump (binary since format
//! 2, JSON in format 1; docs/store.md), enough to rebuild the catalog row and
//! to reassemble every file of the dump. Owns the in-memory type, the format
//! dispatch, file names and the lazy listing of the manifests directory.

mod binary;
mod json;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::chunk::ChunkId;
use crate::crypto::Crypto;
use crate::durable;
use crate::error::StoreError;

/// The format new manifests are written in (binary, `binary.rs`). Bump on any
/// incompatible change; keep a reader for every old version (JSON version 1
/// in `json.rs`) and add a golden file under store/tests/fixtures/manifests.
pub const MANIFEST_FORMAT_VERSION: u32 = binary::FORMAT_VERSION;

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
    /// A custom-format archive: where each data block's header starts in
    /// the stored archive, as (pg_dump's dump id, byte offset), in archive
    /// order. Recorded as the dump streamed in, so that a parallel restore
    /// serves each block from its offset without reading the archive first
    /// (docs/worker.md). A hint checked on use: `None` for other formats,
    /// past 2048 blocks and in manifests written before it existed (the
    /// restore then finds the blocks itself). Added within format version
    /// 2; older readers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_blocks: Option<Vec<(i64, u64)>>,
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

/// File name suffix of a binary manifest (format version 2 and later).
pub const BINARY_SUFFIX: &str = ".manifest";
/// File name suffix of a JSON manifest (format version 1).
pub const JSON_SUFFIX: &str = ".json";

/// `<dir>/<uuid>.manifest`: where a new (binary) manifest is written.
pub fn manifest_path(dir: &Path, dump: Uuid) -> PathBuf {
    dir.join(format!("{dump}{BINARY_SUFFIX}"))
}

/// `<dir>/<uuid>.json`: where a format version 1 manifest lives.
pub fn json_manifest_path(dir: &Path, dump: Uuid) -> PathBuf {
    dir.join(format!("{dump}{JSON_SUFFIX}"))
}

/// The file name a manifest of `m.format_version` has.
pub fn file_name(m: &Manifest) -> String {
    let suffix = if m.format_version <= json::FORMAT_VERSION {
        JSON_SUFFIX
    } else {
        BINARY_SUFFIX
    };
    format!("{}{suffix}", m.dump_uuid)
}

/// The manifest file of `dump` in `dir`, whichever format it has; `None`
/// when there is none (a dump has one file: the store never writes both).
pub fn existing_manifest(dir: &Path, dump: Uuid) -> Option<PathBuf> {
    [manifest_path(dir, dump), json_manifest_path(dir, dump)]
        .into_iter()
        .find(|p| p.exists())
}

/// Parses a manifest file name (either format) back into its dump uuid.
pub fn dump_of_file_name(name: &str) -> Option<Uuid> {
    let stem = name
        .strip_suffix(BINARY_SUFFIX)
        .or_else(|| name.strip_suffix(JSON_SUFFIX))?;
    Uuid::try_parse(stem).ok()
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
    crypto: Option<std::sync::Arc<Crypto>>,
}

impl ManifestFiles {
    pub fn list(dir: &Path) -> Result<ManifestFiles, StoreError> {
        let entries =
            std::fs::read_dir(dir).map_err(StoreError::io(format!("list {}", dir.display())))?;
        Ok(ManifestFiles {
            dir: dir.to_path_buf(),
            entries,
            crypto: None,
        })
    }

    /// Reads the manifests of an encrypted store with its key.
    pub fn with_crypto(mut self, crypto: Option<std::sync::Arc<Crypto>>) -> ManifestFiles {
        self.crypto = crypto;
        self
    }

    /// The next manifest, read and checked: yields `(dump, result)` per file
    /// and skips a manifest deleted between the listing and the read.
    pub fn next_read(&mut self) -> Option<Result<ManifestRead, StoreError>> {
        loop {
            let (dump, path) = match self.next()? {
                Ok(v) => v,
                Err(e) => return Some(Err(e)),
            };
            match read_manifest_with(&path, self.crypto.as_deref()) {
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

/// Reads and checks one manifest of any format this build reads: a binary
/// one (it starts with [`binary::MAGIC`]) or a JSON one (version 1). The
/// version is checked before the rest so a newer manifest gets a version
/// error, not a parse error; the file name must match the dump and format.
pub fn read_manifest(path: &Path) -> Result<Manifest, StoreError> {
    read_manifest_with(path, None)
}

/// `read_manifest` in a store that may be encrypted: with `crypto` only
/// encrypted manifests of that key are accepted, without it none.
pub fn read_manifest_with(path: &Path, crypto: Option<&Crypto>) -> Result<Manifest, StoreError> {
    let bytes =
        std::fs::read(path).map_err(StoreError::io(format!("read manifest {}", path.display())))?;
    let bytes = unseal(path, bytes, crypto)?;
    let m = if bytes.starts_with(binary::MAGIC) {
        binary::decode(path, &bytes)?
    } else {
        json::decode(path, &bytes)?
    };
    let expected_name = file_name(&m);
    if path.file_name().and_then(|n| n.to_str()) != Some(expected_name.as_str()) {
        return Err(StoreError::BadManifest {
            path: path.to_path_buf(),
            detail: format!(
                "names dump {} in format {} but file is not {expected_name}",
                m.dump_uuid, m.format_version
            ),
        });
    }
    Ok(m)
}

/// Writes a manifest atomically and durably, in the format its
/// `format_version` names (new dumps: [`MANIFEST_FORMAT_VERSION`]; version
/// 1 writes the old JSON, for tests and golden fixtures).
pub fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), StoreError> {
    durable::write_atomic(&dir.join(file_name(m)), &encode(m)?)
}

/// The plain bytes of a manifest file: opened when the store is encrypted.
fn unseal(path: &Path, bytes: Vec<u8>, crypto: Option<&Crypto>) -> Result<Vec<u8>, StoreError> {
    let bad = |detail: String| StoreError::BadManifest {
        path: path.to_path_buf(),
        detail,
    };
    let encrypted = bytes.starts_with(crate::crypto::MANIFEST_MAGIC);
    match crypto {
        None if encrypted => {
            let key = crate::crypto::envelope_key_id(&bytes).map_err(bad)?;
            Err(bad(format!(
                "encrypted with key {key}: open the store with that key ([store.encryption])"
            )))
        }
        None => Ok(bytes),
        Some(c) if encrypted => {
            let dump = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(dump_of_file_name)
                .ok_or_else(|| bad("file name names no dump".to_string()))?;
            c.open_manifest(dump, &bytes).map_err(bad)
        }
        Some(c) => Err(bad(format!(
            "not encrypted, but the store is (key {}): refused",
            c.key_id()
        ))),
    }
}

/// A manifest file's bytes: `encode`, sealed when the store is encrypted.
pub fn encode_with(m: &Manifest, crypto: Option<&Crypto>) -> Result<Vec<u8>, StoreError> {
    let plain = encode(m)?;
    match crypto {
        None => Ok(plain),
        Some(c) => c
            .seal_manifest(m.dump_uuid, &plain)
            .map_err(|detail| StoreError::Invalid {
                what: "manifest",
                detail,
            }),
    }
}

/// A manifest's bytes, in the format its `format_version` names.
pub fn encode(m: &Manifest) -> Result<Vec<u8>, StoreError> {
    Ok(match m.format_version {
        json::FORMAT_VERSION => json::encode(m)?,
        binary::FORMAT_VERSION => binary::encode(m)?,
        other => {
            return Err(StoreError::Invalid {
                what: "manifest",
                detail: format!("dump {}: no writer for format version {other}", m.dump_uuid),
            });
        }
    })
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

    fn with_chunks(dump: Uuid) -> Manifest {
        let mut m = manifest(dump);
        let chunks: Vec<ChunkRef> = (0u8..200)
            .map(|i| ChunkRef {
                id: ChunkId([i % 150; 32]),
                len: 1 + u32::from(i) * 1000,
            })
            .collect();
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        m.files = vec![
            FileEntry {
                name: "toc.dat".into(),
                size,
                chunks,
            },
            FileEntry {
                name: "empty.dat".into(),
                size: 0,
                chunks: vec![],
            },
        ];
        m.meta.restore_metadata = serde_json::json!({"roles": ["a", "b"]});
        m.meta.table_rows = Some(vec![TableRows {
            database: String::new(),
            schema: "public".into(),
            table: "t".into(),
            rows: 42,
        }]);
        m.meta.data_blocks = Some(vec![(3362, 4891), (3363, 1 << 33)]);
        m
    }

    /// A binary manifest reads back equal, and is a fraction of its JSON.
    #[test]
    fn binary_round_trips_and_is_smaller_than_json() {
        let dir = tempfile::tempdir().unwrap();
        let m = with_chunks(Uuid::now_v7());
        assert_eq!(m.format_version, 2);
        write_manifest(dir.path(), &m).unwrap();
        let path = manifest_path(dir.path(), m.dump_uuid);
        assert_eq!(read_manifest(&path).unwrap(), m);
        assert_eq!(
            existing_manifest(dir.path(), m.dump_uuid),
            Some(path.clone())
        );
        let binary = std::fs::metadata(&path).unwrap().len();
        let json = json::encode(&m).unwrap().len() as u64;
        assert!(binary * 3 < json, "binary {binary} bytes, JSON {json}");

        let mut old = m.clone();
        old.format_version = 1;
        old.dump_uuid = Uuid::now_v7();
        write_manifest(dir.path(), &old).unwrap();
        let old_path = json_manifest_path(dir.path(), old.dump_uuid);
        assert_eq!(read_manifest(&old_path).unwrap(), old);
        assert_eq!(existing_manifest(dir.path(), old.dump_uuid), Some(old_path));
        let mut listed: Vec<Uuid> = ManifestFiles::list(dir.path())
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect();
        listed.sort();
        let mut both = vec![m.dump_uuid, old.dump_uuid];
        both.sort();
        assert_eq!(listed, both);
    }

    /// Every damage to a binary manifest is a clear error naming the file,
    /// never a panic or a wrong manifest.
    #[test]
    fn damaged_binary_manifests_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let m = with_chunks(Uuid::now_v7());
        write_manifest(dir.path(), &m).unwrap();
        let path = manifest_path(dir.path(), m.dump_uuid);
        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8], want: &str| {
            std::fs::write(&path, bytes).unwrap();
            let err = read_manifest(&path).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(err.contains(&m.dump_uuid.to_string()), "{err}");
        };
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        check(&flipped, "checksum mismatch");
        check(&good[..good.len() - 1], "checksum mismatch");
        check(&good[..12], "truncated");
        check(&good[..9], "truncated");
        let mut newer = good.clone();
        newer[8] = 3;
        check(&newer, "format version 3");
        // A valid file under another dump's name.
        let other = manifest_path(dir.path(), Uuid::now_v7());
        std::fs::write(&other, &good).unwrap();
        let err = read_manifest(&other).unwrap_err().to_string();
        assert!(err.contains("but file is not"), "{err}");
        // JSON under the binary name.
        let mut old = m.clone();
        old.format_version = 1;
        check(&json::encode(&old).unwrap(), "but file is not");
    }

    /// A body that passes the checksum but lies (a chunk count beyond the
    /// body, sizes that do not add up) is rejected, not allocated.
    #[test]
    fn inconsistent_bodies_are_rejected() {
        let dump = Uuid::now_v7();
        let header = format!(
            r#"{{"format_version":2,"dump_uuid":"{dump}","job_id":1,"task_id":0,"host":"h","port":1,"database":"d","schema":"","dump_type":"FULL","format":"CUSTOM","server_version":"15","client_version":"15","started_at":"2026-11-24T01:00:00Z","finished_at":"2026-11-24T01:05:00Z","restore_metadata":null,"logical_bytes":5,"new_stored_bytes":0,"files":[{{"name":"f","size":5}}]}}"#
        );
        let body = |tail: &[u8]| {
            let mut b = Vec::new();
            crate::varint::put(&mut b, header.len() as u64);
            b.extend_from_slice(header.as_bytes());
            b.extend_from_slice(tail);
            b
        };
        let mut one = vec![1u8];
        one.extend_from_slice(&[7; 32]);
        one.push(5);
        assert!(binary::decode_body(&body(&one)).is_ok());
        let mut wrong_size = one.clone();
        *wrong_size.last_mut().unwrap() = 6;
        let err = binary::decode_body(&body(&wrong_size)).unwrap_err();
        assert!(err.contains("chunks hold 6 bytes"), "{err}");
        let err = binary::decode_body(&body(&[0xff, 0xff, 0xff, 0x7f])).unwrap_err();
        assert!(err.contains("do not fit the body"), "{err}");
        let mut trailing = one.clone();
        trailing.push(0);
        let err = binary::decode_body(&body(&trailing)).unwrap_err();
        assert!(err.contains("after the last chunk list"), "{err}");
    }
}
