//! `pgsnap store …`: the figures each worker reports for its pack store, and
//! verification of a worker's store.
use anyhow::Result;
use pgsnapman_proto::v1;

use super::{Ctx, follow};
use crate::args::{StoreCommand, worker_ref};
use crate::client::rpc;
use crate::output::{json, table};

pub async fn run(ctx: &Ctx, cmd: StoreCommand) -> Result<()> {
    let mut admin = ctx.admin().await?;
    match cmd {
        StoreCommand::Stats { worker } => {
            let req = v1::ListStoreStatsRequest {
                worker: worker_ref(worker.as_ref()),
            };
            let list = rpc(admin.list_store_stats(req).await)?;
            ctx.out.list(
                list.stats.iter().map(json::store_stats).collect(),
                table::store_stats(&list.stats),
            )
        }
        StoreCommand::Verify { worker, wait } => {
            let task = rpc(admin.verify_store(worker.to_proto()).await)?;
            let what = format!("verifying the store of worker {}", task.worker_id);
            follow::queued(ctx, &mut admin, task, wait, &what).await
        }
    }
}
