//! `pgsnap worker …`: register, list, show, halt and resume workers.
use anyhow::Result;
use pgsnapman_proto::model::validate_worker_name;
use pgsnapman_proto::v1;

use super::Ctx;
use crate::args::{WorkerArg, WorkerCommand};
use crate::client::rpc;
use crate::output::{json, table};

pub async fn run(ctx: &Ctx, cmd: WorkerCommand) -> Result<()> {
    match cmd {
        WorkerCommand::Register { name } => {
            validate_worker_name(&name)?;
            let mut admin = ctx.admin().await?;
            let w = rpc(admin
                .register_worker(v1::RegisterWorkerRequest { name })
                .await)?;
            ctx.out.changed(
                &format!("registered worker {} ({})", w.id, w.name),
                json::worker(&w),
                table::workers(std::slice::from_ref(&w)),
            )
        }
        WorkerCommand::List => {
            let mut admin = ctx.admin().await?;
            let list = rpc(admin.list_workers(v1::ListWorkersRequest {}).await)?;
            ctx.out.list(
                list.workers.iter().map(json::worker).collect(),
                table::workers(&list.workers),
            )
        }
        WorkerCommand::Show { worker } => {
            let mut admin = ctx.admin().await?;
            let w = rpc(admin.get_worker(worker.to_proto()).await)?;
            ctx.out.object(json::worker(&w), table::worker_rows(&w))
        }
        WorkerCommand::Halt { worker } => {
            set_status(ctx, worker.to_proto(), v1::Status::Halted, "halted").await
        }
        WorkerCommand::Resume { worker } => {
            set_status(ctx, worker.to_proto(), v1::Status::Active, "resumed").await
        }
        WorkerCommand::SetRestoreWorker {
            worker,
            restore_worker,
        } => {
            let mut admin = ctx.admin().await?;
            let w = rpc(admin
                .set_restore_worker(v1::SetRestoreWorkerRequest {
                    worker: Some(worker.to_proto()),
                    restore_worker: restore_worker.as_ref().map(WorkerArg::to_proto),
                })
                .await)?;
            let note = if w.restore_worker_name.is_empty() {
                format!("restores of worker {}'s dumps run on it again", w.name)
            } else {
                format!(
                    "restores of worker {}'s dumps run on worker {}",
                    w.name, w.restore_worker_name
                )
            };
            ctx.out.changed(
                &note,
                json::worker(&w),
                table::workers(std::slice::from_ref(&w)),
            )
        }
    }
}

async fn set_status(
    ctx: &Ctx,
    worker: v1::WorkerRef,
    status: v1::Status,
    verb: &str,
) -> Result<()> {
    let mut admin = ctx.admin().await?;
    let w = rpc(admin
        .set_worker_status(v1::SetWorkerStatusRequest {
            worker: Some(worker),
            status: status as i32,
        })
        .await)?;
    ctx.out.changed(
        &format!("{verb} worker {} ({})", w.id, w.name),
        json::worker(&w),
        table::workers(std::slice::from_ref(&w)),
    )
}
