//! `pgsnap catalog …`: the dumps the catalog knows, kept after their job is
//! removed.
use anyhow::Result;
use pgsnapman_proto::v1;

use super::{Ctx, follow};
use crate::args::{CatalogCommand, CatalogListArgs, worker_ref};
use crate::client::rpc;
use crate::output::{json, table};

pub async fn run(ctx: &Ctx, cmd: CatalogCommand) -> Result<()> {
    match cmd {
        CatalogCommand::List(a) => list(ctx, a).await,
        CatalogCommand::Show { id } => {
            let mut admin = ctx.admin().await?;
            let d = rpc(admin.get_dump(v1::IdRequest { id }).await)?;
            ctx.out.object(json::dump(&d), table::dump_rows(&d))?;
            if d.table_rows.is_empty() {
                return Ok(());
            }
            ctx.out.note(&table::table_rows(&d).to_string())
        }
        CatalogCommand::Delete { id, wait } => {
            let mut admin = ctx.admin().await?;
            let task = rpc(admin.delete_dump(v1::IdRequest { id }).await)?;
            if task.id == 0 {
                // A failed dump holds no data: its row went at once.
                return ctx.out.removed("dump", id);
            }
            follow::queued(ctx, &mut admin, task, wait, &format!("deleting dump {id}")).await
        }
        CatalogCommand::Pin { id } => super::retention::pin(ctx, id, true).await,
        CatalogCommand::Unpin { id } => super::retention::pin(ctx, id, false).await,
        CatalogCommand::Rebuild { worker, wait } => {
            let mut admin = ctx.admin().await?;
            let task = rpc(admin.rebuild_catalog(worker.to_proto()).await)?;
            let what = format!("rebuilding the catalog from worker {}", task.worker_id);
            follow::queued(ctx, &mut admin, task, wait, &what).await
        }
    }
}

async fn list(ctx: &Ctx, a: CatalogListArgs) -> Result<()> {
    let req = v1::ListDumpsRequest {
        job_id: a.job,
        instance_id: a.instance,
        database: a.database,
        status: a
            .status
            .map_or(v1::DumpStatus::Unspecified, |s| s.to_proto()) as i32,
        worker: worker_ref(a.worker.as_ref()),
        since: a.since.map(pgsnapman_proto::timestamp),
        limit: a.limit.unwrap_or(0),
    };
    let mut admin = ctx.admin().await?;
    let list = rpc(admin.list_dumps(req).await)?;
    ctx.out.list(
        list.dumps.iter().map(json::dump).collect(),
        table::dumps(&list.dumps),
    )
}
