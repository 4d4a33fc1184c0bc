//! `pgsnap verify now DUMP`: a dump read through or restored into a scratch
//! database on the worker that stores it (docs/verification.md).
use anyhow::Result;
use pgsnapman_proto::v1;

use super::{Ctx, follow};
use crate::args::VerifyCommand;
use crate::client::rpc;

pub async fn run(ctx: &Ctx, cmd: VerifyCommand) -> Result<()> {
    let mut admin = ctx.admin().await?;
    match cmd {
        VerifyCommand::Now {
            dump,
            method,
            instance,
            checks,
            wait,
        } => {
            let req = v1::VerifyDumpNowRequest {
                dump_id: dump,
                method: method.clone(),
                instance_id: instance.unwrap_or(0),
                checks,
            };
            let task = rpc(admin.verify_dump_now(req).await)?;
            let what = format!("verifying dump {dump} ({method})");
            follow::queued(ctx, &mut admin, task, wait, &what).await
        }
    }
}
