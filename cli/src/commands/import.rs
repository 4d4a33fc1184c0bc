//! `pgsnap job import --worker W FILE`: the instances and dump jobs of a
//! standalone worker's jobs file, created in the catalog with the ordinary
//! Add RPCs. Idempotent: an instance is found by name, a job by what it
//! dumps and when; what exists already is left as it is. No passwords.
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
    dump_jobs(&mut admin, worker, &jobs, &ids, &mut done).await?;
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
            "nothing changed: the {} instance(s) and {} job(s) of {} are in the catalog already",
            jobs.instance_ids.len(),
            jobs.job_ids.len(),
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
        && c.cron == j.cron
}

async fn dump_jobs(
    admin: &mut Admin,
    worker: &WorkerArg,
    jobs: &Jobs,
    ids: &BTreeMap<i64, i64>,
    done: &mut Done,
) -> Result<()> {
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
                ..Default::default()
            })
            .await)
        .with_context(|| format!("add dump job {}", excerpt(name)))?;
        done.created.push(format!("dump job {name} ({})", c.id));
    }
    Ok(())
}
