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
    let mut out = Vec::with_capacity(raw_len);
    if looks_like_a_dictionary(base) {
        // zstd's "using dict" reads a base that starts with the dictionary
        // magic as a dictionary, not as raw content: only a referenced
        // prefix is always raw content (what `encode` used).
        let mut dctx = DCtx::create();
        dctx.ref_prefix(base).map_err(zstd_error)?;
        dctx.decompress(&mut out, stored).map_err(zstd_error)?;
    } else {
        with_dctx(|dctx| dctx.decompress_using_dict(&mut out, stored, base)).map_err(zstd_error)?;
    }
    Ok(out)
}

/// Decompresses a whole zstd frame (a FULL record) into at most `raw_len`
/// bytes.
pub fn decompress(stored: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw_len);
    with_dctx(|dctx| dctx.decompress(&mut out, stored)).map_err(zstd_error)?;
    Ok(out)
}

/// zstd's magic number of a dictionary, little-endian at the start of one.
const DICTIONARY_MAGIC: u32 = 0xEC30_A437;

fn looks_like_a_dictionary(base: &[u8]) -> bool {
    base.len() >= 8 && base[..4] == DICTIONARY_MAGIC.to_le_bytes()
}

thread_local! {
    /// One decompression context per thread, reused by every record it
    /// decodes: creating one per record was 2-3% of a restore's worker CPU
    /// (docs/benchmarks.md). It never holds a referenced prefix or
    /// dictionary between calls: each call above starts a new frame.
    static DCTX: std::cell::RefCell<Option<DCtx<'static>>> = const { std::cell::RefCell::new(None) };
}

fn with_dctx(f: impl FnOnce(&mut DCtx<'static>) -> Result<usize, usize>) -> Result<usize, usize> {
    DCTX.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.get_or_insert_with(DCtx::create)),
        // Not reentrant; a nested call (none today) gets a context of its own.
        Err(_) => f(&mut DCtx::create()),
    })
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

    /// A base that starts with zstd's dictionary magic is still raw
    /// content, and the reused context carries nothing from one frame to
    /// the next.
    #[test]
    fn a_base_that_looks_like_a_dictionary_and_a_reused_context() {
        let mut base = DICTIONARY_MAGIC.to_le_bytes().to_vec();
        base.extend((0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()));
        assert!(looks_like_a_dictionary(&base));
        let mut raw = base.clone();
        raw[70_000] ^= 0x55;
        let d = encode(&raw, &base, 1).unwrap();
        assert_eq!(decode(&d, &base, raw.len()).unwrap(), raw);
        // The same thread's context: a delta, a whole frame, a delta against
        // another base, and the first delta again.
        let other: Vec<u8> = (0..50_000u32).flat_map(|i| (i * 7).to_be_bytes()).collect();
        let mut raw2 = other.clone();
        raw2.truncate(150_000);
        raw2.extend_from_slice(b"tail");
        let d2 = encode(&raw2, &other, 3).unwrap();
        let whole = zstd::bulk::compress(&raw, 1).unwrap();
        for _ in 0..2 {
            assert_eq!(decompress(&whole, raw.len()).unwrap(), raw);
            assert_eq!(decode(&d2, &other, raw2.len()).unwrap(), raw2);
            assert_eq!(decode(&d, &base, raw.len()).unwrap(), raw);
            // A delta frame alone is not a whole frame.
            assert!(!decompress(&d2, raw2.len()).is_ok_and(|v| v == raw2));
            assert!(decompress(&whole, raw.len() - 1).is_err());
        }
    }

    #[test]
    fn empty_base_and_empty_chunk() {
        let d = encode(b"", b"", 1).unwrap();
        assert_eq!(decode(&d, b"", 0).unwrap(), b"");
        let d = encode(b"abc", b"", 1).unwrap();
        assert_eq!(decode(&d, b"", 3).unwrap(), b"abc");
    }
}
