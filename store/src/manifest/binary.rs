//! Format version 2: the binary manifest (docs/store.md, "Manifest format
//! 2"). magic | version u8 | zstd frame of the body | BLAKE3 of everything
//! before it. The body is a JSON header (every field but the chunk lists)
//! followed by each file's chunk list as raw 32-byte ids and varint lengths.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ChunkRef, FileEntry, Manifest, ManifestMeta};
use crate::chunk::{CHUNK_ID_LEN, ChunkId};
use crate::error::StoreError;
use crate::varint;

pub(crate) const MAGIC: &[u8; 8] = b"PGSNAPMF";
pub(super) const FORMAT_VERSION: u32 = 2;
const CHECKSUM_LEN: usize = 32;
/// zstd level of the body; why: a manifest is small and written once per
/// dump, so a high level costs milliseconds and shrinks the JSON header and
/// repeated chunk ids (the ids themselves are random and do not compress).
const ZSTD_LEVEL: i32 = 19;
/// Largest decompressed body read; why: bounds the memory a damaged or
/// hostile file can claim. 1 GiB is ~30 million chunk references, a
/// multi-terabyte dump at the default chunk size.
pub(crate) const MAX_BODY_BYTES: u64 = 1 << 30;
/// The smallest chunk reference: a 32-byte id and a one-byte length.
const MIN_REF_LEN: usize = CHUNK_ID_LEN + 1;

/// Everything but the chunk lists, as written.
#[derive(Serialize)]
struct HeaderOut<'a> {
    format_version: u32,
    dump_uuid: Uuid,
    #[serde(flatten)]
    meta: &'a ManifestMeta,
    logical_bytes: u64,
    new_stored_bytes: u64,
    files: Vec<FileOut<'a>>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    name: &'a str,
    size: u64,
}

/// Everything but the chunk lists, as read (unknown fields are ignored, so
/// later builds may add fields within format 2 with serde defaults).
#[derive(Deserialize)]
struct HeaderIn {
    format_version: u32,
    dump_uuid: Uuid,
    #[serde(flatten)]
    meta: ManifestMeta,
    logical_bytes: u64,
    new_stored_bytes: u64,
    files: Vec<FileIn>,
}

#[derive(Deserialize)]
struct FileIn {
    name: String,
    size: u64,
}

pub(super) fn encode(m: &Manifest) -> Result<Vec<u8>, StoreError> {
    let invalid = |detail: String| StoreError::Invalid {
        what: "manifest",
        detail: format!("dump {}: {detail}", m.dump_uuid),
    };
    let header = HeaderOut {
        format_version: FORMAT_VERSION,
        dump_uuid: m.dump_uuid,
        meta: &m.meta,
        logical_bytes: m.logical_bytes,
        new_stored_bytes: m.new_stored_bytes,
        files: m
            .files
            .iter()
            .map(|f| FileOut {
                name: &f.name,
                size: f.size,
            })
            .collect(),
    };
    let header = serde_json::to_vec(&header).map_err(|e| invalid(e.to_string()))?;
    let refs: usize = m.files.iter().map(|f| f.chunks.len()).sum();
    let mut body = Vec::with_capacity(header.len() + 10 + refs * (CHUNK_ID_LEN + 3));
    varint::put(&mut body, header.len() as u64);
    body.extend_from_slice(&header);
    for f in &m.files {
        varint::put(&mut body, f.chunks.len() as u64);
        for c in &f.chunks {
            body.extend_from_slice(&c.id.0);
            varint::put(&mut body, u64::from(c.len));
        }
    }
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(invalid(format!(
            "{} bytes of manifest body, more than the limit of {MAX_BODY_BYTES}",
            body.len()
        )));
    }
    let mut out = Vec::with_capacity(body.len() / 2 + 64);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION as u8);
    let compressed =
        zstd::bulk::compress(&body, ZSTD_LEVEL).map_err(|e| invalid(format!("zstd: {e}")))?;
    out.extend_from_slice(&compressed);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Ok(out)
}

