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
    /// Run with no coordinator: the schedule comes from the jobs file
    /// (standalone.enabled; docs/standalone.md)
    #[arg(long)]
    standalone: bool,
    /// The standalone jobs file [default: standalone.jobs_file of the config]
    #[arg(long, value_name = "FILE")]
    jobs_file: Option<PathBuf>,
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
    /// Standalone: dump a job of the jobs file now, in the foreground (the
    /// worker must be stopped)
    Dump {
        #[command(subcommand)]
        command: DumpCommand,
    },
    /// Standalone: restore a dump of this worker's store into an instance
    /// of the jobs file, in the foreground (the worker must be stopped)
    Restore {
        /// The dump's uuid (`pgsnapman-worker store list`)
        dump: uuid::Uuid,
        /// Target: an instance of the jobs file, and a database (default:
        /// the dumped database's name)
        #[arg(long, value_name = "INSTANCE[/DB]")]
        to: String,
        /// When the target database exists
        #[arg(long, value_enum, default_value = "rename")]
        existing: pgsnapman_worker::standalone::local::Existing,
        /// Confirm a destructive --existing policy (drop, drop-before, truncate)
        #[arg(long)]
        yes: bool,
    },
    /// The messages and dump results waiting in this worker's outbox
    /// (tab-separated: time, level, class, job, text); safe beside a
    /// running worker
    Messages {
        /// The worker's data directory [default: worker.data_dir of the config]
        #[arg(long, value_name = "DIR", env = "PGSNAPMAN_WORKER__DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The lowest level shown
        #[arg(long, value_enum, default_value = "debug")]
        level: pgsnapman_worker::standalone::local::Level,
    },
}

#[derive(Debug, clap::Subcommand)]
enum DumpCommand {
    /// One dump of JOB (a job name of the jobs file); prints the dump's uuid
    Now { job: String },
}

/// The configuration with the command line's standalone settings applied.
fn load_config(cli: &Cli) -> Result<pgsnapman_worker::Config> {
    let mut config = pgsnapman_worker::Config::load(cli.config.as_deref())?;
    if let Some(file) = &cli.jobs_file {
        config.standalone.jobs_file = file.clone();
    }
    config.standalone.enabled |= cli.standalone;
    config.validate()?;
    Ok(config)
}

/// `messages`, with job names when a jobs file is configured.
fn messages(
    cli: &Cli,
    data_dir: Option<PathBuf>,
    level: pgsnapman_worker::standalone::local::Level,
) -> Result<()> {
    let dir = data_dir_of(data_dir, cli.config.as_deref())?;
    let jobs = match load_config(cli) {
        Ok(c) if !c.standalone.jobs_file.as_os_str().is_empty() => c.standalone.load_jobs().ok(),
        _ => None,
    };
    pgsnapman_worker::standalone::local::messages(&dir, level.level(), jobs.as_ref())
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

/// Logs go to stdout (stderr for the local commands, whose output is on
/// stdout), in colour only when that is a terminal and `NO_COLOR` is unset
/// or empty (a log file never gets escape codes).
fn init_tracing_to(stderr: bool) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if stderr {
        builder
            .with_ansi(!no_color && std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
    } else {
        builder
            .with_ansi(!no_color && std::io::stdout().is_terminal())
            .with_writer(std::io::stdout)
            .init();
    }
}

fn init_tracing() {
    init_tracing_to(false);
}

async fn serve(cli: Cli) -> Result<()> {
    let config = load_config(&cli)?;
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
        Some(Command::Dump {
            command: DumpCommand::Now { job },
        }) => {
            init_tracing_to(true);
            Some(match load_config(&cli) {
                Ok(c) => pgsnapman_worker::standalone::local::dump_now(c, &job).await,
                Err(e) => Err(e),
            })
        }
        Some(Command::Restore {
            dump,
            to,
            existing,
            yes,
        }) => {
            init_tracing_to(true);
            Some(match load_config(&cli) {
                Ok(c) => {
                    pgsnapman_worker::standalone::local::restore(c, dump, &to, existing, yes).await
                }
                Err(e) => Err(e),
            })
        }
        Some(Command::Messages { data_dir, level }) => Some(messages(&cli, data_dir, level)),
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
