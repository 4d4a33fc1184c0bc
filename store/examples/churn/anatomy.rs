//! `--anatomy`: where a churn day's new bytes go. For every chunk a day adds:
//! delta or whole, its record's size, which day its base came from, whether
//! it starts where a chunk of the day before started (else its boundary
//! moved), and what the same chunk would cost against other bases or levels
//! (the previous day's chunk with the same start, that chunk's neighbourhood,
//! the chosen base at a higher zstd level, the preceding chunk as a prefix).

use std::collections::HashMap;

use pgsnapman_store::delta;
use pgsnapman_store::pack::{ChunkKind, RECORD_HEADER_LEN};
use pgsnapman_store::{ChunkId, Store};
use uuid::Uuid;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Bytes compared to find a chunk of the day before starting with the same
/// content.
const START_KEY: usize = 64;
/// How far past a same-start chunk's length the neighbourhood base reaches.
const SLACK: usize = 64 * 1024;

/// Where a stored chunk's bytes are: day (0-based), offset, length.
type Place = (usize, usize, usize);

/// One day's tallies (sizes in bytes).
#[derive(Default)]
struct Tally {
    new_chunks: u64,
    deltas: u64,
    delta_bytes: u64,
    delta_raw: u64,
    fulls: u64,
    full_bytes: u64,
    full_raw: u64,
    /// Whole chunks in the last 2% of the dump (rows moved there / inserted).
    fulls_at_end: u64,
    full_bytes_at_end: u64,
    /// Deltas whose base was stored before the day before.
    older_base: u64,
    /// New chunks starting where no chunk of the day before started.
    moved_start: u64,
    /// Sum over deltas of the cheapest alternative below (or the actual).
    best_alt_delta: u64,
    /// Deltas where the same-start previous chunk gave < 90% of the actual.
    better_base: u64,
    same_start_delta: u64,
    window_delta: u64,
    level3_delta: u64,
    level9_delta: u64,
    /// Whole chunks compressed with the preceding chunk of the same dump
    /// as prefix.
    prefixed_full: u64,
}

/// Analyses day `day` (1-based index into `dumps`, ≥ 1) of `ids`.
pub fn day(
    store: &Store,
    dumps: &[Vec<u8>],
    ids: &[Uuid],
    day: usize,
    places: &mut HashMap<ChunkId, Place>,
) -> Result<()> {
    let prev_starts = starts(store, ids[day - 1], &dumps[day - 1])?;
    let dump = &dumps[day];
    let m = store.manifest(ids[day])?;
    let mut t = Tally::default();
    let mut offset = 0usize;
    let mut prev_chunk: Option<(usize, usize)> = None;
    for c in m.files.iter().flat_map(|f| &f.chunks) {
        let len = c.len as usize;
        let raw = &dump[offset..offset + len];
        let here = (offset, len);
        offset += len;
        if places.contains_key(&c.id) {
            prev_chunk = Some(here);
            continue;
        }
        places.insert(c.id, (day, here.0, len));
        let e = store.index().get(&c.id)?.ok_or("new chunk not indexed")?;
        t.new_chunks += 1;
        let same_start = raw
            .get(..START_KEY)
            .and_then(|k| prev_starts.get(k))
            .copied();
        if same_start.is_none() {
            t.moved_start += 1;
        }
        match e.kind {
            ChunkKind::Full => {
                t.fulls += 1;
                t.full_bytes += u64::from(e.stored_len);
                t.full_raw += len as u64;
                if here.0 * 50 >= dump.len() * 49 {
                    t.fulls_at_end += 1;
                    t.full_bytes_at_end += u64::from(e.stored_len);
                }
                let prefixed = match prev_chunk {
                    Some((o, l)) => delta::encode(raw, &dump[o..o + l], 1)?.len(),
                    None => e.stored_len as usize,
                };
                t.prefixed_full += prefixed.min(e.stored_len as usize) as u64;
            }
            ChunkKind::Delta => {
                let actual = e.stored_len as usize;
                t.deltas += 1;
                t.delta_bytes += actual as u64;
                t.delta_raw += len as u64;
                let (bday, bo, bl) = *places.get(&e.base).ok_or("base of unknown place")?;
                if bday + 1 < day {
                    t.older_base += 1;
                }
                let base = &dumps[bday][bo..bo + bl];
                let l3 = delta::encode(raw, base, 3)?.len();
                let l9 = delta::encode(raw, base, 9)?.len();
                t.level3_delta += l3 as u64;
                t.level9_delta += l9 as u64;
                let prev = &dumps[day - 1];
                let (ss, win) = match same_start {
                    Some((po, pl)) => {
                        let ss = delta::encode(raw, &prev[po..po + pl], 1)?.len();
                        let end = (po + len + SLACK).min(prev.len());
                        let win = delta::encode(raw, &prev[po.saturating_sub(SLACK)..end], 1)?;
                        (ss, win.len())
                    }
                    None => (actual, actual),
                };
                if ss * 10 < actual * 9 {
                    t.better_base += 1;
                }
                t.same_start_delta += ss as u64;
                t.window_delta += win as u64;
                t.best_alt_delta += actual.min(ss).min(win) as u64;
            }
        }
        prev_chunk = Some(here);
    }
    print(day + 1, &t);
    Ok(())
}

/// Records where day 1's chunks are.
pub fn first_day(store: &Store, id: Uuid, places: &mut HashMap<ChunkId, Place>) -> Result<()> {
    let mut offset = 0;
    for c in store.manifest(id)?.files.iter().flat_map(|f| &f.chunks) {
        places.entry(c.id).or_insert((0, offset, c.len as usize));
        offset += c.len as usize;
    }
    Ok(())
}

/// The first `START_KEY` bytes of each chunk of a dump → its offset, length.
fn starts<'a>(
    store: &Store,
    id: Uuid,
    dump: &'a [u8],
) -> Result<HashMap<&'a [u8], (usize, usize)>> {
    let mut out = HashMap::new();
    let mut offset = 0;
    for c in store.manifest(id)?.files.iter().flat_map(|f| &f.chunks) {
        let len = c.len as usize;
        if len >= START_KEY {
            out.insert(&dump[offset..offset + START_KEY], (offset, len));
        }
        offset += len;
    }
    Ok(out)
}

fn print(day: usize, t: &Tally) {
    let kb = |b: u64| format!("{:.1}", b as f64 / 1e3);
    let headers = t.new_chunks * RECORD_HEADER_LEN as u64;
    println!(
        "anatomy day {day}: {} new chunks ({} moved start); {} deltas: {} kB for {} kB raw \
         ({} with a base older than the day before); {} whole: {} kB for {} kB raw \
         ({} of them, {} kB, in the last 2%); record headers {} kB",
        t.new_chunks,
        t.moved_start,
        t.deltas,
        kb(t.delta_bytes),
        kb(t.delta_raw),
        t.older_base,
        t.fulls,
        kb(t.full_bytes),
        kb(t.full_raw),
        t.fulls_at_end,
        kb(t.full_bytes_at_end),
        kb(headers),
    );
    println!(
        "anatomy day {day}: deltas against the same-start chunk of the day before {} kB \
         ({} better by >10%), against its ±64 KiB neighbourhood {} kB, best of the three {} kB; \
         chosen base at zstd 3 {} kB, at 9 {} kB; whole chunks with the preceding chunk as \
         prefix {} kB",
        kb(t.same_start_delta),
        t.better_base,
        kb(t.window_delta),
        kb(t.best_alt_delta),
        kb(t.level3_delta),
        kb(t.level9_delta),
        kb(t.prefixed_full),
    );
}
