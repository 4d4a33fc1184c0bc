//! `pgsnap`, the operator's client for the pgsnapman coordinator. Every error
//! ends the run with exactly one line `pgsnap: <reason>` on stderr and exit
//! status 1; results go to stdout as tables or JSON.
mod args;
mod client;
mod commands;
mod config;
mod output;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

/// Longer lines of a usage error are cut (they repeat an input).
const MAX_USAGE_LINE: usize = 300;

fn main() -> ExitCode {
    // Usage errors keep clap's own message and exit status 2, but clap
    // repeats an invalid value whole: long lines are cut.
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            for line in text.lines() {
                if line.len() > MAX_USAGE_LINE {
                    eprintln!("{}", pgsnapman_proto::model::excerpt(line));
                } else {
                    eprintln!("{line}");
                }
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pgsnap: {}", one_line(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// `PGSNAP_LOG` (a tracing filter such as `debug`) turns on logs of the
/// gRPC client on stderr, for debugging a connection; off by default so
/// that an error stays one line. Passwords are sealed before they are sent
/// and never logged.
fn init_logs() {
    if let Some(filter) = std::env::var_os("PGSNAP_LOG").filter(|f| !f.is_empty()) {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter.to_string_lossy()))
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
    }
}

fn run(cli: args::Cli) -> Result<()> {
    init_logs();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(commands::run(cli))
}

/// An error and its causes on one line, joined with ": ". Multi-line texts
/// (pg_dump's stderr in a task error) are joined with "; "; a cause already
/// contained in the text before it is left out.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(err);
    while let Some(e) = cause {
        let text = single_line(&e.to_string());
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

/// The non-empty lines of `text`, trimmed, joined with "; ".
pub fn single_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_with_their_causes() {
        let inner = std::io::Error::other("connection refused");
        let err = anyhow::Error::new(inner).context("tcp connect error\n  at 127.0.0.1:1");
        assert_eq!(
            one_line(err.as_ref()),
            "tcp connect error; at 127.0.0.1:1: connection refused"
        );
        let err = anyhow::anyhow!("same").context("prefix: same");
        assert_eq!(one_line(err.as_ref()), "prefix: same");
    }
}
