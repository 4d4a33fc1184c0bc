//! The chunker's window over the read-ahead queue: cuts the queued blocks
//! into content-defined chunks (FastCDC 2020, the same cuts as fastcdc's
//! `StreamCDC`) and lends each chunk as a slice, so a chunk the store already
//! has is hashed where it lies and never copied. Owns no I/O of its own.

use std::io;
use std::sync::mpsc::{Receiver, SyncSender};

use fastcdc::v2020;

use super::feed::{BLOCK_BYTES, Block};
use crate::chunk::ChunkParams;

/// Room kept beyond `max_bytes` in the window; why: the unread tail (less
/// than `max_bytes`) moves to the front only when a block no longer fits, so
/// it moves once per ~`WINDOW_SLACK` bytes cut instead of once per chunk (as
/// `StreamCDC` does), and the window stays bounded at `max_bytes +
/// WINDOW_SLACK` (5 MiB with the default chunk sizes).
const WINDOW_SLACK: usize = 4 * BLOCK_BYTES;

/// FastCDC's cut parameters (as `StreamCDC::with_level` derives them).
#[derive(Clone, Copy)]
struct Cut {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Cut {
    fn of(p: &ChunkParams) -> Cut {
        let bits = v2020::logarithm2(p.avg_bytes);
        let normalization = p.fastcdc_level().bits();
        Cut {
            min: p.min_bytes as usize,
            avg: p.avg_bytes as usize,
            max: p.max_bytes as usize,
            mask_s: v2020::MASKS[(bits + normalization) as usize],
            mask_l: v2020::MASKS[(bits - normalization) as usize],
        }
    }

    /// Length of the chunk at the start of `data` (at most `max` bytes of
    /// it are looked at; all of them only at the source's end).
    fn first(&self, data: &[u8]) -> usize {
        let (_, n) = v2020::cut(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        // FastCDC cuts at least `min` bytes in (or takes all of a shorter
        // rest): never 0 for data; taking all is the safe reading.
        if n == 0 { data.len() } else { n }
    }
}

/// Chunks of the queued blocks, in order. Blocks go back to the reading
/// thread (`spare`) once copied into the window.
pub(super) struct Window {
    blocks: Receiver<Block>,
    spare: SyncSender<Vec<u8>>,
    cut: Cut,
    /// Bytes `start..` are not cut yet; capacity fixed at `max + SLACK`.
    buf: Vec<u8>,
    start: usize,
    /// The source ended (the queue closed).
    ended: bool,
}

impl Window {
    pub(super) fn new(
        blocks: Receiver<Block>,
        spare: SyncSender<Vec<u8>>,
        params: &ChunkParams,
    ) -> Window {
        let cut = Cut::of(params);
        Window {
            blocks,
            spare,
            buf: Vec::with_capacity(cut.max + WINDOW_SLACK),
            cut,
            start: 0,
            ended: false,
        }
    }

    /// The next chunk, lent until the next call; `None` at the source's end.
    /// The source's read error is returned once every byte before it was cut.
    pub(super) fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        // A cut looks at up to `max` bytes, so it waits for them (as
        // `StreamCDC` fills its buffer) unless the source ended.
        while self.buf.len() - self.start < self.cut.max && !self.ended {
            self.top_up()?;
        }
        let rest = &self.buf[self.start..];
        if rest.is_empty() {
            return Ok(None);
        }
        let n = self.cut.first(&rest[..rest.len().min(self.cut.max)]);
        let at = self.start;
        self.start += n;
        Ok(Some(&self.buf[at..at + n]))
    }

