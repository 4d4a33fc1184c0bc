//! The schedule mirror: the worker's copy of its jobs and the instances they
//! use, as last pulled from the coordinator, kept in the state database
//! (column family `mirror`) so that scheduled dumps never need the
//! coordinator. A new schedule replaces the old one in a single synced write
//! (atomic swap). Column family `fires` keeps, per job, when the worker first
//! saw it and the last fire time it handled (ran or skipped). Layout:
//! docs/worker.md. Instance passwords are kept sealed only (`seal_with`).
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use pgsnapman_proto::v1::{DumpJob, InstanceConnection, Schedule, SyncScheduleResponse};
use prost::Message;
use rocksdb::IteratorMode;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::state::{CF_FIRES, CF_MIRROR, State, synced};

const SCHEDULE_KEY: &[u8] = b"schedule";
const WORKER_STATUS_KEY: &[u8] = b"worker_halted";

/// One consistent view of the mirrored schedule.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Catalog schedule version this view corresponds to (0: never synced).
    pub version: u64,
    pub jobs: Vec<DumpJob>,
    pub instances: HashMap<i64, InstanceConnection>,
    /// The scripts SCRIPT jobs run, by name (content and hash).
    pub scripts: HashMap<String, pgsnapman_proto::v1::ScriptSource>,
    /// The coordinator last said this worker is HALTED.
    pub worker_halted: bool,
    /// Dumps retention never removes (`Schedule.protected_dump_uuids`).
    pub protected: HashSet<String>,
}

/// What the scheduler remembers about one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FireState {
    pub first_seen: DateTime<Utc>,
    pub last_handled: Option<DateTime<Utc>>,
}

pub struct Mirror {
    state: State,
    current: RwLock<Arc<Snapshot>>,
    changed: watch::Sender<u64>,
    /// Seals a password that arrives in clear before it is stored.
    seal: Option<Arc<crate::seal::SealKey>>,
}

/// Replaces every clear password of `schedule` by a copy sealed to `key`;
/// true if there was one.
fn seal_clear_passwords(schedule: &mut Schedule, key: &crate::seal::SealKey) -> Result<bool> {
    let mut found = false;
    for i in &mut schedule.instances {
        if i.password.is_empty() {
            continue;
        }
        i.sealed_password = Some(key.seal_own(&i.password)?);
        zeroize::Zeroize::zeroize(&mut i.password);
        found = true;
    }
    Ok(found)
}

impl Mirror {
    /// Loads the mirror from `state`.
    pub fn open(state: &State) -> Result<Self> {
        let cf = state.cf(CF_MIRROR)?;
        let db = state.db();
        let mut snap = match db
            .get_cf(cf, SCHEDULE_KEY)
            .context("read the schedule mirror")?
        {
            Some(bytes) => {
                let r =
                    SyncScheduleResponse::decode(&*bytes).context("decode the schedule mirror")?;
                snapshot_of(r.version, r.schedule.unwrap_or_default())
            }
            None => Snapshot::default(),
        };
        snap.worker_halted = db
            .get_cf(cf, WORKER_STATUS_KEY)
            .context("read the mirrored worker status")?
            .is_some_and(|v| v.first() == Some(&1));
        let (changed, _) = watch::channel(snap.version);
        Ok(Self {
            state: state.clone(),
            current: RwLock::new(Arc::new(snap)),
            changed,
            seal: None,
        })
    }

