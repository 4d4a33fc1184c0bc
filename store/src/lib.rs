//! pgsnapman's deduplicating pack store: dump data is cut into content-defined
//! chunks (FastCDC), named by BLAKE3, stored once — as a zstd delta against a
//! similar stored chunk when one is found, else compressed whole — in
//! size-bounded pack files indexed in RocksDB, and described per dump by a
//! self-describing binary manifest (JSON before format 2). Synchronous API (std I/O and threads); call
//! it from `spawn_blocking`. Formats and crash-safety rules: docs/store.md.

pub mod backend;
pub mod chunk;
pub mod crash;
pub mod crypto;
pub mod delta;
mod durable;
pub mod error;
mod gc;
pub mod index;
mod ingest;
mod later;
pub mod manifest;
mod options;
pub mod pack;
mod rawframe;
mod read_ahead;
mod reader;
mod readers;
mod rebuild;
pub mod resemblance;
mod shared;
mod store;
mod varint;
mod verify;

pub use backend::{BackendConfig, BackendInfo, S3Config};
pub use chunk::{ChunkId, ChunkParams, Naming};
pub use crash::{CRASH_AT_ENV, CrashPoint};
pub use crypto::{Crypto, StoreKey};
pub use delta::MAX_DELTA_DEPTH;
pub use error::StoreError;
pub use gc::GcReport;
pub use index::{INDEX_FORMAT_VERSION, INFO_LOGS_KEPT, bound_info_logs};
pub use ingest::feed::lower_priority as lower_thread_priority;
pub use ingest::{IndexFlush, Ingest};
pub use later::LaterReport;
pub use manifest::{
    ChunkRef, FileEntry, MANIFEST_FORMAT_VERSION, Manifest, ManifestMeta, TableRows,
};
pub use options::StoreOptions;
pub use pack::{PACK_FORMAT_VERSION, PackId};
pub use read_ahead::{READ_AHEAD_CHUNKS, ReadAhead};
pub use reader::{FileReader, StoredFile};
pub use rebuild::{
    REBUILD_DIR, RebuildReport, locked_by_another_process, rebuild_index, rebuild_index_encrypted,
};
pub use resemblance::FeatureParams;
pub use store::{Store, StoreStats};
pub use verify::{ProblemKind, VerifyProblem, VerifyReport};
