//! The newest dump of each job in this worker's store: a job's next dump is
//! stored following it, so that a changed chunk is offered its own previous
//! version as delta base (docs/store.md, "Positional bases"). A hint only:
//! a wrong, deleted or missing dump costs compression, never correctness.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use pgsnapman_store::Store;
use uuid::Uuid;

/// Job id → its newest stored dump (started_at, uuid). One entry per job
/// that has a dump in the store: bounded by the store's jobs.
type Newest = HashMap<i64, (DateTime<Utc>, Uuid)>;

/// Filled from the manifests on first use, then kept up to date by the
/// runner as it stores dumps; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct PreviousDumps {
    newest: Arc<Mutex<Option<Newest>>>,
}

impl PreviousDumps {
    /// The newest dump of `job_id` in `store`, if any. The first call reads
    /// every manifest once (as retention does after each dump); an
    /// unreadable store or manifest only loses hints (logged). Blocking.
    pub fn of(&self, store: &Store, job_id: i64) -> Option<Uuid> {
        if job_id <= 0 {
            return None;
        }
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        let map = newest.get_or_insert_with(|| scan(store));
        map.get(&job_id).map(|(_, dump)| *dump)
    }

    /// Notes that `dump` of `job_id`, started at `started_at`, is stored.
    pub fn stored(&self, job_id: i64, started_at: DateTime<Utc>, dump: Uuid) {
        let mut newest = self.newest.lock().unwrap_or_else(|p| p.into_inner());
        // Before the first scan there is nothing to update: the scan will
        // find this dump's manifest.
        if let Some(map) = newest.as_mut() {
            note(map, job_id, started_at, dump);
        }
    }
}

fn note(map: &mut Newest, job_id: i64, started_at: DateTime<Utc>, dump: Uuid) {
    let e = map.entry(job_id).or_insert((started_at, dump));
    if started_at >= e.0 {
        *e = (started_at, dump);
    }
}

fn scan(store: &Store) -> Newest {
    let mut map = Newest::new();
    let manifests = match store.each_manifest() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(
                "cannot list the manifests, dumps are stored without positional bases: {e}"
            );
            return map;
        }
    };
    for m in manifests {
        match m {
            Ok(m) => note(&mut map, m.meta.job_id, m.meta.started_at, m.dump_uuid),
            Err(e) => tracing::warn!("positional bases skip an unreadable manifest: {e}"),
        }
    }
    map
}

/// TEST ONLY: the manifest metadata of a dump of `job_id` started at `at`.
#[cfg(test)]
pub(crate) fn test_meta(job_id: i64, at: DateTime<Utc>) -> pgsnapman_store::ManifestMeta {
    pgsnapman_store::ManifestMeta {
        job_id,
        task_id: 0,
        instance_id: 1,
        host: "h".into(),
        port: 5432,
        database: "app".into(),
        schema: String::new(),
        dump_type: "FULL".into(),
        format: "CUSTOM".into(),
        server_version: String::new(),
        client_version: String::new(),
        started_at: at,
        finished_at: at,
        database_bytes: -1,
        notes: String::new(),
        script_hash: String::new(),
        table_rows: None,
        table_rows_error: String::new(),
        data_blocks: None,
        restore_metadata: serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsnapman_store::{ManifestMeta, StoreOptions};

    fn meta(job_id: i64, day: u32) -> ManifestMeta {
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, day, 0, 0, 0).unwrap();
        test_meta(job_id, at)
    }

    fn store_dump(store: &Store, job_id: i64, day: u32) -> Uuid {
        let dump = Uuid::now_v7();
        let mut ingest = store.begin(dump).unwrap();
        let data = format!("job {job_id} day {day} ").repeat(200);
        ingest.add_file("dump", data.as_bytes()).unwrap();
        ingest.finish(meta(job_id, day)).unwrap();
        dump
    }

    #[test]
    fn the_newest_dump_of_each_job_is_found_and_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        // Stored out of order: the newest is by start time, not by uuid.
        let j7_day3 = store_dump(&store, 7, 3);
        let _j7_day1 = store_dump(&store, 7, 1);
        let j8_day2 = store_dump(&store, 8, 2);
        let p = PreviousDumps::default();
        assert_eq!(p.of(&store, 7), Some(j7_day3));
        assert_eq!(p.of(&store, 8), Some(j8_day2));
        assert_eq!(p.of(&store, 9), None, "a job without dumps");
        assert_eq!(p.of(&store, 0), None, "no job");
        // After the scan, what the runner stores is followed without one.
        let j8_day4 = store_dump(&store, 8, 4);
        p.stored(8, meta(8, 4).started_at, j8_day4);
        assert_eq!(p.of(&store, 8), Some(j8_day4));
        p.stored(8, meta(8, 1).started_at, Uuid::now_v7());
        assert_eq!(
            p.of(&store, 8),
            Some(j8_day4),
            "an older dump is not newest"
        );
        // A deleted newest dump is still named (a hint): the ingest that
        // follows it ignores it (store test `positional`).
        store.delete_dump(j7_day3).unwrap();
        assert_eq!(p.of(&store, 7), Some(j7_day3));
        let next = Uuid::now_v7();
        let mut ingest = store.begin_after(next, p.of(&store, 7)).unwrap();
        ingest.add_file("dump", &b"job 7 day 5 "[..]).unwrap();
        ingest.finish(meta(7, 5)).unwrap();
        // A new scan (a restarted worker) no longer sees it.
        assert_eq!(PreviousDumps::default().of(&store, 7), Some(next));
    }
}
