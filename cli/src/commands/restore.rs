//! `pgsnap restore …`, `restore-job …`, `restore-log …` and `copy …`:
//! restores, restore jobs, the restore log and copy jobs. Targets and
//! pg_restore options are checked with the shared model before they are sent.
use anyhow::Result;
use pgsnapman_proto::model::{CronExpr, validate_identifier, validate_restore_target};
use pgsnapman_proto::v1;

use super::{Ctx, follow, password};
use crate::args::{
    CopyCommand, RestoreCommand, RestoreJobCommand, RestoreLogCommand, RestoreStatusArg,
};
use crate::client::rpc;
use crate::output::restore;

/// The checks the coordinator makes too, so that a typo fails at once.
fn check_target(t: &v1::RestoreTarget) -> Result<()> {
    Ok(validate_restore_target(t)?)
}

pub async fn run(ctx: &Ctx, cmd: RestoreCommand) -> Result<()> {
    match cmd {
        RestoreCommand::Now {
            dump,
            to_instance,
            to_database,
            target,
            wait,
        } => {
            let target = target.to_proto(to_instance, to_database.as_deref().unwrap_or(""))?;
            check_target(&target)?;
            let mut admin = ctx.admin().await?;
            let req = v1::RestoreNowRequest {
                what: Some(v1::restore_now_request::What::Dump(v1::AdHocRestore {
                    dump_id: dump,
                    target: Some(target),
                })),
            };
            let task = rpc(admin.restore_now(req).await)?;
            password::warn_missing_for(&mut admin, to_instance, task.worker_id).await?;
            follow::queued(
                ctx,
                &mut admin,
                task,
                wait,
                &format!("restoring dump {dump}"),
            )
            .await
        }
        RestoreCommand::Run {
            restore_job_id,
            wait,
        } => {
            let mut admin = ctx.admin().await?;
            let req = v1::RestoreNowRequest {
                what: Some(v1::restore_now_request::What::RestoreJobId(restore_job_id)),
            };
            let task = rpc(admin.restore_now(req).await)?;
            let job = rpc(admin
                .get_restore_job(v1::IdRequest { id: restore_job_id })
                .await)?;
            let to = job.target.as_ref().map_or(0, |t| t.instance_id);
            password::warn_missing_for(&mut admin, to, task.worker_id).await?;
            let what = format!("restore job {restore_job_id}");
            follow::queued(ctx, &mut admin, task, wait, &what).await
        }
        RestoreCommand::Server { from, to, target } => {
            let target = target.to_proto(to, "")?;
            check_target(&target)?;
            let mut admin = ctx.admin().await?;
            let req = v1::RestoreServerRequest {
                source_instance_id: from,
                target: Some(target),
            };
            let r = rpc(admin.restore_server(req).await)?;
            password::warn_missing(&mut admin, to).await?;
            if ctx.out.is_json() {
                return ctx.out.list(
                    vec![serde_json::json!({
                        "jobs": r.jobs.iter().map(restore::job).collect::<Vec<_>>(),
                        "skipped": r.skipped,
                    })],
                    restore::jobs(&r.jobs),
                );
            }
            let mut note = format!(
                "{} restore job(s) added from instance {from} onto instance {to}",
                r.jobs.len()
            );
            for s in &r.skipped {
                note.push_str(&format!("\nskipped {s}"));
            }
            ctx.out
                .changed(&note, serde_json::Value::Null, restore::jobs(&r.jobs))
        }
    }
}

