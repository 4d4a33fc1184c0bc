//! `pgsnap dump now JOB [--wait]`: queue an ad-hoc dump and, if asked, follow
//! the task until it ends.
use anyhow::Result;
use pgsnapman_proto::v1;

use super::Ctx;
use super::follow;
use crate::args::DumpCommand;
use crate::client::rpc;

pub async fn run(ctx: &Ctx, cmd: DumpCommand) -> Result<()> {
    let DumpCommand::Now { job_id, wait } = cmd;
    let mut admin = ctx.admin().await?;
    let task = rpc(admin.dump_now(v1::DumpNowRequest { job_id }).await)?;
    follow::queued(ctx, &mut admin, task, wait, &format!("dump job {job_id}")).await
}
