//! `pgsnap job import --worker W FILE`: the instances, dump jobs, copies
//! (TRIGGER restore jobs) and cron restores (REPEAT restore jobs) of a
//! standalone worker's jobs file, created in the catalog with the ordinary
//! Add RPCs. Idempotent: an instance is found by name, a job by what it
//! dumps and when, a restore job by its kind, source, target and cron; what
//! exists already is left as it is. Instances and jobs are created with the
//! file's ids (the standalone dumps carry them), which needs admin. No
//! passwords.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::jobs_file::{self, Jobs};
use pgsnapman_proto::model::excerpt;
use pgsnapman_proto::v1;

use super::Ctx;
use crate::args::WorkerArg;
use crate::client::{Admin, rpc};

/// What an import did.
#[derive(Debug, Default)]
struct Done {
    created: Vec<String>,
    existing: Vec<String>,
}

pub async fn run(ctx: &Ctx, worker: &WorkerArg, file: &Path) -> Result<()> {
    // Passwords are not imported: the file has none, and the catalog's are
    // sealed to the worker (`pgsnap instance password`).
    let jobs = jobs_file::load(file, &|_| Ok(String::new()))?;
    let mut admin = ctx.admin().await?;
    let mut done = Done::default();
    let ids = instances(&mut admin, worker, &jobs, &mut done).await?;
    let job_ids = dump_jobs(&mut admin, worker, &jobs, &ids, &mut done).await?;
    restore_jobs(&mut admin, &jobs, &ids, &job_ids, &mut done).await?;
    let json = serde_json::json!({
        "created": done.created,
        "existing": done.existing,
        "changed": !done.created.is_empty(),
    });
    if ctx.out.is_json() {
        return ctx.out.object(json, Vec::new());
    }
    for line in &done.created {
        ctx.out.note(&format!("created {line}"))?;
    }
    if done.created.is_empty() {
        ctx.out.note(&format!(
            "nothing changed: the {} instance(s), {} job(s) and {} restore job(s) of {} are in the catalog already",
            jobs.instance_ids.len(),
            jobs.job_ids.len(),
            jobs.copies.len() + jobs.restores.len(),
            file.display()
        ))
    } else {
        ctx.out.note(&format!(
            "{} created, {} already in the catalog",
            done.created.len(),
            done.existing.len()
        ))
    }
}

/// The catalog id of each instance of the file (by file id), created when
/// missing; an instance of that name that connects elsewhere is an error.
async fn instances(
    admin: &mut Admin,
    worker: &WorkerArg,
    jobs: &Jobs,
    done: &mut Done,
) -> Result<BTreeMap<i64, i64>> {
    let known = rpc(admin.list_instances(v1::ListInstancesRequest {}).await)?.instances;
    let mut ids = BTreeMap::new();
    for i in &jobs.schedule.instances {
        if let Some(c) = known.iter().find(|c| c.name == i.name) {
            if (c.host.as_str(), c.port, c.user.as_str())
                != (i.host.as_str(), i.port, i.user.as_str())
            {
                bail!(
                    "instance {} is in the catalog as {}@{}:{}, the file says {}@{}:{}: rename one of them",
                    excerpt(&i.name),
                    c.user,
                    c.host,
                    c.port,
                    i.user,
                    i.host,
                    i.port
                );
            }
            done.existing
                .push(format!("instance {} ({})", i.name, c.id));
            ids.insert(i.instance_id, c.id);
            continue;
        }
        let c = rpc(admin
            .add_instance(v1::AddInstanceRequest {
                name: i.name.clone(),
                host: i.host.clone(),
                port: i.port,
                user: i.user.clone(),
                maintenance_db: i.maintenance_db.clone(),
                default_worker: Some(worker.to_proto()),
                comment: "imported from a standalone jobs file".into(),
                sslmode: i.sslmode.clone(),
                // The file's id: the standalone dumps name it already.
                id: i.instance_id,
                ..Default::default()
            })
            .await)
        .with_context(|| format!("add instance {}", excerpt(&i.name)))?;
        done.created.push(format!("instance {} ({})", i.name, c.id));
        ids.insert(i.instance_id, c.id);
    }
    Ok(ids)
}

/// Whether catalog job `c` is the file's job `j` (instances mapped).
fn same_job(c: &v1::DumpJob, j: &v1::DumpJob, instance: i64) -> bool {
    c.instance_id == instance
        && c.database == j.database
        && c.schema == j.schema
        && c.dump_type == j.dump_type
        && c.format == j.format
        && same_cron(&c.cron, &j.cron)
}

/// Whether two cron expressions are the same as the catalog stores them
/// (whitespace normalised).
fn same_cron(a: &str, b: &str) -> bool {
    let norm = |c: &str| {
        pgsnapman_proto::model::CronExpr::parse(c)
            .map_or_else(|_| c.to_string(), |e| e.as_str().to_string())
    };
    norm(a) == norm(b)
}

