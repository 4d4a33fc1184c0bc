//! `pgsnap token …`: create (the token is printed once), list and revoke
//! operator tokens.
use anyhow::{Result, anyhow};
use pgsnapman_proto::model::validate_token_name;
use pgsnapman_proto::v1;

use super::Ctx;
use crate::args::TokenCommand;
use crate::client::rpc;
use crate::output::auth;

pub async fn run(ctx: &Ctx, cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create {
            name,
            role,
            expires,
        } => {
            validate_token_name(&name)?;
            let expires_in_seconds = match expires {
                None => 0,
                Some(d) if d.as_secs() == 0 => {
                    return Err(anyhow!("--expires must be at least 1s"));
                }
                Some(d) => d.as_secs(),
            };
            let mut admin = ctx.admin().await?;
            let created = rpc(admin
                .create_token(v1::CreateTokenRequest {
                    name,
                    role: role.to_proto() as i32,
                    expires_in_seconds,
                })
                .await)?;
            let t = created.token.clone().unwrap_or_default();
            if ctx.out.is_json() {
                let mut json = auth::token_json(&t);
                json["secret"] = created.secret.clone().into();
                ctx.out.object(json, Vec::new())
            } else {
                ctx.out.note(&format!(
                    "created token {} (role {}); it is shown only this once:\n{}",
                    t.name,
                    auth::role_text(t.role),
                    created.secret
                ))
            }
        }
        TokenCommand::List => {
            let mut admin = ctx.admin().await?;
            let list = rpc(admin.list_tokens(v1::ListTokensRequest {}).await)?;
            ctx.out.list(
                list.tokens.iter().map(auth::token_json).collect(),
                auth::tokens(&list.tokens),
            )
        }
        TokenCommand::Revoke { name } => {
            validate_token_name(&name)?;
            let mut admin = ctx.admin().await?;
            let t = rpc(admin.revoke_token(v1::RevokeTokenRequest { name }).await)?;
            ctx.out.changed(
                &format!("revoked token {}", t.name),
                auth::token_json(&t),
                auth::tokens(std::slice::from_ref(&t)),
            )
        }
    }
}
