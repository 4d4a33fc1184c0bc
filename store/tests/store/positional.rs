//! Positional bases: an ingest told the job's previous dump offers each new
//! chunk, as delta base, the chunk at its place in that dump; a hint naming
//! a dump that is not there changes nothing.

use std::io::Cursor;

use pgsnapman_store::resemblance::sketch;
use pgsnapman_store::{ChunkId, Store, StoreOptions};
use uuid::Uuid;

use crate::delta::{chain, scattered_edit};
use crate::helpers::{meta, read_back, store_files, text_rows};

/// Stores `files` as one dump following `previous`; returns it and the pack
/// bytes it added.
fn store_after(store: &Store, previous: Option<Uuid>, files: &[(&str, &[u8])]) -> (Uuid, u64) {
    let dump = Uuid::now_v7();
    let mut ingest = store.begin_after(dump, previous).unwrap();
    for (name, data) in files {
        ingest.add_file(name, Cursor::new(data)).unwrap();
    }
    let m = ingest.finish(meta("app")).unwrap();
    (dump, m.new_stored_bytes)
}

fn first_chunk(store: &Store, dump: Uuid, name: &str) -> ChunkId {
    store.manifest(dump).unwrap().file(name).unwrap().chunks[0].id
}

/// Eight paragraphs (each under 8 KiB, so no merged-chunk split applies)
/// and the document made of them (one chunk: default chunking, 64 KiB
/// minimum), for the first seed where each paragraph shares at most one of
/// the document's super-features and together they share all four: the
/// look-alikes of a paragraph pool, one vote each.
fn paragraphs_and_document() -> (Vec<Vec<u8>>, Vec<u8>) {
    let features = StoreOptions::default().features;
    for seed in 0..100u64 {
        let paragraphs: Vec<Vec<u8>> = (0..8).map(|k| text_rows(seed * 8 + k, 150)).collect();
        let doc = paragraphs.concat();
        let whole = sketch(&doc, &features).unwrap();
        // Per paragraph, which of the document's super-features it shares.
        let shared: Vec<Vec<bool>> = paragraphs
            .iter()
            .map(|p| match sketch(p, &features) {
                Some(part) => whole
                    .slots()
                    .zip(part.slots())
                    .map(|(a, b)| a == b)
                    .collect(),
                None => vec![false; whole.slots().count()],
            })
            .collect();
        let one_vote_each = shared.iter().all(|s| s.iter().filter(|x| **x).count() <= 1);
        let covered: Vec<bool> = (0..whole.slots().count())
            .map(|i| shared.iter().any(|s| s[i]))
            .collect();
        if one_vote_each && covered.iter().all(|c| *c) {
            assert!(doc.len() < 64 * 1024, "{}", doc.len());
            assert!(paragraphs.iter().all(|p| p.len() < 8 * 1024));
            return (paragraphs, doc);
        }
    }
    panic!("no seed gives one-vote look-alikes");
}

/// Day 1 of a store where a document's super-features all belong to
/// look-alikes: its paragraphs (`paragraphs_and_document`) are stored alone
/// first, in the same dump, and claim the feature entries the document
/// shares with them. Returns the store, day 1, the document.
fn look_alikes_first(dir: &std::path::Path) -> (Store, Uuid, Vec<u8>) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let (paragraphs, doc) = paragraphs_and_document();
    let names: Vec<String> = (0..paragraphs.len()).map(|k| format!("p{k}")).collect();
    let mut files: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&paragraphs)
        .map(|(n, p)| (n.as_str(), &p[..]))
        .collect();
    files.push(("doc", &doc));
    let day1 = store_files(&store, &files);
    (store, day1, doc)
}

