//! `pgsnap catalog pin/unpin` and `pgsnap job retention JOB --dry-run`: the
//! operator's side of retention (docs/retention.md). The worker deletes;
//! these only pin and preview.
use anyhow::{Result, bail};
use pgsnapman_proto::v1;

use super::Ctx;
use crate::client::rpc;
use crate::output::{json, retention, table};

/// Pins (`true`) or unpins a dump and shows it.
pub async fn pin(ctx: &Ctx, id: i64, pinned: bool) -> Result<()> {
    let mut admin = ctx.admin().await?;
    let req = v1::IdRequest { id };
    let d = if pinned {
        rpc(admin.pin_dump(req).await)?
    } else {
        rpc(admin.unpin_dump(req).await)?
    };
    let what = if pinned { "pinned" } else { "unpinned" };
    ctx.out.note(&format!("{what} dump {id}"))?;
    ctx.out.object(json::dump(&d), table::dump_rows(&d))
}

/// What the next retention run of `job` would keep and remove.
pub async fn preview(ctx: &Ctx, job: i64, dry_run: bool, timezone: String) -> Result<()> {
    if !dry_run {
        bail!(
            "retention runs on the worker after every dump and on its retention.interval; \
             only --dry-run (a preview) can be asked for"
        );
    }
    pgsnapman_proto::retention::timezone(&timezone).map_err(anyhow::Error::msg)?;
    let mut admin = ctx.admin().await?;
    let p = rpc(admin
        .preview_retention(v1::PreviewRetentionRequest {
            job_id: job,
            timezone,
        })
        .await)?;
    if ctx.out.is_json() {
        return ctx.out.object(retention::preview_json(&p), Vec::new());
    }
    ctx.out.note(&retention::preview_note(&p))?;
    ctx.out.list(Vec::new(), retention::preview_table(&p))
}
