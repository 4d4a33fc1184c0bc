//! `pgsnap audit list`: the audit log, filtered by actor, method, time and
//! failure.
use anyhow::{Result, bail};
use pgsnapman_proto::v1;

use super::Ctx;
use crate::args::AuditCommand;
use crate::client::rpc;
use crate::output::auth;

pub async fn run(ctx: &Ctx, cmd: AuditCommand) -> Result<()> {
    let AuditCommand::List(a) = cmd;
    if let (Some(s), Some(u)) = (a.since, a.until)
        && s >= u
    {
        bail!("--since must be before --until");
    }
    let req = v1::ListAuditRequest {
        actor: a.actor.unwrap_or_default(),
        method: a.method.unwrap_or_default(),
        since: a.since.map(pgsnapman_proto::timestamp),
        until: a.until.map(pgsnapman_proto::timestamp),
        failed: a.failed,
        limit: a.limit.unwrap_or(0),
    };
    let mut admin = ctx.admin().await?;
    let list = rpc(admin.list_audit(req).await)?;
    ctx.out.list(
        list.entries.iter().map(auth::audit_json).collect(),
        auth::audit(&list.entries),
    )
}
