//! `pgsnapman-worker`: loads the configuration, starts tracing, turns SIGTERM
//! and SIGINT into a shutdown and runs the worker.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The pgsnapman worker: pulls dump tasks from the coordinator and runs pg_dump.
#[derive(Debug, Parser)]
#[command(name = "pgsnapman-worker", version, about)]
struct Cli {
    /// TOML configuration file (settings can also come from PGSNAPMAN_<SECTION>__<KEY>).
    #[arg(long, env = "PGSNAPMAN_CONFIG")]
    config: Option<PathBuf>,
    /// Write this program's man pages (section 8) into DIR and exit; the
    /// packages ship them (docs/packages.md).
    #[arg(long, hide = true, value_name = "DIR")]
    man_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Work on this worker's pack store directly (no coordinator needed;
    /// safe beside a running worker)
    Store {
        /// The worker's data directory [default: worker.data_dir of the config]
        #[arg(long, value_name = "DIR", env = "PGSNAPMAN_WORKER__DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The store's encryption key file [default: <data_dir>/store.key]
        #[arg(
            long,
            value_name = "FILE",
            env = "PGSNAPMAN_STORE__ENCRYPTION__KEY_FILE"
        )]
        key_file: Option<PathBuf>,
        #[command(subcommand)]
        command: pgsnapman_worker::offline::StoreCommand,
    },
    /// The events this worker has not delivered yet: list the ones the
    /// coordinator refused, queue them again
    Outbox {
        /// The worker's data directory [default: worker.data_dir of the config]
        #[arg(long, value_name = "DIR", env = "PGSNAPMAN_WORKER__DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: pgsnapman_worker::outbox::tool::OutboxCommand,
    },
    /// Enroll this worker: make its key pair here, send a certificate request
    /// with a one-time token (`pgsnap worker register` / `enroll-token`), and
    /// store the certificate under <data_dir>/identity/. The token comes from
    /// --token-file or PGSNAPMAN_COORDINATOR__ENROLL_TOKEN, never from argv.
    Enroll {
        /// File holding the token (must not be group/world-readable)
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Replace an identity the worker already has
        #[arg(long)]
        force: bool,
    },
    /// Print this worker's seal key fingerprint (compare it with
    /// `pgsnap worker show` before sending the worker a password)
    Identity {
        /// The worker's data directory [default: worker.data_dir of the config]
        #[arg(long, value_name = "DIR", env = "PGSNAPMAN_WORKER__DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// The data directory: the flag, else the config file's, else the default.
fn data_dir_of(flag: Option<PathBuf>, config: Option<&std::path::Path>) -> Result<PathBuf> {
    match (flag, config) {
        (Some(d), _) => Ok(d),
        (None, Some(file)) => pgsnapman_worker::Config::load(Some(file)).map(|c| c.worker.data_dir),
        (None, None) => Ok(pgsnapman_worker::Config::default().worker.data_dir),
    }
}

/// `seal key <fingerprint>` and the key file, or why there is none.
fn identity(data_dir: &std::path::Path) -> Result<()> {
    let path = pgsnapman_worker::seal::key_path(data_dir);
    if !path.exists() {
        anyhow::bail!(
            "{} does not exist: the worker creates its seal key when it first starts",
            path.display()
        );
    }
    let key = pgsnapman_worker::seal::SealKey::load(data_dir)?;
    println!("seal key {}", key.fingerprint());
    println!("file     {}", key.path().display());
    Ok(())
}

/// Logs go to stdout, in colour only when stdout is a terminal and
/// `NO_COLOR` is unset or empty (a log file never gets escape codes).
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(!no_color && std::io::stdout().is_terminal())
        .with_writer(std::io::stdout)
        .init();
}

async fn serve(cli: Cli) -> Result<()> {
    let config = pgsnapman_worker::Config::load(cli.config.as_deref())?;
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
    pgsnapman_worker::run(config, shutdown).await
}

async fn enroll(
    config: Option<&std::path::Path>,
    token_file: Option<PathBuf>,
    force: bool,
) -> Result<()> {
    let cfg = pgsnapman_worker::Config::load(config)?;
    let token = match token_file {
        Some(path) => {
            let bytes = pgsnapman_proto::secret_file::read_private(&path)?;
            String::from_utf8(bytes).map_err(|_| {
                anyhow::anyhow!("{} does not hold a token (not UTF-8)", path.display())
            })?
        }
        None => cfg.coordinator.enroll_token.0.clone(),
    };
    if token.trim().is_empty() {
        anyhow::bail!(
            "no enrollment token: give --token-file FILE or set PGSNAPMAN_COORDINATOR__ENROLL_TOKEN (pgsnap worker enroll-token {})",
            cfg.worker.name
        );
    }
    let key = pgsnapman_worker::identity::dir(&cfg.worker.data_dir)
        .join(pgsnapman_worker::identity::KEY_FILE);
    if key.exists() && !force {
        anyhow::bail!(
            "this worker is enrolled already ({} exists); add --force to enroll again",
            key.display()
        );
    }
    let id = pgsnapman_worker::agent::enroll::enroll_any(
        &cfg.coordinator,
        &cfg.worker.name,
        &cfg.worker.data_dir,
        &token,
    )
    .await?;
    println!(
        "worker {} enrolled: certificate {} valid until {}",
        cfg.worker.name, id.serial, id.not_after
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(dir) = &cli.man_dir {
        let cmd = <Cli as clap::CommandFactory>::command();
        return pgsnapman_proto::manpage::write_daemon_pages(cmd, dir);
    }
    let offline = match cli.command.take() {
        Some(Command::Identity { data_dir }) => {
            Some(data_dir_of(data_dir, cli.config.as_deref()).and_then(|d| identity(&d)))
        }
        Some(Command::Store {
            data_dir,
            key_file,
            command,
        }) => Some(
            data_dir_of(data_dir, cli.config.as_deref())
                .and_then(|d| pgsnapman_worker::offline::run(&d, key_file.as_deref(), command)),
        ),
        Some(Command::Outbox { data_dir, command }) => Some(
            data_dir_of(data_dir, cli.config.as_deref())
                .and_then(|d| pgsnapman_worker::outbox::tool::run(&d, command)),
        ),
        Some(Command::Enroll { token_file, force }) => {
            init_tracing();
            Some(enroll(cli.config.as_deref(), token_file, force).await)
        }
        None => None,
    };
    if let Some(result) = offline {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("pgsnapman-worker: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    init_tracing();
    match serve(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("pgsnapman-worker: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page is --help in roff: same options, hidden ones left out.
    #[test]
    fn man_page_matches_help() {
        let pages =
            pgsnapman_proto::manpage::render_all(<Cli as clap::CommandFactory>::command(), "8")
                .expect("render");
        let page = String::from_utf8(pages[0].1.clone()).expect("utf-8");
        assert!(page.contains(".SH NAME"), "{page}");
        assert!(page.contains("\\fB\\-\\-config\\fR"), "{page}");
        assert!(!page.contains("man\\-dir"), "{page}");
        assert!(page.contains("pgsnapman\\-worker\\-enroll(8)"), "{page}");
    }
}