    /// Appends the next queued block (waiting for it), first moving the
    /// uncut tail to the front if the block would not fit.
    fn top_up(&mut self) -> io::Result<()> {
        let block = match self.blocks.recv() {
            Ok(block) => block?,
            Err(_) => {
                // The reading thread is done: the source's end.
                self.ended = true;
                return Ok(());
            }
        };
        if self.buf.len() + block.len > self.buf.capacity() {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(block.data());
        // A full spare queue or a gone reader: just free it.
        let _ = self.spare.try_send(block.buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::mpsc::sync_channel;

    use fastcdc::v2020::StreamCDC;

    use super::super::feed::{Filled, READ_AHEAD_BLOCKS, pump};
    use super::*;

    /// Text-like bytes with repeats (cuts of every length occur).
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = state >> 33;
            if r.is_multiple_of(7) {
                out.extend_from_slice(&[b'0' + (r % 10) as u8; 300]);
            } else {
                out.extend_from_slice(format!("{r}\tword {}\n", r % 977).as_bytes());
            }
        }
        out.truncate(len);
        out
    }

    /// Cuts `source` through the pump and a window, as the pipeline does.
    fn window_cuts(source: &[u8], params: &ChunkParams, step: usize) -> Vec<Vec<u8>> {
        struct Steps<'a>(&'a [u8], usize);
        impl Read for Steps<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(out.len()).min(self.0.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let (tx, rx) = sync_channel(READ_AHEAD_BLOCKS);
        let (spare_tx, spare_rx) = sync_channel(READ_AHEAD_BLOCKS);
        std::thread::scope(|s| {
            let cutter = s.spawn(move || {
                let mut w = Window::new(rx, spare_tx, params);
                let mut chunks = Vec::new();
                while let Some(c) = w.next_chunk().unwrap() {
                    chunks.push(c.to_vec());
                    assert!(w.buf.capacity() <= params.max_bytes as usize + WINDOW_SLACK);
                }
                chunks
            });
            assert!(pump(Steps(source, step), &tx, &spare_rx).unwrap());
            drop(tx);
            cutter.join().unwrap()
        })
    }

    #[test]
    fn cuts_are_those_of_fastcdc_streaming_whatever_the_read_sizes() {
        let small = ChunkParams {
            min_bytes: 4 * 1024,
            avg_bytes: 16 * 1024,
            max_bytes: 64 * 1024,
            normalization: 1,
        };
        let big = ChunkParams {
            min_bytes: 256 * 1024,
            avg_bytes: 1 << 20,
            max_bytes: 3 << 20,
            normalization: 2,
        };
        for (params, len) in [
            (ChunkParams::default(), 9 * BLOCK_BYTES + 777),
            (small, 3 * BLOCK_BYTES + 5),
            (big, 11 * BLOCK_BYTES + 12_345),
            (ChunkParams::default(), 1000),
        ] {
            let source = data(len, u64::from(params.avg_bytes));
            let want: Vec<Vec<u8>> = StreamCDC::with_level(
                &source[..],
                params.min_bytes,
                params.avg_bytes,
                params.max_bytes,
                params.fastcdc_level(),
            )
            .map(|c| c.unwrap().data)
            .collect();
            assert!(
                want.len() > 2 || len < 10_000,
                "{params:?}: {} cuts",
                want.len()
            );
            for step in [1 << 16, 4093, 3 * BLOCK_BYTES] {
                let got = window_cuts(&source, &params, step);
                assert!(got == want, "{params:?} step {step}: cuts differ");
            }
        }
    }

    #[test]
    fn an_empty_source_has_no_chunk_and_a_source_error_ends_the_cutting() {
        assert!(window_cuts(&[], &ChunkParams::default(), 1 << 16).is_empty());
        let (tx, rx) = sync_channel(4);
        let (spare_tx, _spare_rx) = sync_channel(4);
        tx.send(Ok(Filled {
            buf: vec![7; 100],
            len: 100,
        }))
        .unwrap();
        tx.send(Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone")))
            .unwrap();
        let mut w = Window::new(rx, spare_tx, &ChunkParams::default());
        // The 100 bytes are not cut before the error (a cut waits for `max`
        // bytes or the end, as `StreamCDC` does): the error ends it.
        let err = w.next_chunk().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
