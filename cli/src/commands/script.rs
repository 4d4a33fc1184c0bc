//! `pgsnap script …`: register (a file, checked here for name, size and
//! interpreter line), list, show and remove scripts.
use anyhow::{Context, Result};
use pgsnapman_proto::script::{MAX_SCRIPT_BYTES, validate_content, validate_name};
use pgsnapman_proto::v1;

use super::Ctx;
use crate::args::ScriptCommand;
use crate::client::rpc;
use crate::output::script as out;

pub async fn run(ctx: &Ctx, cmd: ScriptCommand) -> Result<()> {
    match cmd {
        ScriptCommand::Add {
            name,
            file,
            comment,
        } => {
            validate_name(&name)?;
            // Read one byte more than allowed: enough to refuse, never more.
            let f = std::fs::File::open(&file)
                .with_context(|| format!("open script file {}", file.display()))?;
            let mut content = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(f, MAX_SCRIPT_BYTES as u64 + 1),
                &mut content,
            )
            .with_context(|| format!("read script file {}", file.display()))?;
            validate_content(&name, &content)
                .with_context(|| format!("script file {}", file.display()))?;
            let mut admin = ctx.admin().await?;
            let s = rpc(admin
                .add_script(v1::AddScriptRequest {
                    name,
                    content,
                    comment: comment.unwrap_or_default(),
                })
                .await)?;
            ctx.out.changed(
                &format!("registered script {} ({})", s.name, s.hash),
                out::script_json(&s),
                out::scripts(std::slice::from_ref(&s)),
            )
        }
        ScriptCommand::List => {
            let mut admin = ctx.admin().await?;
            let list = rpc(admin.list_scripts(v1::ListScriptsRequest {}).await)?;
            ctx.out.list(
                list.scripts.iter().map(out::script_json).collect(),
                out::scripts(&list.scripts),
            )
        }
        ScriptCommand::Show { name } => {
            validate_name(&name)?;
            let mut admin = ctx.admin().await?;
            let s = rpc(admin.get_script(v1::ScriptRef { name }).await)?;
            if ctx.out.is_json() {
                return ctx.out.object(out::script_with_content(&s), Vec::new());
            }
            ctx.out.object(out::script_json(&s), out::script_rows(&s))?;
            ctx.out.note(&String::from_utf8_lossy(&s.content))
        }
        ScriptCommand::Remove { name } => {
            validate_name(&name)?;
            let mut admin = ctx.admin().await?;
            rpc(admin
                .remove_script(v1::ScriptRef { name: name.clone() })
                .await)?;
            ctx.out.note(&format!("removed script {name}"))?;
            if ctx.out.is_json() {
                ctx.out.object(
                    serde_json::json!({ "name": name, "removed": true }),
                    Vec::new(),
                )?;
            }
            Ok(())
        }
    }
}
