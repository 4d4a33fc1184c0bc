//! `pgsnap worker …`: register (with an enrollment token), list, show, halt
//! and resume workers; issue enrollment tokens; revoke workers.
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
            let t = rpc(admin
                .issue_enrollment_token(v1::WorkerRef {
                    r#ref: Some(v1::worker_ref::Ref::Id(w.id)),
                })
                .await)?;
            print_token(ctx, &format!("registered worker {} ({})", w.id, w.name), &t)
        }
        WorkerCommand::EnrollToken { worker } => {
            let mut admin = ctx.admin().await?;
            let t = rpc(admin.issue_enrollment_token(worker.to_proto()).await)?;
            let name = t
                .worker
                .as_ref()
                .map(|w| w.name.clone())
                .unwrap_or_default();
            print_token(ctx, &format!("new enrollment token for worker {name}"), &t)
        }
        WorkerCommand::Revoke { worker } => {
            let mut admin = ctx.admin().await?;
            let w = rpc(admin.revoke_worker(worker.to_proto()).await)?;
            ctx.out.changed(
                &format!(
                    "revoked worker {} ({}): its certificates are refused and its leased tasks queued again; to enroll it again: pgsnap worker enroll-token {}",
                    w.id, w.name, w.name
                ),
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

/// The token is printed once: in JSON with the worker, for people with the
/// way to hand it to the worker (env or file, never a command-line argument).
fn print_token(ctx: &Ctx, note: &str, t: &v1::EnrollmentToken) -> Result<()> {
    let expires = t
        .expires_at
        .as_ref()
        .and_then(pgsnapman_proto::from_timestamp)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    let worker = t.worker.clone().unwrap_or_default();
    if ctx.out.is_json() {
        let mut v = json::worker(&worker);
        v["enrollment_token"] = serde_json::Value::String(t.token.clone());
        v["enrollment_token_expires_at"] = serde_json::Value::String(expires);
        return ctx.out.object(v, Vec::new());
    }
    ctx.out.note(&format!(
        "{note}\nenrollment token (works once, until {expires}; shown only now):\n\n  {}\n\n\
         on the worker's host: PGSNAPMAN_COORDINATOR__ENROLL_TOKEN=<token> pgsnapman-worker\n\
         or: pgsnapman-worker enroll --token-file FILE",
        t.token
    ))
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
