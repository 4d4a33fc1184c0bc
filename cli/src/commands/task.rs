//! `pgsnap task …`: ad-hoc tasks (what `dump now` queued).
use anyhow::Result;
use pgsnapman_proto::v1;

use super::Ctx;
use crate::args::{TaskCommand, worker_ref};
use crate::client::rpc;
use crate::output::{json, table};

pub async fn run(ctx: &Ctx, cmd: TaskCommand) -> Result<()> {
    match cmd {
        TaskCommand::Show { id } => {
            let mut admin = ctx.admin().await?;
            let t = rpc(admin.get_task(v1::IdRequest { id }).await)?;
            ctx.out.object(json::task(&t), table::task_rows(&t))
        }
        TaskCommand::Cancel { id } => {
            let mut admin = ctx.admin().await?;
            let t = rpc(admin.cancel_task(v1::IdRequest { id }).await)?;
            ctx.out.object(json::task(&t), table::task_rows(&t))
        }
        TaskCommand::List {
            state,
            worker,
            job,
            limit,
        } => {
            let req = v1::ListTasksRequest {
                state: state.map_or(v1::TaskState::Unspecified, |s| s.to_proto()) as i32,
                worker: worker_ref(worker.as_ref()),
                job_id: job,
                limit: limit.unwrap_or(0),
            };
            let mut admin = ctx.admin().await?;
            let list = rpc(admin.list_tasks(req).await)?;
            ctx.out.list(
                list.tasks.iter().map(json::task).collect(),
                table::tasks(&list.tasks),
            )
        }
    }
}
