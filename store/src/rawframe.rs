//! A zstd frame that holds its content uncompressed (raw blocks, RFC 8878
//! section 3.1.1.2): what an ingest stores for a new whole chunk it leaves
//! for compression later. Every zstd decoder reads it, so a record holding
//! one is an ordinary FULL record to every reader, old builds included.

/// zstd's frame magic number.
const MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
/// Frame header descriptor: a 4-byte content size, single segment, no
/// checksum, no dictionary.
const DESCRIPTOR: u8 = (2 << 6) | (1 << 5);
/// Largest block zstd accepts.
const MAX_BLOCK: usize = 128 << 10;
const HEADER_LEN: usize = MAGIC.len() + 1 + 4;
const BLOCK_HEADER_LEN: usize = 3;

/// Length of the raw frame of `len` bytes.
pub(crate) fn frame_len(len: usize) -> usize {
    HEADER_LEN + len + BLOCK_HEADER_LEN * len.div_ceil(MAX_BLOCK).max(1)
}

/// `raw` in a zstd frame of raw blocks; `None` above 4 GiB - 1 (a chunk is
/// never near that).
pub(crate) fn encode(raw: &[u8]) -> Option<Vec<u8>> {
    let size = u32::try_from(raw.len()).ok()?;
    let mut out = Vec::with_capacity(frame_len(raw.len()));
    out.extend_from_slice(&MAGIC);
    out.push(DESCRIPTOR);
    out.extend_from_slice(&size.to_le_bytes());
    let mut blocks = raw.chunks(MAX_BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&block_header(0, true));
    }
    while let Some(block) = blocks.next() {
        out.extend_from_slice(&block_header(block.len(), blocks.peek().is_none()));
        out.extend_from_slice(block);
    }
    Some(out)
}

/// Raw block header: last-block bit, type 0 (raw), 21-bit size.
fn block_header(len: usize, last: bool) -> [u8; BLOCK_HEADER_LEN] {
    let v = ((len as u32) << 3) | u32::from(last);
    let b = v.to_le_bytes();
    [b[0], b[1], b[2]]
}

/// True when `stored` is exactly `encode` of some `raw_len` bytes: the
/// frame header this module writes and raw blocks of the expected sizes. A
/// frame zstd itself wrote for incompressible data may match too; then
/// compressing it again gains nothing and it is kept as it is.
pub(crate) fn is_raw(stored: &[u8], raw_len: usize) -> bool {
    if stored.len() != frame_len(raw_len)
        || stored[..4] != MAGIC
        || stored[4] != DESCRIPTOR
        || u32::from_le_bytes([stored[5], stored[6], stored[7], stored[8]]) as usize != raw_len
    {
        return false;
    }
    let mut at = HEADER_LEN;
    let mut left = raw_len;
    loop {
        let len = left.min(MAX_BLOCK);
        left -= len;
        if stored[at..at + BLOCK_HEADER_LEN] != block_header(len, left == 0) {
            return false;
        }
        at += BLOCK_HEADER_LEN + len;
        if left == 0 {
            return at == stored.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_zstd_decoder_reads_the_frame() {
        for len in [
            0,
            1,
            100,
            MAX_BLOCK - 1,
            MAX_BLOCK,
            MAX_BLOCK + 1,
            3 * MAX_BLOCK,
            1 << 20,
            (1 << 20) + 7,
        ] {
            let raw: Vec<u8> = (0..len).map(|i| (i * 7 + i / 300) as u8).collect();
            let frame = encode(&raw).expect("small");
            assert_eq!(frame.len(), frame_len(len), "len {len}");
            assert!(is_raw(&frame, len), "len {len}");
            assert!(!is_raw(&frame, len + 1), "len {len}");
            let back = zstd::bulk::decompress(&frame, len).expect("decodes");
            assert_eq!(back, raw, "len {len}");
            let mut streamed = Vec::new();
            zstd::stream::copy_decode(&frame[..], &mut streamed).expect("streams");
            assert_eq!(streamed, raw, "len {len}");
        }
    }

    #[test]
    fn compressed_frames_and_damaged_raw_frames_are_not_raw() {
        let raw = vec![b'a'; 300_000];
        let z = zstd::bulk::compress(&raw, 1).expect("compress");
        assert!(!is_raw(&z, raw.len()));
        let mut frame = encode(&raw).expect("small");
        let last_block = HEADER_LEN + 2 * (BLOCK_HEADER_LEN + MAX_BLOCK);
        frame[last_block] ^= 1; // the last block no longer says it is last
        assert!(!is_raw(&frame, raw.len()));
        assert!(!is_raw(&frame[..frame.len() - 1], raw.len()));
    }
}
