//! The ingest pipeline (reader → chunker → encoder): the same input stores the
//! same chunks and bytes however the source delivers it; a failing source or
//! a failing pack writer fails the ingest with its own error, promptly, and
//! leaves no dump behind.

use std::fs;
use std::io::{self, Cursor, Read};

use pgsnapman_store::{ChunkId, Store, StoreError};
use tempfile::tempdir;
use uuid::Uuid;

use crate::helpers::{meta, opts, random_bytes, read_back, text_rows};

/// A source delivering `step` bytes per read, failing after `fail_after`
/// bytes if set; counts what was read.
struct Source {
    data: Vec<u8>,
    at: usize,
    step: usize,
    fail_after: Option<usize>,
}

impl Read for Source {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.fail_after.is_some_and(|f| self.at >= f) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the dump program died",
            ));
        }
        let end = self.fail_after.unwrap_or(usize::MAX).min(self.data.len());
        let n = self.step.min(out.len()).min(end - self.at);
        out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `inner` over and over until `left` bytes are read.
struct Cycle<'a> {
    inner: &'a mut Source,
    left: usize,
    read: usize,
}

impl Read for Cycle<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.inner.at == self.inner.data.len() {
            self.inner.at = 0;
        }
        let cap = out.len().min(self.left);
        let n = self.inner.read(&mut out[..cap])?;
        self.left -= n;
        self.read += n;
        Ok(n)
    }
}

/// Two days of a table: the second has scattered edits (delta chunks) and
/// some random bytes (incompressible chunks).
fn days() -> (Vec<u8>, Vec<u8>) {
    let mut day1 = text_rows(11, 60_000);
    day1.extend_from_slice(&random_bytes(12, 300_000));
    let mut day2 = day1.clone();
    for at in (5_000..day2.len()).step_by(97_000) {
        day2[at..at + 4].copy_from_slice(b"#up#");
    }
    (day1, day2)
}

/// Stores both days through sources of read size `step`; returns the chunk
/// lists and new stored bytes of each day.
fn store_days(step: usize) -> Vec<(Vec<ChunkId>, u64)> {
    let dir = tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (day1, day2) = days();
    let mut out = Vec::new();
    for data in [day1, day2] {
        let dump = Uuid::now_v7();
        let mut ingest = store.begin(dump).unwrap();
        let source = Source {
            data: data.clone(),
            at: 0,
            step,
            fail_after: None,
        };
        let entry = ingest.add_file("dump", source).unwrap();
        assert_eq!(entry.size, data.len() as u64);
        let m = ingest.finish(meta("app")).unwrap();
        assert!(read_back(&store, dump, "dump") == data, "step {step}");
        out.push((
            entry.chunks.iter().map(|c| c.id).collect(),
            m.new_stored_bytes,
        ));
    }
    assert!(store.verify().unwrap().problems.is_empty());
    out
}

#[test]
fn the_same_input_stores_the_same_chunks_and_bytes_whatever_the_read_sizes() {
    let want = store_days(1 << 20);
    assert!(
        want[1].1 < want[0].1 / 4,
        "day 2 is stored as deltas: {want:?}"
    );
    for step in [1, 4093, 65_536, 3 << 20] {
        assert_eq!(store_days(step), want, "step {step}");
    }
}

#[test]
fn a_failing_source_fails_the_ingest_with_its_error_and_stores_no_dump() {
    let dir = tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let (day1, _) = days();
    let mut ingest = store.begin(Uuid::now_v7()).unwrap();
    let source = Source {
        data: day1.clone(),
        at: 0,
        step: 10_000,
        fail_after: Some(day1.len() / 2),
    };
    let err = ingest.add_file("dump", source).unwrap_err();
    match &err {
        StoreError::Io { context, error } => {
            assert_eq!(error.kind(), io::ErrorKind::BrokenPipe, "{err}");
            assert!(context.contains("read dump"), "{err}");
        }
        other => panic!("expected the source's I/O error, got {other}"),
    }
    // The ingest is unusable afterwards, and nothing became a dump.
    assert!(
        ingest
            .add_file("other", Cursor::new(b"x".to_vec()))
            .is_err()
    );
    drop(ingest);
    assert!(store.manifests().unwrap().is_empty());
    assert!(store.verify().unwrap().problems.is_empty());
}

#[test]
fn a_failing_pack_writer_stops_reading_the_source_and_reports_its_error() {
    let dir = tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    // No pack can be created (a file where the packs directory was; even
    // root cannot create a file inside it).
    let packs = dir.path().join("packs");
    fs::remove_dir_all(&packs).unwrap();
    fs::write(&packs, b"not a directory").unwrap();
    // 400 MiB, made up as it is read (a 1 MiB block over and over).
    let len = 400 << 20;
    let mut source = Source {
        data: text_rows(5, 25_000),
        at: 0,
        step: 1 << 16,
        fail_after: None,
    };
    let mut source = Cycle {
        inner: &mut source,
        left: len,
        read: 0,
    };
    let mut ingest = store.begin(Uuid::now_v7()).unwrap();
    let err = ingest.add_file("dump", &mut source).unwrap_err();
    assert!(err.to_string().contains("pack"), "{err}");
    // The reader stopped long before the end: within the read-ahead bound
    // (66 MiB) beyond what the chunker cut until it saw the failure (a few
    // MiB, more on a loaded machine).
    assert!(source.read < len / 2, "read {} of {len} bytes", source.read);
    drop(ingest);
    fs::remove_file(&packs).unwrap();
    fs::create_dir(&packs).unwrap();
    assert!(store.manifests().unwrap().is_empty());
}

#[test]
fn a_failing_pack_writer_stops_the_read_while_only_stored_chunks_follow() {
    let dir = tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let block = text_rows(6, 25_000);
    let cycled = || Source {
        data: block.clone(),
        at: 0,
        step: 1 << 16,
        fail_after: None,
    };
    // Day 1 stores the block, three times over (the chunks across its end
    // and its start too).
    let mut day1 = cycled();
    let mut day1 = Cycle {
        inner: &mut day1,
        left: 3 * block.len(),
        read: 0,
    };
    let mut ingest = store.begin(Uuid::now_v7()).unwrap();
    ingest.add_file("dump", &mut day1).unwrap();
    ingest.finish(meta("app")).unwrap();
    // No pack can be created any more (the sealed ones are kept aside).
    let packs = dir.path().join("packs");
    let kept = dir.path().join("kept");
    fs::rename(&packs, &kept).unwrap();
    fs::write(&packs, b"not a directory").unwrap();
    // Day 2: 3 MiB of new bytes (batches for the encoders, whose records
    // the writer cannot write), then 400 MiB made up of the stored block:
    // after the first few chunks the chunker hands nothing over again.
    let len = 400 << 20;
    let mut rest = cycled();
    let mut rest = Cycle {
        inner: &mut rest,
        left: len,
        read: 0,
    };
    let source = Cursor::new(random_bytes(13, 3 << 20)).chain(&mut rest);
    let mut ingest = store.begin(Uuid::now_v7()).unwrap();
    let err = ingest.add_file("dump", source).unwrap_err();
    assert!(err.to_string().contains("pack"), "{err}");
    // Stopped long before the end (see the test above).
    assert!(rest.read < len / 2, "read {} of {len} bytes", rest.read);
    drop(ingest);
    fs::remove_file(&packs).unwrap();
    fs::rename(&kept, &packs).unwrap();
    assert_eq!(store.manifests().unwrap().len(), 1);
    assert!(store.verify().unwrap().problems.is_empty());
}
