//! One module per subcommand group; each mirrors a part of the AdminService.
//! Input is checked here before anything is sent, with the shared model's
//! rules, so that a typo fails without a round trip.
mod audit;
mod catalog;
mod dump;
mod follow;
mod instance;
mod job;
mod messages;
pub mod password;
mod restore;
mod store;
mod task;
mod token;
mod worker;

use anyhow::Result;

use crate::args::{Cli, Command};
use crate::client::{self, Admin};
use crate::config;
use crate::output::Output;

/// What every command needs: where the coordinator is and where output goes.
pub struct Ctx {
    url: String,
    bearer: client::Bearer,
    pub out: Output,
}

impl Ctx {
    /// Connects to the coordinator (only once the input has been checked).
    pub async fn admin(&self) -> Result<Admin> {
        client::connect(&self.url, self.bearer.clone()).await
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let url = config::coordinator_url(cli.coordinator.as_deref(), cli.config.as_deref())?;
    let token = config::token(cli.token_file.as_deref(), cli.config.as_deref())?;
    let ctx = Ctx {
        url,
        bearer: client::Bearer::new(token.as_deref())?,
        out: Output::new(cli.output),
    };
    match cli.command {
        Command::Worker(c) => worker::run(&ctx, c).await,
        Command::Instance(c) => instance::run(&ctx, c).await,
        Command::Job(c) => job::run(&ctx, c).await,
        Command::Dump(c) => dump::run(&ctx, c).await,
        Command::Task(c) => task::run(&ctx, c).await,
        Command::Catalog(c) => catalog::run(&ctx, c).await,
        Command::Store(c) => store::run(&ctx, c).await,
        Command::Restore(c) => restore::run(&ctx, c).await,
        Command::RestoreJob(c) => restore::job(&ctx, c).await,
        Command::RestoreLog(c) => restore::log(&ctx, c).await,
        Command::Copy(c) => restore::copy(&ctx, c).await,
        Command::Messages(a) => messages::run(&ctx, a).await,
        Command::Token(c) => token::run(&ctx, c).await,
        Command::Audit(c) => audit::run(&ctx, c).await,
    }
}
