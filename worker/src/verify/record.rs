//! What this worker remembers of verifications, beside the fire states
//! (column family `fires`, docs/worker.md): per job, the fire state of its
//! verification cron (`verify/fire/<job id>`), and the dumps of the job
//! verified OK here (`verify/ok/<job id>`, the newest `KEEP_VERIFIED`), so
//! that a scheduled verification skips a dump already verified — offline
//! too, whoever asked (schedule or `verify now`).
use std::sync::Mutex;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::mirror::{FireState, Mirror};

/// Dumps per job remembered as verified OK (older ones drop out; a job's
/// newest dump is the only one its schedule verifies).
pub const KEEP_VERIFIED: usize = 16;

/// One dump verified OK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub dump_uuid: String,
    pub method: String,
}

/// Record updates are read-modify-write: one at a time (the scheduler and
/// tasks both record).
static WRITING: Mutex<()> = Mutex::new(());

fn fire_key(job_id: i64) -> Vec<u8> {
    [b"verify/fire/".as_slice(), &job_id.to_be_bytes()].concat()
}

fn ok_key(job_id: i64) -> Vec<u8> {
    [b"verify/ok/".as_slice(), &job_id.to_be_bytes()].concat()
}

pub fn fire_state(mirror: &Mirror, job_id: i64) -> Result<Option<FireState>> {
    mirror.fires_json(&fire_key(job_id))
}

pub fn put_fire_state(mirror: &Mirror, job_id: i64, state: &FireState) -> Result<()> {
    mirror.put_fires_json(&fire_key(job_id), state)
}

/// Whether `dump_uuid` was verified OK here in a way that covers `method`:
/// a restore covers a read (it reads every byte too), not the other way.
pub fn covers(list: &[Verified], dump_uuid: &str, method: &str) -> bool {
    list.iter()
        .any(|v| v.dump_uuid == dump_uuid && (v.method == method || v.method == "restore"))
}

pub fn verified(mirror: &Mirror, job_id: i64) -> Result<Vec<Verified>> {
    Ok(mirror.fires_json(&ok_key(job_id))?.unwrap_or_default())
}

/// Remembers that `dump_uuid` of `job_id` was verified OK by `method`.
pub fn note_ok(mirror: &Mirror, job_id: i64, dump_uuid: &str, method: &str) -> Result<()> {
    let _one = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let mut list = verified(mirror, job_id)?;
    let entry = Verified {
        dump_uuid: dump_uuid.to_string(),
        method: method.to_string(),
    };
    if !list.contains(&entry) {
        list.push(entry);
    }
    let excess = list.len().saturating_sub(KEEP_VERIFIED);
    list.drain(..excess);
    mirror.put_fires_json(&ok_key(job_id), &list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_covers_a_read_but_not_the_other_way() {
        let list = vec![
            Verified {
                dump_uuid: "a".into(),
                method: "read".into(),
            },
            Verified {
                dump_uuid: "b".into(),
                method: "restore".into(),
            },
        ];
        assert!(covers(&list, "a", "read"));
        assert!(!covers(&list, "a", "restore"));
        assert!(covers(&list, "b", "read"));
        assert!(covers(&list, "b", "restore"));
        assert!(!covers(&list, "c", "read"));
    }

    #[test]
    fn the_list_keeps_the_newest_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::state::dir(dir.path());
        {
            let state = crate::state::State::open(&path).unwrap();
            let m = Mirror::open(&state).unwrap();
            for i in 0..KEEP_VERIFIED + 3 {
                note_ok(&m, 5, &format!("d{i}"), "read").unwrap();
            }
            note_ok(&m, 5, "d18", "read").unwrap();
            assert_eq!(verified(&m, 6).unwrap(), vec![]);
        }
        let state = crate::state::State::open(&path).unwrap();
        let m = Mirror::open(&state).unwrap();
        let list = verified(&m, 5).unwrap();
        assert_eq!(list.len(), KEEP_VERIFIED);
        assert_eq!(list[0].dump_uuid, "d3");
        assert!(covers(&list, "d18", "read"));
        // A record beside the fire states does not disturb the scheduler's scan.
        assert_eq!(m.latest_handled().unwrap(), None);
    }
}
