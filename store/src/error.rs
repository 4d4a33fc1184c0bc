//! The store's error type: one enum whose variants callers branch on (missing,
//! corrupt, version mismatch) plus I/O and index failures carrying their context.

use std::path::PathBuf;

use uuid::Uuid;

use crate::chunk::ChunkId;

/// Every failure of the store. Display strings are one line and name the
/// offending value (path, chunk id, dump uuid, version).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed; `context` says which and on what path.
    #[error("{context}: {error}")]
    Io {
        context: String,
        error: std::io::Error,
    },
    /// The RocksDB chunk index failed.
    #[error("chunk index: {context}: {error}")]
    Index {
        context: String,
        error: rocksdb::Error,
    },
    /// A persisted structure carries a format version this build cannot read.
    #[error("{what} at {path} has format version {found}, this build reads version {expected}")]
    FormatVersion {
        what: &'static str,
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    /// A pack file is damaged or truncated (bad magic, bad trailer, short read).
    #[error("corrupt pack {path} at offset {offset}: {detail}")]
    CorruptPack {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// A chunk's stored bytes do not decompress to the bytes its id names.
    #[error("corrupt chunk {chunk} in pack {path} at offset {offset}: {detail}")]
    CorruptChunk {
        chunk: ChunkId,
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// A manifest references a chunk the index does not know.
    #[error("chunk {chunk} needed by dump {dump} is missing from the store")]
    MissingChunk { chunk: ChunkId, dump: Uuid },
    /// No manifest exists for this dump.
    #[error("no manifest for dump {0} in the store")]
    ManifestNotFound(Uuid),
    /// The dump exists but has no file of that name.
    #[error("dump {dump} has no file named {name:?}")]
    FileNotFound { dump: Uuid, name: String },
    /// A manifest file cannot be parsed.
    #[error("unreadable manifest {path}: {detail}")]
    BadManifest { path: PathBuf, detail: String },
    /// A dump with this uuid is already stored or being ingested.
    #[error("dump {0} already exists in the store or is being ingested")]
    DumpExists(Uuid),
    /// A caller-supplied value was rejected (options, file names).
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// The object store (bucket) failed or answered unexpectedly; `location`
    /// is `<endpoint> bucket/prefix` (never a credential).
    #[error("object store {location}: {op}: {detail}")]
    Remote {
        location: String,
        op: String,
        detail: String,
    },
    /// An encrypted store opened without its key or with another one, or
    /// encryption asked of a store that holds unencrypted data; `detail`
    /// names the key ids (never a key).
    #[error("store {store}: {detail}")]
    Encryption { store: PathBuf, detail: String },
    /// An earlier error left this ingest unusable; drop it (which aborts it).
    #[error("ingest of dump {0} failed earlier and cannot continue")]
    IngestPoisoned(Uuid),
}

impl StoreError {
    /// Builds a `map_err` closure for an I/O error with a context phrase.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let context = context.into();
        move |error| StoreError::Io { context, error }
    }

    /// Builds a `map_err` closure for a RocksDB error with a context phrase.
    pub(crate) fn index(context: impl Into<String>) -> impl FnOnce(rocksdb::Error) -> StoreError {
        let context = context.into();
        move |error| StoreError::Index { context, error }
    }
}
