//! The delta codec: a chunk stored as one zstd frame compressed with its base
//! chunk's raw bytes as a raw-content prefix (`ZSTD_CCtx_refPrefix`), so the
//! frame holds little more than what differs; and the bound on delta chains.
//! Pure: no I/O, no hashing (the caller checks results against chunk ids).

use zstd::zstd_safe::{CCtx, CParameter, DCtx};

/// Format rule: from any chunk, at most this many DELTA records lead to the
/// FULL record at the root of its chain, so a read decodes at most
/// `MAX_DELTA_DEPTH + 1` records. Readers treat longer chains as corruption;
/// writers choose a smaller depth (`StoreOptions::max_delta_depth`).
pub const MAX_DELTA_DEPTH: u8 = 8;

/// Largest window a delta frame uses (128 MiB, zstd's default decoder limit);
/// base and chunk together are at most 32 MiB (max chunk size 16 MiB).
const MAX_WINDOW_LOG: u32 = 27;

/// Compresses `raw` at `level` with `base` as prefix. Decoding needs exactly
/// the same `base` bytes.
pub fn encode(raw: &[u8], base: &[u8], level: i32) -> Result<Vec<u8>, String> {
    // A fresh context per frame: a referenced prefix borrows `base`, and a
    // context reused across calls would have to outlive every base.
    let mut cctx = CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zstd_error)?;
    cctx.set_parameter(CParameter::ChecksumFlag(false))
        .map_err(zstd_error)?;
    // Long-distance matching finds the long runs shared with the base
    // cheaply whatever the hash tables' sizes (without it, level 1 misses
    // most of a 256 KiB base and level 3 much of a 1 MiB one); the window
    // must reach back over the whole base. Measured in docs/store.md.
    let span = (base.len() + raw.len()).max(1 << 10);
    let window_log = (usize::BITS - (span - 1).leading_zeros()).clamp(10, MAX_WINDOW_LOG);
    cctx.set_parameter(CParameter::WindowLog(window_log))
        .map_err(zstd_error)?;
    cctx.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .map_err(zstd_error)?;
    cctx.ref_prefix(base).map_err(zstd_error)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
    cctx.compress2(&mut out, raw).map_err(zstd_error)?;
    Ok(out)
}

/// Decodes a frame written by `encode` into at most `raw_len` bytes.
pub fn decode(stored: &[u8], base: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let mut dctx = DCtx::create();
    dctx.ref_prefix(base).map_err(zstd_error)?;
    let mut out = Vec::with_capacity(raw_len);
    dctx.decompress(&mut out, stored).map_err(zstd_error)?;
    Ok(out)
}

fn zstd_error(code: usize) -> String {
    format!("zstd: {}", zstd::zstd_safe::get_error_name(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_against_a_similar_base_is_small_and_round_trips() {
        let base: Vec<u8> = (0..200_000u32)
            .flat_map(|i| {
                format!("{i}\trow {}\n", i.wrapping_mul(2_654_435_761) % 9973).into_bytes()
            })
            .take(200_000)
            .collect();
        let mut raw = base.clone();
        raw[50_000..50_020].copy_from_slice(&[b'#'; 20]);
        raw.extend_from_slice(b"appended");
        let d = encode(&raw, &base, 3).unwrap();
        assert!(d.len() < 200, "delta is {} bytes", d.len());
        assert_eq!(decode(&d, &base, raw.len()).unwrap(), raw);
        // The wrong base decodes to other bytes or fails; never silently right.
        let mut other = base.clone();
        other[10_000] ^= 1;
        assert_ne!(decode(&d, &other, raw.len()).ok(), Some(raw.clone()));
        // A frame bigger than promised is refused.
        assert!(decode(&d, &base, raw.len() - 1).is_err());
    }

    #[test]
    fn empty_base_and_empty_chunk() {
        let d = encode(b"", b"", 1).unwrap();
        assert_eq!(decode(&d, b"", 0).unwrap(), b"");
        let d = encode(b"abc", b"", 1).unwrap();
        assert_eq!(decode(&d, b"", 3).unwrap(), b"abc");
    }
}