pub async fn job(ctx: &Ctx, cmd: RestoreJobCommand) -> Result<()> {
    if let RestoreJobCommand::Add(a) = &cmd {
        if let Some(c) = &a.cron {
            CronExpr::parse(c)?;
        }
        check_target(&a.to_proto()?.target.unwrap_or_default())?;
    }
    let mut admin = ctx.admin().await?;
    match cmd {
        RestoreJobCommand::Add(a) => {
            let j = rpc(admin.add_restore_job(a.to_proto()?).await)?;
            let to = j.target.as_ref().map_or(0, |t| t.instance_id);
            password::warn_missing(&mut admin, to).await?;
            ctx.out.changed(
                &format!("added restore job {}", j.id),
                restore::job(&j),
                restore::jobs(std::slice::from_ref(&j)),
            )
        }
        RestoreJobCommand::List {
            source_job,
            instance,
        } => {
            let req = v1::ListRestoreJobsRequest {
                source_job_id: source_job,
                target_instance_id: instance,
            };
            let list = rpc(admin.list_restore_jobs(req).await)?;
            ctx.out.list(
                list.jobs.iter().map(restore::job).collect(),
                restore::jobs(&list.jobs),
            )
        }
        RestoreJobCommand::Show { id } => {
            let j = rpc(admin.get_restore_job(v1::IdRequest { id }).await)?;
            ctx.out.object(restore::job(&j), restore::job_rows(&j))
        }
        RestoreJobCommand::Halt { id } | RestoreJobCommand::Resume { id } => {
            let halt = matches!(cmd, RestoreJobCommand::Halt { .. });
            let status = if halt {
                v1::Status::Halted
            } else {
                v1::Status::Active
            };
            let j = rpc(admin
                .set_restore_job_status(v1::SetStatusRequest {
                    id,
                    status: status as i32,
                })
                .await)?;
            let verb = if halt { "halted" } else { "resumed" };
            ctx.out.changed(
                &format!("{verb} restore job {id}"),
                restore::job(&j),
                restore::jobs(std::slice::from_ref(&j)),
            )
        }
        RestoreJobCommand::Remove { id } => {
            rpc(admin.remove_restore_job(v1::IdRequest { id }).await)?;
            ctx.out.removed("restore job", id)
        }
    }
}

pub async fn log(ctx: &Ctx, cmd: RestoreLogCommand) -> Result<()> {
    let mut admin = ctx.admin().await?;
    match cmd {
        RestoreLogCommand::List {
            job,
            instance,
            status,
            limit,
        } => {
            let req = v1::ListRestoreRunsRequest {
                restore_job_id: job,
                target_instance_id: instance,
                status: status.map_or(0, |s: RestoreStatusArg| s.to_proto() as i32),
                limit: limit.unwrap_or(0),
            };
            let list = rpc(admin.list_restore_runs(req).await)?;
            ctx.out.list(
                list.runs.iter().map(restore::run).collect(),
                restore::runs(&list.runs),
            )
        }
        RestoreLogCommand::Show { run } => {
            let log = rpc(admin.get_restore_log(v1::IdRequest { id: run }).await)?;
            if ctx.out.is_json() {
                return ctx.out.object(restore::log(&log), Vec::new());
            }
            if let Some(r) = &log.run {
                ctx.out.object(restore::run(r), restore::run_rows(r))?;
            }
            ctx.out.list(Vec::new(), restore::log_lines(&log))
        }
    }
}

pub async fn copy(ctx: &Ctx, cmd: CopyCommand) -> Result<()> {
    match cmd {
        CopyCommand::Add(a) => {
            CronExpr::parse(&a.cron)?;
            validate_identifier("database", &a.database)?;
            let req = a.to_proto()?;
            for t in &req.targets {
                check_target(t)?;
            }
            let mut admin = ctx.admin().await?;
            let c = rpc(admin.add_copy_job(req).await)?;
            let mut instances: Vec<i64> = c
                .restore_jobs
                .iter()
                .map(|j| j.target.as_ref().map_or(0, |t| t.instance_id))
                .chain(c.dump_job.as_ref().map(|j| j.instance_id))
                .collect();
            instances.sort_unstable();
            instances.dedup();
            for id in instances {
                password::warn_missing(&mut admin, id).await?;
            }
            let job = c.dump_job.as_ref().map_or(0, |j| j.id);
            ctx.out.changed(
                &format!(
                    "added copy job: dump job {job} with {} target(s)",
                    c.restore_jobs.len()
                ),
                restore::copy_job(&c),
                restore::copy_jobs(std::slice::from_ref(&c)),
            )
        }
        CopyCommand::List => {
            let mut admin = ctx.admin().await?;
            let list = rpc(admin.list_copy_jobs(v1::ListCopyJobsRequest {}).await)?;
            ctx.out.list(
                list.copy_jobs.iter().map(restore::copy_job).collect(),
                restore::copy_jobs(&list.copy_jobs),
            )
        }
    }
}
