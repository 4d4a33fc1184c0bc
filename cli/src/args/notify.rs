//! `pgsnap notify …`: notification channels (webhook, e-mail) and the rules
//! that send to them (docs/alerts.md). Secrets come from a file or standard
//! input, never from the command line.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Add a channel: a webhook (signed with an HMAC key) or e-mail over SMTP (admin)
    #[command(subcommand)]
    Add(NotifyAddCommand),
    /// List channels, their rules and whether they fail (never a secret)
    List,
    /// Send a test notification to a channel now and show the answer (operator)
    Test { name: String },
    /// Remove a channel no rule names (admin)
    Remove { name: String },
    /// Rules: which conditions notify which channels
    #[command(subcommand)]
    Rule(NotifyRuleCommand),
}

/// Where a channel's secret comes from.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// Read the secret (HMAC key or SMTP password) from this file (0600;
    /// one trailing line break is dropped)
    #[arg(long, value_name = "PATH", conflicts_with = "secret_stdin")]
    pub secret_file: Option<PathBuf>,
    /// Read the secret from the first line of standard input
    #[arg(long)]
    pub secret_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum NotifyAddCommand {
    /// POST a signed JSON payload to an https URL (http for loopback only)
    Webhook {
        #[arg(long)]
        name: String,
        #[arg(long)]
        url: String,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Send mail through an SMTP relay (STARTTLS by default)
    Email {
        #[arg(long)]
        name: String,
        /// Host name or IP address of the relay
        #[arg(long)]
        smtp_relay: String,
        /// [default: 587 starttls, 465 tls, 25 none]
        #[arg(long)]
        smtp_port: Option<u16>,
        /// starttls, tls, or none (loopback relays only) [default: starttls]
        #[arg(long)]
        smtp_tls: Option<String>,
        /// The sender address
        #[arg(long)]
        from: String,
        /// A recipient (repeat for more, at most 50)
        #[arg(long, required = true)]
        to: Vec<String>,
        /// SMTP login user (its password with --secret-file or --secret-stdin)
        #[arg(long)]
        smtp_user: Option<String>,
        #[command(flatten)]
        secret: SecretArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyRuleCommand {
    /// Add a rule (admin)
    Add(NotifyRuleAddArgs),
    /// List rules with their channels and open incidents
    List,
    /// Remove a rule with its open incidents (admin)
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct NotifyRuleAddArgs {
    #[arg(long)]
    pub name: String,
    /// dump_failed, restore_failed, verify_failed, dump_missing,
    /// worker_offline, outbox_backlog, channel_failed
    #[arg(long)]
    pub class: String,
    /// A channel to notify (repeat for more)
    #[arg(long = "channel", required = true)]
    pub channels: Vec<String>,
    /// info, warning or critical [default: by class]
    #[arg(long)]
    pub severity: Option<String>,
    /// Only this dump job (dump_failed, dump_missing, verify_failed)
    #[arg(long)]
    pub job: Option<i64>,
    /// worker_offline: offline longer than this [default: 15m]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub offline_after: Option<Duration>,
    /// dump_missing: newest good dump older than this [default: 1.5 cron periods]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_age: Option<Duration>,
    /// outbox_backlog: more events waiting than this [default: 10000]
    #[arg(long, value_name = "N")]
    pub backlog: Option<u64>,
    /// Also notify when the incident is resolved
    #[arg(long)]
    pub send_resolved: bool,
}
