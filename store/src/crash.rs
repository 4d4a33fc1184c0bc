//! Named crash points, a testing hook: `PGSNAPMAN_CRASH_AT=<point>[:<nth>]`
//! makes the process `abort()` the nth time (default the first) it reaches
//! `<point>`, as a `kill -9` there would. The variable is read once; unset,
//! a point costs one atomic load. Points and their places: docs/store.md.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms one crash point.
pub const CRASH_AT_ENV: &str = "PGSNAPMAN_CRASH_AT";

/// A place in the store's write paths where a test may crash the process.
/// Each is reached right *after* the step its name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// A record was appended to an open pack (buffered, not durable).
    PackAppend,
    /// A pack's trailer was written and the file fsync'd (still `.open`).
    PackFsync,
    /// A pack was renamed `.open` → `.pack` (directory not fsync'd yet).
    PackRename,
    /// The packs directory was fsync'd after a rename: the pack is sealed.
    PackDirFsync,
    /// A sealed pack's index entries were written (one synced batch).
    IndexSealedBatch,
    /// An ingest's last pack is sealed and indexed; no manifest yet.
    IngestSealed,
    /// A manifest's `.tmp` file was written and fsync'd, not renamed.
    ManifestTmpWritten,
    /// The manifest was renamed into place (directory not fsync'd yet).
    ManifestRenamed,
    /// The manifests directory was fsync'd: the dump exists.
    ManifestDurable,
    /// The dump's summary was written to the index.
    IngestSummary,
    /// `delete_dump` unlinked a manifest (directory not fsync'd yet).
    DeleteUnlinked,
    /// `delete_dump` fsync'd the manifests directory (summary not removed).
    DeleteDirFsync,
    /// gc read every manifest (mark phase done, nothing changed yet).
    GcMarked,
    /// gc deleted one batch of dead index entries.
    GcIndexBatch,
    /// gc deleted the dead feature entries.
    GcFeaturesSwept,
    /// gc removed one pack without live chunks (directory not fsync'd).
    GcPackRemoved,
    /// gc fsync'd the packs directory after removing dead packs.
    GcPacksDirFsync,
    /// Repack copied one live record into its new (open) pack.
    RepackCopied,
    /// Repack sealed a new pack: durable, not indexed (the old one still is).
    RepackSealed,
    /// Repack switched the moved chunks' index entries to the new pack.
    RepackIndexed,
    /// Repack removed one old pack (directory not fsync'd).
    RepackOldRemoved,
    /// Repack fsync'd the packs directory after removing the old packs.
    RepackDirFsync,
    /// `compress_later` removed one pack it rewrote (directory not fsync'd).
    LaterOldRemoved,
    /// `compress_later` fsync'd the packs directory; the marks remain.
    LaterDirFsync,
    /// `compress_later` removed the marks of the packs it dealt with.
    LaterMarksForgotten,
    /// `Store::open` removed one leftover of an interrupted write (an
    /// unsealed pack or a manifest `.tmp`; directory not fsync'd yet).
    OpenLeftoversRemoved,
}

impl CrashPoint {
    /// Every point, in the order a workload of ingest, delete, gc and repack
    /// reaches them first.
    pub const ALL: [CrashPoint; 26] = [
        CrashPoint::OpenLeftoversRemoved,
        CrashPoint::PackAppend,
        CrashPoint::PackFsync,
        CrashPoint::PackRename,
        CrashPoint::PackDirFsync,
        CrashPoint::IndexSealedBatch,
        CrashPoint::IngestSealed,
        CrashPoint::ManifestTmpWritten,
        CrashPoint::ManifestRenamed,
        CrashPoint::ManifestDurable,
        CrashPoint::IngestSummary,
        CrashPoint::DeleteUnlinked,
        CrashPoint::DeleteDirFsync,
        CrashPoint::GcMarked,
        CrashPoint::GcIndexBatch,
        CrashPoint::GcFeaturesSwept,
        CrashPoint::GcPackRemoved,
        CrashPoint::GcPacksDirFsync,
        CrashPoint::RepackCopied,
        CrashPoint::RepackSealed,
        CrashPoint::RepackIndexed,
        CrashPoint::RepackOldRemoved,
        CrashPoint::RepackDirFsync,
        CrashPoint::LaterOldRemoved,
        CrashPoint::LaterDirFsync,
        CrashPoint::LaterMarksForgotten,
    ];

