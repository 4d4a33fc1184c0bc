//! `pgsnapman-coordinator`: loads the configuration, starts tracing, turns
//! SIGTERM and SIGINT into a shutdown and runs the coordinator
//! (docs/configuration.md).
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The pgsnapman coordinator: catalog, Admin and Worker services.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (settings also come from PGSNAPMAN_* variables).
    #[arg(long, env = "PGSNAPMAN_CONFIG")]
    config: Option<PathBuf>,
    /// Write this program's man pages (section 8) into DIR and exit; the
    /// packages ship them (docs/packages.md).
    #[arg(long, hide = true, value_name = "DIR")]
    man_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.man_dir {
        let cmd = <Args as clap::CommandFactory>::command();
        return pgsnapman_proto::manpage::write_daemon_pages(cmd, dir);
    }
    init_tracing();
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pgsnapman-coordinator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<()> {
    let cfg = pgsnapman_coordinator::config::Config::load(args.config.as_deref())?;
    tracing::info!(config = ?cfg, "starting pgsnapman-coordinator {}", env!("CARGO_PKG_VERSION"));
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        trigger.cancel();
    });
    pgsnapman_coordinator::server::run(cfg, shutdown).await
}

/// Logs go to stdout, in colour only when stdout is a terminal and
/// `NO_COLOR` is unset or empty (a log file never gets escape codes).
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(!no_color && std::io::stdout().is_terminal())
        .with_writer(std::io::stdout)
        .init();
}
