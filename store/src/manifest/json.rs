//! Format version 1: the manifest as pretty-printed JSON (docs/store.md,
//! "Manifest format 1"). Read forever; written only when asked for (tests,
//! golden fixtures).

use std::path::Path;

use super::Manifest;
use crate::error::StoreError;

pub(super) const FORMAT_VERSION: u32 = 1;

/// Parses a JSON manifest; a `format_version` other than 1 is a version
/// error (checked before the rest of the document).
pub(super) fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest, StoreError> {
    let bad = |detail: String| StoreError::BadManifest {
        path: path.to_path_buf(),
        detail,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let found = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| bad("no numeric format_version".to_string()))?;
    if found != u64::from(FORMAT_VERSION) {
        return Err(StoreError::FormatVersion {
            what: "manifest",
            path: path.to_path_buf(),
            found,
            expected: u64::from(super::MANIFEST_FORMAT_VERSION),
        });
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

pub(super) fn encode(m: &Manifest) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(m).map_err(|e| StoreError::Invalid {
        what: "manifest",
        detail: format!("dump {}: {e}", m.dump_uuid),
    })
}