#[test]
fn the_positional_base_finds_a_changed_chunks_own_version_among_look_alikes() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (with, day1, doc) = look_alikes_first(dirs[0].path());
    let (without, day1_control, _) = look_alikes_first(dirs[1].path());
    let doc2 = scattered_edit(&doc, 3_000, 20_000, b'2');
    let files: [(&str, &[u8]); 1] = [("doc", &doc2)];

    // Without the hint, the feature index names only look-alikes: the new
    // version is coded against one of them, poorly, or stored whole.
    let (day2_control, bytes_without) = store_after(&without, None, &files);
    let control = chain(&without, first_chunk(&without, day2_control, "doc"));
    assert_ne!(
        control.get(1),
        Some(&first_chunk(&without, day1_control, "doc")),
        "the look-alikes hide the document's own version"
    );

    // With it, the document's own version at the same place is its base.
    let (day2, bytes_with) = store_after(&with, Some(day1), &files);
    let id2 = first_chunk(&with, day2, "doc");
    assert_eq!(
        chain(&with, id2).get(1),
        Some(&first_chunk(&with, day1, "doc")),
        "the new version is coded against its own predecessor"
    );
    assert!(
        bytes_with * 10 < bytes_without,
        "{bytes_with} vs {bytes_without} bytes"
    );
    assert_eq!(read_back(&with, day2, "doc"), doc2);
    assert!(with.verify().unwrap().is_clean());
}

#[test]
fn a_hint_naming_a_deleted_or_unknown_dump_stores_as_without_one() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (store, day1, doc) = look_alikes_first(dirs[0].path());
    let (control, _, _) = look_alikes_first(dirs[1].path());
    let doc2 = scattered_edit(&doc, 3_000, 20_000, b'2');
    let files: [(&str, &[u8]); 1] = [("doc", &doc2)];
    let (_, want) = store_after(&control, None, &files);

    store.delete_dump(day1).unwrap();
    let (day2, got) = store_after(&store, Some(day1), &files);
    assert_eq!(got, want, "a deleted previous dump is no hint");
    assert_eq!(read_back(&store, day2, "doc"), doc2);

    let doc3 = scattered_edit(&doc, 5_000, 20_000, b'3');
    let files: [(&str, &[u8]); 1] = [("doc", &doc3)];
    let (_, want) = store_after(&control, None, &files);
    let (day3, got) = store_after(&store, Some(Uuid::now_v7()), &files);
    assert_eq!(got, want, "an unknown dump is no hint");
    assert_eq!(read_back(&store, day3, "doc"), doc3);
    assert!(store.verify().unwrap().is_clean());
}

/// A chunk the previous dump split in two is cut the same way when it
/// comes again, even when the feature index names neither part: the two
/// chunks at its place add up to its length and the first is its first
/// bytes. Here a look-alike of the whole chunk, stored after it, holds its
/// super-features; without the hint the chunk is stored again as a delta.
#[test]
fn a_chunk_split_by_the_previous_dump_is_cut_the_same_way_again() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut bytes = Vec::new();
    for (dir, follow) in dirs.iter().zip([false, true]) {
        // Default chunking: 64 KiB minimum, so each input below is one chunk.
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let a = text_rows(111, 210);
        let b = text_rows(112, 1_000);
        assert!(a.len() > 9_000 && a.len() + b.len() < 64 * 1024);
        store_after(&store, None, &[("a", &a), ("b", &b)]);
        let mut merged = scattered_edit(&a, 500, 9_000, b'x');
        merged.extend_from_slice(&scattered_edit(&b, 700, 9_000, b'y'));
        // A look-alike of its last `a.len()` bytes, after it (see
        // `delta::a_split_chunk_stored_again_is_cut_as_before_and_stores_nothing`).
        let tail = scattered_edit(&merged[merged.len() - a.len()..], 300, 4_000, b't');
        let files: [(&str, &[u8]); 2] = [("t", &merged), ("l", &tail)];
        let (day2, _) = store_after(&store, None, &files);
        let lens = |d: Uuid| -> Vec<u32> {
            let m = store.manifest(d).unwrap();
            m.chunk_refs().map(|c| c.len).collect()
        };
        assert_eq!(lens(day2), [a.len(), b.len(), tail.len()].map(|l| l as u32));
        // A look-alike of the whole chunk then takes its super-features.
        let look_alike = scattered_edit(&merged, 100, 30_000, b'l');
        store_after(&store, None, &[("l", &look_alike)]);

        let (day3, new) = store_after(&store, follow.then_some(day2), &files);
        assert_eq!(read_back(&store, day3, "t"), merged);
        if follow {
            assert_eq!(lens(day3), lens(day2), "cut as the previous dump");
            assert_eq!(new, 0, "nothing stored again");
        }
        assert!(store.verify().unwrap().is_clean());
        bytes.push(new);
    }
    assert!(bytes[0] > 0, "without the hint the chunk is stored again");
}