/// The catalog id of each dump job of the file (by file id), created when
/// missing.
async fn dump_jobs(
    admin: &mut Admin,
    worker: &WorkerArg,
    jobs: &Jobs,
    ids: &BTreeMap<i64, i64>,
    done: &mut Done,
) -> Result<BTreeMap<i64, i64>> {
    let mut job_ids = BTreeMap::new();
    let known = rpc(admin
        .list_dump_jobs(v1::ListDumpJobsRequest {
            worker: Some(worker.to_proto()),
            ..Default::default()
        })
        .await)?
    .jobs;
    for (name, file_id) in &jobs.job_ids {
        let Some(j) = jobs.schedule.dump_jobs.iter().find(|j| j.id == *file_id) else {
            continue;
        };
        let instance = ids.get(&j.instance_id).copied().unwrap_or(0);
        if let Some(c) = known.iter().find(|c| same_job(c, j, instance)) {
            done.existing.push(format!("dump job {name} ({})", c.id));
            job_ids.insert(j.id, c.id);
            continue;
        }
        let c = rpc(admin
            .add_dump_job(v1::AddDumpJobRequest {
                instance_id: instance,
                worker: Some(worker.to_proto()),
                database: j.database.clone(),
                schema: j.schema.clone(),
                dump_type: j.dump_type,
                format: j.format,
                extra_options: j.extra_options.clone(),
                cron: j.cron.clone(),
                kind: j.kind,
                status: j.status,
                retention: j.retention,
                comment: if j.comment.is_empty() {
                    format!("standalone job {name}")
                } else {
                    j.comment.clone()
                },
                parallel_jobs: j.parallel_jobs,
                pause_replay: j.pause_replay,
                on_demand: j.on_demand,
                verify_cron: j.verify_cron.clone(),
                verify_method: j.verify_method.clone(),
                verify_instance_id: ids.get(&j.verify_instance_id).copied().unwrap_or(0),
                verify_checks: j.verify_checks.clone(),
                // The file's id: the standalone dumps' manifests carry it, so
                // this job's retention covers them.
                id: j.id,
                ..Default::default()
            })
            .await)
        .with_context(|| format!("add dump job {}", excerpt(name)))?;
        done.created.push(format!("dump job {name} ({})", c.id));
        job_ids.insert(j.id, c.id);
    }
    Ok(job_ids)
}

/// A restore job the file asks for: a copy (TRIGGER) or a cron restore
/// (REPEAT), in catalog ids.
struct WantedRestore {
    label: String,
    kind: v1::RestoreJobKind,
    source_job_id: i64,
    target: v1::RestoreTarget,
    cron: String,
    status: v1::Status,
    comment: String,
}

impl WantedRestore {
    fn new(
        what: &str,
        c: &jobs_file::Copy,
        kind: v1::RestoreJobKind,
        ids: &BTreeMap<i64, i64>,
        job_ids: &BTreeMap<i64, i64>,
    ) -> Self {
        Self {
            label: format!("{what} {}", c.name),
            kind,
            source_job_id: job_ids.get(&c.job_id).copied().unwrap_or(0),
            target: v1::RestoreTarget {
                instance_id: ids.get(&c.instance_id).copied().unwrap_or(0),
                database: c.database.clone(),
                existing_database: c.existing as i32,
                // As the standalone worker restores (and `pgsnap restore`
                // by default): with the dump's roles, owners and privileges.
                roles: true,
                ..Default::default()
            },
            cron: String::new(),
            status: v1::Status::Active,
            comment: format!("standalone {what} {}", c.name),
        }
    }

    /// Whether catalog restore job `r` is this one.
    fn is(&self, r: &v1::RestoreJob) -> bool {
        let policy = |v: i32| {
            if v == v1::ExistingDatabase::Unspecified as i32 {
                v1::ExistingDatabase::Rename as i32
            } else {
                v
            }
        };
        let t = r.target.clone().unwrap_or_default();
        r.kind == self.kind as i32
            && r.source_job_id == self.source_job_id
            && r.source_dump_id == 0
            && same_cron(&r.cron, &self.cron)
            && t.instance_id == self.target.instance_id
            && t.database == self.target.database
            && t.schema.is_empty()
            && policy(t.existing_database) == policy(self.target.existing_database)
    }
}

/// The file's copies as TRIGGER restore jobs of the imported dump jobs and
/// its cron restores as REPEAT restore jobs, created when missing.
async fn restore_jobs(
    admin: &mut Admin,
    jobs: &Jobs,
    ids: &BTreeMap<i64, i64>,
    job_ids: &BTreeMap<i64, i64>,
    done: &mut Done,
) -> Result<()> {
    let mut wanted: Vec<WantedRestore> = jobs
        .copies
        .iter()
        .map(|c| WantedRestore::new("copy", c, v1::RestoreJobKind::Trigger, ids, job_ids))
        .collect();
    for r in &jobs.restores {
        let mut w = WantedRestore::new(
            "restore",
            &r.target,
            v1::RestoreJobKind::Repeat,
            ids,
            job_ids,
        );
        w.cron = r.cron.clone();
        w.status = r.status;
        if !r.comment.is_empty() {
            w.comment = r.comment.clone();
        }
        wanted.push(w);
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let known = rpc(admin
        .list_restore_jobs(v1::ListRestoreJobsRequest::default())
        .await)?
    .jobs;
    for w in wanted {
        if let Some(r) = known.iter().find(|r| w.is(r)) {
            done.existing.push(format!("{} ({})", w.label, r.id));
            continue;
        }
        let r = rpc(admin
            .add_restore_job(v1::AddRestoreJobRequest {
                kind: w.kind as i32,
                source_job_id: w.source_job_id,
                target: Some(w.target.clone()),
                cron: w.cron.clone(),
                status: w.status as i32,
                comment: w.comment.clone(),
                ..Default::default()
            })
            .await)
        .with_context(|| format!("add {}", excerpt(&w.label)))?;
        done.created.push(format!("{} ({})", w.label, r.id));
    }
    Ok(())
}