/// Decodes a file that starts with [`MAGIC`]: version, checksum, then body.
pub(super) fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest, StoreError> {
    let bad = |detail: String| StoreError::BadManifest {
        path: path.to_path_buf(),
        detail,
    };
    let Some(&version) = bytes.get(MAGIC.len()) else {
        return Err(bad("truncated after the magic".to_string()));
    };
    if u32::from(version) != FORMAT_VERSION {
        return Err(StoreError::FormatVersion {
            what: "manifest",
            path: path.to_path_buf(),
            found: u64::from(version),
            expected: u64::from(FORMAT_VERSION),
        });
    }
    let Some(sum_at) = bytes.len().checked_sub(CHECKSUM_LEN) else {
        return Err(bad(format!("{} bytes: truncated", bytes.len())));
    };
    if sum_at <= MAGIC.len() + 1 {
        return Err(bad(format!("{} bytes: truncated", bytes.len())));
    }
    let (signed, sum) = bytes.split_at(sum_at);
    if blake3::hash(signed).as_bytes() != sum {
        return Err(bad("checksum mismatch (damaged or truncated)".to_string()));
    }
    let mut body = Vec::new();
    zstd::stream::read::Decoder::new(&signed[MAGIC.len() + 1..])
        .and_then(|d| d.take(MAX_BODY_BYTES + 1).read_to_end(&mut body))
        .map_err(|e| bad(format!("zstd: {e}")))?;
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(bad(format!(
            "body larger than the limit of {MAX_BODY_BYTES} bytes"
        )));
    }
    decode_body(&body).map_err(bad)
}

pub(super) fn decode_body(body: &[u8]) -> Result<Manifest, String> {
    let mut b = body;
    let header_len = varint::take(&mut b).ok_or("bad header length")?;
    let header_len = usize::try_from(header_len)
        .ok()
        .filter(|n| *n <= b.len())
        .ok_or_else(|| format!("header length {header_len} beyond the body"))?;
    let (header, rest) = b.split_at(header_len);
    b = rest;
    let h: HeaderIn = serde_json::from_slice(header).map_err(|e| format!("header: {e}"))?;
    if h.format_version != FORMAT_VERSION {
        return Err(format!(
            "header says format {}, the file format {FORMAT_VERSION}",
            h.format_version
        ));
    }
    let mut files = Vec::with_capacity(h.files.len());
    for f in h.files {
        let n = varint::take(&mut b).ok_or_else(|| format!("file {}: bad chunk count", f.name))?;
        // Each reference takes at least MIN_REF_LEN bytes: a count the rest
        // of the body cannot hold is damage, not an allocation to make.
        if n > (b.len() / MIN_REF_LEN) as u64 {
            return Err(format!("file {}: {n} chunks do not fit the body", f.name));
        }
        let mut chunks = Vec::with_capacity(n as usize);
        let mut size = 0u64;
        for _ in 0..n {
            let Some((id, rest)) = b.split_first_chunk::<CHUNK_ID_LEN>() else {
                return Err(format!("file {}: truncated chunk id", f.name));
            };
            b = rest;
            let len = varint::take_u32(&mut b)
                .ok_or_else(|| format!("file {}: bad chunk length", f.name))?;
            size += u64::from(len);
            chunks.push(ChunkRef {
                id: ChunkId(*id),
                len,
            });
        }
        if size != f.size {
            return Err(format!(
                "file {}: chunks hold {size} bytes, the header says {}",
                f.name, f.size
            ));
        }
        files.push(FileEntry {
            name: f.name,
            size: f.size,
            chunks,
        });
    }
    if !b.is_empty() {
        return Err(format!("{} bytes after the last chunk list", b.len()));
    }
    Ok(Manifest {
        format_version: h.format_version,
        dump_uuid: h.dump_uuid,
        meta: h.meta,
        logical_bytes: h.logical_bytes,
        new_stored_bytes: h.new_stored_bytes,
        files,
    })
}