    /// From now on, passwords are stored sealed to `key`; a mirror written
    /// before sealing existed (clear passwords) is rewritten sealed at once,
    /// and the column family compacted so the old bytes leave the files.
    pub fn seal_with(mut self, key: Arc<crate::seal::SealKey>) -> Result<Self> {
        let snap = self.snapshot();
        let mut schedule = Schedule {
            dump_jobs: snap.jobs.clone(),
            instances: snap.instances.values().cloned().collect(),
            protected_dump_uuids: snap.protected.iter().cloned().collect(),
            scripts: snap.scripts.values().cloned().collect(),
        };
        schedule.instances.sort_by_key(|i| i.instance_id);
        if seal_clear_passwords(&mut schedule, &key)? {
            tracing::warn!(
                "the schedule mirror held instance passwords in clear (written before \
                 sealing): sealed them to this worker's key"
            );
            self.store(snap.version, &schedule)?;
            let cf = self.state.cf(CF_MIRROR)?;
            let db = self.state.db();
            db.flush_cf(cf).context("flush the schedule mirror")?;
            let mut opts = rocksdb::CompactOptions::default();
            opts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &opts);
            let mut fresh = snapshot_of(snap.version, schedule);
            fresh.worker_halted = snap.worker_halted;
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        }
        self.seal = Some(key);
        Ok(self)
    }

    fn store(&self, version: u64, schedule: &Schedule) -> Result<()> {
        let cf = self.state.cf(CF_MIRROR)?;
        let record = SyncScheduleResponse {
            version,
            unchanged: false,
            schedule: Some(schedule.clone()),
        };
        self.state
            .db()
            .put_cf_opt(cf, SCHEDULE_KEY, record.encode_to_vec(), &synced())
            .context("write the schedule mirror")
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn version(&self) -> u64 {
        self.snapshot().version
    }

    /// Fires whenever the mirror changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Stores a new schedule durably, then makes it current.
    pub fn replace(&self, version: u64, mut schedule: Schedule) -> Result<()> {
        if let Some(key) = &self.seal {
            seal_clear_passwords(&mut schedule, key)?;
        }
        self.store(version, &schedule)?;
        let mut snap = snapshot_of(version, schedule);
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        snap.worker_halted = cur.worker_halted;
        *cur = Arc::new(snap);
        drop(cur);
        self.changed.send_replace(version);
        Ok(())
    }

    /// Records the worker's own status as the coordinator reported it.
    pub fn set_worker_halted(&self, halted: bool) -> Result<()> {
        if self.snapshot().worker_halted == halted {
            return Ok(());
        }
        let cf = self.state.cf(CF_MIRROR)?;
        self.state
            .db()
            .put_cf_opt(cf, WORKER_STATUS_KEY, [u8::from(halted)], &synced())
            .context("write the mirrored worker status")?;
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        let mut snap = (**cur).clone();
        snap.worker_halted = halted;
        *cur = Arc::new(snap);
        Ok(())
    }

    pub fn fire_state(&self, job_id: i64) -> Result<Option<FireState>> {
        let cf = self.state.cf(CF_FIRES)?;
        match self
            .state
            .db()
            .get_cf(cf, job_id.to_be_bytes())
            .context("read fire state")?
        {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).context("decode fire state")?,
            )),
            None => Ok(None),
        }
    }

    pub fn put_fire_state(&self, job_id: i64, state: &FireState) -> Result<()> {
        let cf = self.state.cf(CF_FIRES)?;
        self.state
            .db()
            .put_cf_opt(
                cf,
                job_id.to_be_bytes(),
                serde_json::to_vec(state)?,
                &synced(),
            )
            .context("write fire state")
    }

    /// A JSON record of another owner kept beside the fire states under
    /// `key` (keys of 8 bytes are the scheduler's; others start with a tag,
    /// e.g. `verify/`). Docs: docs/worker.md.
    pub fn fires_json<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        let cf = self.state.cf(CF_FIRES)?;
        match self
            .state
            .db()
            .get_cf(cf, key)
            .context("read a fire record")?
        {
            Some(v) => Ok(Some(
                serde_json::from_slice(&v).context("decode a fire record")?,
            )),
            None => Ok(None),
        }
    }

    /// Writes (synced) a record `fires_json` reads.
    pub fn put_fires_json<T: Serialize>(&self, key: &[u8], value: &T) -> Result<()> {
        let cf = self.state.cf(CF_FIRES)?;
        self.state
            .db()
            .put_cf_opt(cf, key, serde_json::to_vec(value)?, &synced())
            .context("write a fire record")
    }

    /// The latest fire time handled for any job (so that a fast test clock
    /// never runs behind what was already recorded).
    pub fn latest_handled(&self) -> Result<Option<DateTime<Utc>>> {
        let cf = self.state.cf(CF_FIRES)?;
        let mut latest = None;
        for item in self.state.db().iterator_cf(cf, IteratorMode::Start) {
            let (_, v) = item.context("scan fire states")?;
            if let Ok(s) = serde_json::from_slice::<FireState>(&v) {
                latest = latest.max(s.last_handled);
            }
        }
        Ok(latest)
    }
}

