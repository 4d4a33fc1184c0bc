//! LEB128 varints (7 bits a byte, least significant group first, high bit =
//! more follows) for the binary manifest and the compact index entries. A
//! reader rejects encodings longer than a `u64` needs.

/// Appends `v` as a varint (1–10 bytes).
pub(crate) fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one varint from the front of `b`, advancing it; `None` when `b`
/// ends inside it or it does not fit a `u64`.
pub(crate) fn take(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            *b = &b[i + 1..];
            return Some(v);
        }
    }
    None
}

/// Reads a varint that must fit a `u32`.
pub(crate) fn take_u32(b: &mut &[u8]) -> Option<u32> {
    take(b).and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_overlong() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put(&mut out, v);
            let mut b = out.as_slice();
            assert_eq!(take(&mut b), Some(v));
            assert!(b.is_empty());
        }
        let mut out = Vec::new();
        put(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        assert_eq!(take(&mut &[0x80u8][..]), None, "truncated");
        assert_eq!(take(&mut &[0xffu8; 10][..]), None, "more than 64 bits");
        assert_eq!(take_u32(&mut &[0x80u8, 0x80, 0x80, 0x80, 0x10][..]), None);
    }
}
