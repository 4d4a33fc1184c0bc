//! `pgsnap messages`: what workers and the coordinator reported, filtered by
//! minimum level, worker, job, class and age.
use anyhow::Result;
use pgsnapman_proto::v1;

use super::Ctx;
use crate::args::{MessagesArgs, worker_ref};
use crate::client::rpc;
use crate::output::{json, table};

pub async fn run(ctx: &Ctx, a: MessagesArgs) -> Result<()> {
    let req = v1::ListMessagesRequest {
        min_level: a
            .level
            .map_or(v1::MessageLevel::Unspecified, |l| l.to_proto()) as i32,
        worker: worker_ref(a.worker.as_ref()),
        job_id: a.job,
        since: a.since.map(pgsnapman_proto::timestamp),
        class: a.class,
        limit: a.limit.unwrap_or(0),
    };
    let mut admin = ctx.admin().await?;
    let list = rpc(admin.list_messages(req).await)?;
    ctx.out.list(
        list.messages.iter().map(json::message).collect(),
        table::messages(&list.messages),
    )
}