fn snapshot_of(version: u64, schedule: Schedule) -> Snapshot {
    Snapshot {
        version,
        jobs: schedule.dump_jobs,
        instances: schedule
            .instances
            .into_iter()
            .map(|i| (i.instance_id, i))
            .collect(),
        scripts: schedule
            .scripts
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect(),
        worker_halted: false,
        protected: schedule.protected_dump_uuids.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_fire_state_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::state::dir(dir.path());
        let job = DumpJob {
            id: 7,
            database: "app".into(),
            cron: "* * * * *".into(),
            ..Default::default()
        };
        let fire = FireState {
            first_seen: Utc::now(),
            last_handled: Some(Utc::now()),
        };
        {
            let m = Mirror::open(&State::open(&path).unwrap()).unwrap();
            assert_eq!(m.version(), 0);
            let rx = m.subscribe();
            m.replace(
                3,
                Schedule {
                    dump_jobs: vec![job.clone()],
                    instances: vec![InstanceConnection {
                        instance_id: 1,
                        ..Default::default()
                    }],
                    protected_dump_uuids: vec!["d-pinned".into()],
                    scripts: vec![pgsnapman_proto::v1::ScriptSource {
                        name: "s.sh".into(),
                        content: b"#!/bin/sh\n".to_vec(),
                        hash: "sha256:x".into(),
                    }],
                },
            )
            .unwrap();
            assert!(rx.has_changed().unwrap());
            m.set_worker_halted(true).unwrap();
            m.put_fire_state(7, &fire).unwrap();
        }
        let m = Mirror::open(&State::open(&path).unwrap()).unwrap();
        let snap = m.snapshot();
        assert_eq!(snap.version, 3);
        assert_eq!(snap.jobs, vec![job]);
        assert!(snap.instances.contains_key(&1));
        assert_eq!(snap.scripts["s.sh"].content, b"#!/bin/sh\n");
        assert!(snap.worker_halted);
        assert!(snap.protected.contains("d-pinned"), "{:?}", snap.protected);
        assert_eq!(m.fire_state(7).unwrap(), Some(fire));
        assert_eq!(m.fire_state(8).unwrap(), None);
        assert_eq!(m.latest_handled().unwrap(), fire.last_handled);
    }

    #[test]
    fn clear_passwords_are_stored_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = crate::state::dir(dir.path());
        let key = Arc::new(crate::seal::SealKey::load_or_create(dir.path()).unwrap());
        let with_password = |id: i64| InstanceConnection {
            instance_id: id,
            name: format!("i{id}"),
            password: "Cl3ar-Passw0rd".into(),
            ..Default::default()
        };
        {
            // Written by a worker before sealing existed.
            let m = Mirror::open(&State::open(&path).unwrap()).unwrap();
            let schedule = Schedule {
                dump_jobs: vec![],
                instances: vec![with_password(1)],
                protected_dump_uuids: vec![],
                scripts: vec![],
            };
            m.replace(5, schedule).unwrap();
        }
        let m = Mirror::open(&State::open(&path).unwrap())
            .unwrap()
            .seal_with(key.clone())
            .unwrap();
        let schedule = Schedule {
            dump_jobs: vec![],
            instances: vec![with_password(1), with_password(2)],
            protected_dump_uuids: vec![],
            scripts: vec![],
        };
        assert_eq!(m.snapshot().version, 5);
        m.replace(6, schedule).unwrap();
        drop(m);
        let m = Mirror::open(&State::open(&path).unwrap()).unwrap();
        for i in m.snapshot().instances.values() {
            assert!(i.password.is_empty(), "{i:?}");
            let open = key.password_of(i, "w").unwrap().unwrap();
            assert_eq!(open.as_str(), "Cl3ar-Passw0rd");
        }
        drop(m);
        // Nothing in the state database's files holds the clear password.
        for entry in std::fs::read_dir(&path).unwrap() {
            let p = entry.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(14).any(|w| w == b"Cl3ar-Passw0rd"),
                "{}",
                p.display()
            );
        }
    }
}
