//! `pgsnap job …`: dump jobs. Cron expressions and extra pg_dump options are
//! checked with the shared model before they are sent.
use anyhow::{Result, bail};
use pgsnapman_proto::model::{CronExpr, validate_dump_options, validate_identifier};
use pgsnapman_proto::v1;

use super::Ctx;
use crate::args::{JobAddArgs, JobCommand, JobEditArgs, JobListArgs, worker_ref};
use crate::client::{Admin, rpc};
use crate::output::{json, table};

/// The coordinator's retention for jobs that set none (AddDumpJobRequest in
/// the proto). Keep flags given without the others apply over it.
pub(super) const DEFAULT_RETENTION: v1::Retention = v1::Retention {
    keep_daily: 14,
    keep_weekly: 2,
    keep_monthly: 5,
    keep_yearly: 2,
};

pub async fn run(ctx: &Ctx, cmd: JobCommand) -> Result<()> {
    match cmd {
        JobCommand::Add(a) => add(ctx, a).await,
        JobCommand::List(a) => list(ctx, a).await,
        JobCommand::Show { id } => {
            let mut admin = ctx.admin().await?;
            let j = get(&mut admin, id).await?;
            ctx.out.object(json::dump_job(&j), table::dump_job_rows(&j))
        }
        JobCommand::Edit(a) => edit(ctx, a).await,
        JobCommand::Halt { id } => set_status(ctx, id, v1::Status::Halted, "halted").await,
        JobCommand::Resume { id } => set_status(ctx, id, v1::Status::Active, "resumed").await,
        JobCommand::Retention {
            id,
            dry_run,
            timezone,
        } => super::retention::preview(ctx, id, dry_run, timezone).await,
        JobCommand::Import { worker, file } => super::import::run(ctx, &worker, &file).await,
        JobCommand::Remove { id } => {
            let mut admin = ctx.admin().await?;
            rpc(admin.remove_dump_job(v1::IdRequest { id }).await)?;
            ctx.out.removed("dump job", id)
        }
    }
}

async fn get(admin: &mut Admin, id: i64) -> Result<v1::DumpJob> {
    rpc(admin.get_dump_job(v1::IdRequest { id }).await)
}

async fn add(ctx: &Ctx, a: JobAddArgs) -> Result<()> {
    CronExpr::parse(&a.cron)?;
    let dump_type = a.dump_type.to_proto();
    match (&a.script, dump_type == v1::DumpType::Script) {
        (Some(name), true) => {
            pgsnapman_proto::script::validate_name(name)?;
            pgsnapman_proto::script::validate_arguments(&a.options)?;
        }
        (None, true) => {
            bail!("--type script needs --script NAME (a script registered with pgsnap script add)")
        }
        (Some(_), false) => bail!("--script is only for --type script"),
        (None, false) => validate_dump_options(&a.options)?,
    }
    if let Some(db) = &a.database {
        validate_identifier("database", db)?;
    }
    if let Some(schema) = &a.schema {
        validate_identifier("schema", schema)?;
    }
    if dump_type.is_cluster_wide() && a.database.is_some() {
        bail!(
            "--database is not used by the cluster-wide type {}: leave it out",
            dump_type.label()
        );
    }
    if !dump_type.is_cluster_wide() && a.database.is_none() {
        bail!(
            "--database is required for the {} dump type",
            dump_type.label()
        );
    }
    let mut req = v1::AddDumpJobRequest {
        instance_id: a.instance,
        worker: worker_ref(a.worker.as_ref()),
        database: a.database.unwrap_or_default(),
        schema: a.schema.unwrap_or_default(),
        dump_type: dump_type as i32,
        format: a
            .format
            .map_or(v1::DumpFormat::Unspecified, |f| f.to_proto()) as i32,
        extra_options: a.options,
        cron: a.cron,
        kind: if a.single {
            v1::JobKind::Single
        } else {
            v1::JobKind::Repeat
        } as i32,
        status: if a.halted {
            v1::Status::Halted
        } else {
            v1::Status::Active
        } as i32,
        retention: a.retention.over(&DEFAULT_RETENTION),
        comment: a.comment.unwrap_or_default(),
        parallel_jobs: a.jobs.unwrap_or(0),
        pause_replay: a.pause_replay,
        on_demand: a.on_demand,
        script_name: a.script.unwrap_or_default(),
        verify_cron: a.verify.verify_cron.unwrap_or_default(),
        verify_method: a.verify.verify_method.unwrap_or_default(),
        verify_instance_id: 0,
        verify_checks: a.verify.verify_checks,
        // The next free id (only `pgsnap job import` gives one).
        id: 0,
    };
    if !req.verify_cron.is_empty() {
        CronExpr::parse(&req.verify_cron)?;
    }
    let mut admin = ctx.admin().await?;
    if let Some(i) = &a.verify.verify_instance {
        req.verify_instance_id = instance_id(&mut admin, i).await?;
    }
    let j = rpc(admin.add_dump_job(req).await)?;
    // A job on another worker than the password's: say so.
    super::password::warn_missing(&mut admin, j.instance_id).await?;
    warn_verify_password(&mut admin, &j).await?;
    ctx.out.changed(
        &format!("created dump job {}", j.id),
        json::dump_job(&j),
        table::dump_jobs(std::slice::from_ref(&j)),
    )
}

