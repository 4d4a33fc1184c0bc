//! `pgsnapman-coordinator`: see the crate documentation and docs/configuration.md.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The pgsnapman coordinator: catalog, Admin and Worker services.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (settings also come from PGSNAPMAN_* variables).
    #[arg(long, env = "PGSNAPMAN_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    let cfg = match pgsnapman_coordinator::config::Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgsnapman-coordinator: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(config = ?cfg, "starting pgsnapman-coordinator {}", env!("CARGO_PKG_VERSION"));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgsnapman-coordinator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(pgsnapman_coordinator::server::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pgsnapman-coordinator: {e:#}");
            ExitCode::FAILURE
        }
    }
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
