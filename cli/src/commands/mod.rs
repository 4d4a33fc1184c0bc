//! One module per subcommand group; each mirrors a part of the AdminService.
//! Input is checked here before anything is sent, with the shared model's
//! rules, so that a typo fails without a round trip.
mod audit;
mod catalog;
mod cert;
mod dump;
mod follow;
mod import;
mod instance;
mod job;
mod messages;
mod notify;
pub mod password;
mod restore;
mod retention;
mod script;
mod shell;
mod store;
mod task;
mod token;
mod verify;
mod worker;

use std::path::PathBuf;

use anyhow::{Context, Result};
use pgsnapman_proto::channel::ClientTls;

use crate::args::{Cli, Command};
use crate::client::{self, Admin};
use crate::config;
use crate::output::Output;

/// What every command needs: where the coordinator is, how to reach it
/// over TLS, and where output goes.
pub struct Ctx {
    url: String,
    ca_file: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
    bearer: client::Bearer,
    pub out: Output,
}

impl Ctx {
    /// Connects to the coordinator (only once the input has been checked).
    pub async fn admin(&self) -> Result<Admin> {
        let mut tls = ClientTls {
            ca_file: self.ca_file.clone(),
            ..ClientTls::default()
        };
        if let Some((cert, key)) = &self.identity {
            tls.cert_pem = Some(
                std::fs::read_to_string(cert)
                    .with_context(|| format!("read --cert-file {}", cert.display()))?,
            );
            let key_pem = pgsnapman_proto::secret_file::read_private(key)?;
            tls.key_pem = Some(
                String::from_utf8(key_pem)
                    .ok()
                    .with_context(|| format!("--key-file {} is not PEM", key.display()))?,
            );
        }
        client::connect(&self.url, &tls, self.bearer.clone()).await
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    // These describe pgsnap itself: no config is read, no coordinator dialled.
    match &cli.command {
        Command::Completions(a) => return shell::completions(a.shell),
        Command::Man(a) => return shell::man(&a.dir),
        _ => {}
    }
    let url = config::coordinator_url(cli.coordinator.as_deref(), cli.config.as_deref())?;
    let ca_file = config::ca_file(cli.ca_file.as_deref(), cli.config.as_deref())?;
    let token = config::token(cli.token_file.as_deref(), cli.config.as_deref())?;
    let ctx = Ctx {
        url,
        ca_file,
        identity: cli.cert_file.zip(cli.key_file),
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
        Command::Verify(c) => verify::run(&ctx, c).await,
        Command::Restore(c) => restore::run(&ctx, c).await,
        Command::RestoreJob(c) => restore::job(&ctx, c).await,
        Command::RestoreLog(c) => restore::log(&ctx, c).await,
        Command::Copy(c) => restore::copy(&ctx, c).await,
        Command::Messages(a) => messages::run(&ctx, a).await,
        Command::Token(c) => token::run(&ctx, c).await,
        Command::Cert(c) => cert::run(&ctx, c).await,
        Command::Audit(c) => audit::run(&ctx, c).await,
        Command::Script(c) => script::run(&ctx, c).await,
        // Answered above, before any config was read.
        Command::Completions(_) | Command::Man(_) => Ok(()),
        Command::Notify(c) => notify::run(&ctx, c).await,
    }
}