async fn list(ctx: &Ctx, a: JobListArgs) -> Result<()> {
    let req = v1::ListDumpJobsRequest {
        instance_id: a.instance,
        worker: worker_ref(a.worker.as_ref()),
        status: a.status.map_or(v1::Status::Unspecified, |s| s.to_proto()) as i32,
    };
    let mut admin = ctx.admin().await?;
    let list = rpc(admin.list_dump_jobs(req).await)?;
    ctx.out.list(
        list.jobs.iter().map(json::dump_job).collect(),
        table::dump_jobs(&list.jobs),
    )
}

async fn edit(ctx: &Ctx, a: JobEditArgs) -> Result<()> {
    if let Some(cron) = &a.cron {
        CronExpr::parse(cron)?;
    }
    let extra_options = if a.clear_options {
        Some(v1::ExtraOptions { options: vec![] })
    } else if a.options.is_empty() {
        None
    } else {
        // A SCRIPT job's options are its script's arguments: the
        // coordinator checks them for the job's type.
        if a.script.is_none() {
            validate_dump_options(&a.options)?;
        }
        Some(v1::ExtraOptions { options: a.options })
    };
    if let Some(name) = &a.script {
        pgsnapman_proto::script::validate_name(name)?;
    }
    let mut req = v1::UpdateDumpJobRequest {
        id: a.id,
        cron: a.cron,
        extra_options,
        retention: None,
        comment: a.comment,
        worker: worker_ref(a.worker.as_ref()),
        format: a
            .format
            .map_or(v1::DumpFormat::Unspecified, |f| f.to_proto()) as i32,
        parallel_jobs: a.jobs,
        pause_replay: a.pause_replay,
        on_demand: a.on_demand,
        script_name: a.script,
        verify_cron: a.verify.verify_cron,
        verify_method: a.verify.verify_method,
        verify_instance_id: None,
        verify_checks: if a.clear_verify_checks {
            Some(v1::VerifyChecks { checks: vec![] })
        } else if a.verify.verify_checks.is_empty() {
            None
        } else {
            Some(v1::VerifyChecks {
                checks: a.verify.verify_checks,
            })
        },
        no_verify: a.no_verify,
    };
    if let Some(c) = req.verify_cron.as_ref().filter(|c| !c.is_empty()) {
        CronExpr::parse(c)?;
    }
    let retention_changes = a.retention.over(&DEFAULT_RETENTION).is_some();
    let unchanged = req.cron.is_none()
        && req.extra_options.is_none()
        && !retention_changes
        && req.comment.is_none()
        && req.worker.is_none()
        && a.format.is_none()
        && req.parallel_jobs.is_none()
        && req.pause_replay.is_none()
        && req.on_demand.is_none()
        && req.script_name.is_none()
        && req.verify_cron.is_none()
        && req.verify_method.is_none()
        && a.verify.verify_instance.is_none()
        && req.verify_checks.is_none()
        && !req.no_verify;
    if unchanged {
        bail!(
            "nothing to change for dump job {}: give at least one option",
            a.id
        );
    }
    let mut admin = ctx.admin().await?;
    if let Some(i) = &a.verify.verify_instance {
        req.verify_instance_id = Some(instance_id(&mut admin, i).await?);
    }
    if retention_changes {
        // The request replaces the whole retention: keep the slices not given.
        let current = get(&mut admin, a.id).await?;
        let base = current.retention.unwrap_or(DEFAULT_RETENTION);
        req.retention = a.retention.over(&base);
    }
    let j = rpc(admin.update_dump_job(req).await)?;
    warn_verify_password(&mut admin, &j).await?;
    ctx.out.changed(
        &format!("updated dump job {}", j.id),
        json::dump_job(&j),
        table::dump_jobs(std::slice::from_ref(&j)),
    )
}

async fn set_status(ctx: &Ctx, id: i64, status: v1::Status, verb: &str) -> Result<()> {
    let mut admin = ctx.admin().await?;
    let j = rpc(admin
        .set_dump_job_status(v1::SetStatusRequest {
            id,
            status: status as i32,
        })
        .await)?;
    ctx.out.changed(
        &format!("{verb} dump job {}", j.id),
        json::dump_job(&j),
        table::dump_jobs(std::slice::from_ref(&j)),
    )
}

/// The id of an instance given by id or name.
async fn instance_id(admin: &mut Admin, given: &str) -> Result<i64> {
    if let Ok(id) = given.parse::<i64>() {
        return Ok(id);
    }
    let list = rpc(admin.list_instances(v1::ListInstancesRequest {}).await)?;
    match list.instances.iter().find(|i| i.name == given) {
        Some(i) => Ok(i.id),
        None => bail!(
            "no instance is named {} (pgsnap instance list)",
            pgsnapman_proto::model::quoted(given)
        ),
    }
}

/// A job verified on another instance than its own: say so when the
/// password of that instance is not sealed to the job's worker.
async fn warn_verify_password(admin: &mut Admin, j: &v1::DumpJob) -> Result<()> {
    if j.verify_method == "restore" && j.verify_instance_id != 0 {
        super::password::warn_missing_for(admin, j.verify_instance_id, j.worker_id).await?;
    }
    Ok(())
}