    /// The name used in `PGSNAPMAN_CRASH_AT`.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::PackAppend => "pack.append",
            CrashPoint::PackFsync => "pack.fsync",
            CrashPoint::PackRename => "pack.rename",
            CrashPoint::PackDirFsync => "pack.dir_fsync",
            CrashPoint::IndexSealedBatch => "index.sealed_batch",
            CrashPoint::IngestSealed => "ingest.sealed",
            CrashPoint::ManifestTmpWritten => "manifest.tmp_written",
            CrashPoint::ManifestRenamed => "manifest.renamed",
            CrashPoint::ManifestDurable => "manifest.durable",
            CrashPoint::IngestSummary => "ingest.summary",
            CrashPoint::DeleteUnlinked => "delete.unlinked",
            CrashPoint::DeleteDirFsync => "delete.dir_fsync",
            CrashPoint::GcMarked => "gc.marked",
            CrashPoint::GcIndexBatch => "gc.index_batch",
            CrashPoint::GcFeaturesSwept => "gc.features_swept",
            CrashPoint::GcPackRemoved => "gc.pack_removed",
            CrashPoint::GcPacksDirFsync => "gc.packs_dir_fsync",
            CrashPoint::RepackCopied => "repack.copied",
            CrashPoint::RepackSealed => "repack.sealed",
            CrashPoint::RepackIndexed => "repack.indexed",
            CrashPoint::RepackOldRemoved => "repack.old_removed",
            CrashPoint::RepackDirFsync => "repack.dir_fsync",
            CrashPoint::LaterOldRemoved => "later.old_removed",
            CrashPoint::LaterDirFsync => "later.dir_fsync",
            CrashPoint::LaterMarksForgotten => "later.marks_forgotten",
            CrashPoint::OpenLeftoversRemoved => "open.leftovers_removed",
        }
    }

    /// The point called `name`, if any.
    pub fn from_name(name: &str) -> Option<CrashPoint> {
        CrashPoint::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// The armed point, the hit on which to abort, and the hits so far.
struct Armed {
    point: CrashPoint,
    nth: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var(CRASH_AT_ENV).ok()?;
            match parse(&spec) {
                Ok((point, nth)) => Some(Armed {
                    point,
                    nth,
                    hits: AtomicU64::new(0),
                }),
                Err(e) => {
                    // A typo must not make a crash test pass by never crashing.
                    eprintln!("{CRASH_AT_ENV}: {e}");
                    std::process::abort();
                }
            }
        })
        .as_ref()
}

/// Parses `<point>[:<nth>]` (nth ≥ 1).
fn parse(spec: &str) -> Result<(CrashPoint, u64), String> {
    let (name, nth) = match spec.split_once(':') {
        Some((name, n)) => match n.parse::<u64>() {
            Ok(n) if n >= 1 => (name, n),
            _ => return Err(format!("{n:?} is not a hit count of 1 or more")),
        },
        None => (spec, 1),
    };
    let point = CrashPoint::from_name(name).ok_or_else(|| {
        let mut cut: String = name.chars().take(64).collect();
        if cut.len() < name.len() {
            cut.push('…');
        }
        format!("unknown crash point {cut:?}")
    })?;
    Ok((point, nth))
}

/// Aborts the process if `point` is the armed one and this is its nth hit.
pub(crate) fn at(point: CrashPoint) {
    let Some(a) = armed() else { return };
    if a.point == point && a.hits.fetch_add(1, Ordering::SeqCst) + 1 == a.nth {
        eprintln!("{CRASH_AT_ENV}: aborting at {}", point.name());
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_parse_back() {
        for p in CrashPoint::ALL {
            assert_eq!(CrashPoint::from_name(p.name()), Some(p));
            assert_eq!(parse(p.name()), Ok((p, 1)));
        }
        let mut names: Vec<&str> = CrashPoint::ALL.iter().map(|p| p.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CrashPoint::ALL.len());
    }

    #[test]
    fn specs_are_checked() {
        assert_eq!(parse("pack.fsync:3"), Ok((CrashPoint::PackFsync, 3)));
        assert!(parse("pack.fsync:0").is_err());
        assert!(parse("pack.fsync:x").is_err());
        let long = "x".repeat(10_000);
        let err = parse(&long).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }
}
