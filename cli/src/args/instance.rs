//! The command line of instances: connection details, where the password
//! comes from, and the auto-discovery settings. No I/O.
use clap::{Args, Subcommand, ValueEnum};
use pgsnapman_proto::model::{BackupWindow, SSL_MODES};
use pgsnapman_proto::v1;

use super::{RetentionArgs, StatusArg, WorkerArg};

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Add a Postgres server
    Add(InstanceAddArgs),
    /// List instances
    List,
    /// Show one instance
    Show { id: i64 },
    /// Change an instance; options not given stay as they are
    Edit(InstanceEditArgs),
    /// Stop dumping from this instance
    Halt { id: i64 },
    /// Dump from a halted instance again
    Resume { id: i64 },
    /// Remove an instance (refused while dump jobs use it)
    Remove { id: i64 },
    /// Set the instance's password, sealed on this machine to every worker
    /// that uses it and to --worker (only ciphertext leaves this machine)
    SetPassword(SetPasswordArgs),
}

#[derive(Debug, Args)]
pub struct SetPasswordArgs {
    /// The instance (id or name)
    pub instance: String,
    /// Also seal it to this worker (id or name), e.g. a new restore worker
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<WorkerArg>,
    #[command(flatten)]
    pub password: PasswordArgs,
}

/// Where a password comes from. A password is never taken as an argument:
/// argv is visible to every user of the machine.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of standard input
    #[arg(long, conflicts_with = "password_env")]
    pub password_stdin: bool,
    /// Read the password from this environment variable
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// Seal only if the worker's key has this fingerprint (as
    /// `pgsnapman-worker identity` prints it on the worker host)
    #[arg(long, value_name = "FINGERPRINT")]
    pub worker_fingerprint: Option<String>,
}

#[derive(Debug, Args)]
pub struct InstanceAddArgs {
    /// Unique label of the instance
    #[arg(long)]
    pub name: String,
    /// Host name, IP address, or an absolute Unix socket directory
    #[arg(long)]
    pub host: String,
    /// [default: 5432]
    #[arg(long)]
    pub port: Option<u16>,
    /// Role used for dumps [default: postgres]
    #[arg(long)]
    pub user: Option<String>,
    /// Database for connections that need no particular one [default: postgres]
    #[arg(long, value_name = "DB")]
    pub maintenance_db: Option<String>,
    /// Default worker of the instance's jobs (id or name)
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<WorkerArg>,
    /// Free text for people
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// libpq sslmode the workers connect with [default: prefer for a Unix
    /// socket or loopback host, require for any other]
    #[arg(long, value_parser = SSL_MODES)]
    pub sslmode: Option<String>,
    /// Add jobs for the instance's databases that have none (needs --worker)
    #[arg(long)]
    pub auto_discover: bool,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// What auto-discovery does with a database that has no job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoverMode {
    /// Add a dump job for it.
    Create,
    /// Keep the list only (the dashboard shows it); add no job.
    Report,
}

/// What auto-discovery gives the jobs it adds.
#[derive(Debug, Args)]
pub struct DiscoveryArgs {
    /// What discovery does with a listed database that has no job: add a
    /// job (create), or only show it on the dashboard's "not backed up"
    /// page (report) [default: create]
    #[arg(long, value_enum, ignore_case = true)]
    pub discover: Option<DiscoverMode>,
    /// Discovered jobs dump at a minute in this window of whole hours, e.g.
    /// 2-6 or 22-4 (past midnight); START = END is the whole day [default: 2-6]
    #[arg(long, value_name = "START-END")]
    pub backup_window: Option<BackupWindow>,
    /// Status of the jobs discovery adds [default: active]
    #[arg(long, value_enum, ignore_case = true)]
    pub discovered_status: Option<StatusArg>,
    /// Daily dumps kept by discovered jobs [default: 14]
    #[arg(long, value_name = "N")]
    pub discovered_keep_daily: Option<u32>,
    /// Weekly dumps kept by discovered jobs [default: 2]
    #[arg(long, value_name = "N")]
    pub discovered_keep_weekly: Option<u32>,
    /// Monthly dumps kept by discovered jobs [default: 5]
    #[arg(long, value_name = "N")]
    pub discovered_keep_monthly: Option<u32>,
    /// Yearly dumps kept by discovered jobs [default: 2]
    #[arg(long, value_name = "N")]
    pub discovered_keep_yearly: Option<u32>,
}

impl DiscoveryArgs {
    /// The discovered jobs' retention with the given flags over `base`;
    /// `None` when no flag was given.
    pub fn retention_over(&self, base: &v1::Retention) -> Option<v1::Retention> {
        RetentionArgs {
            keep_daily: self.discovered_keep_daily,
            keep_weekly: self.discovered_keep_weekly,
            keep_monthly: self.discovered_keep_monthly,
            keep_yearly: self.discovered_keep_yearly,
        }
        .over(base)
    }

    /// True when no flag was given.
    pub fn is_empty(&self) -> bool {
        self.discover.is_none()
            && self.backup_window.is_none()
            && self.discovered_status.is_none()
            && self.retention_over(&v1::Retention::default()).is_none()
    }
}

#[derive(Debug, Args)]
pub struct InstanceEditArgs {
    pub id: i64,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long, value_name = "DB")]
    pub maintenance_db: Option<String>,
    /// Default worker (id or name)
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<WorkerArg>,
    /// Free text for people
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Forget the stored password (the worker's own password file applies)
    #[arg(long, conflicts_with_all = ["password_stdin", "password_env"])]
    pub clear_password: bool,
    /// libpq sslmode (disable, allow, prefer, require, verify-ca, verify-full)
    #[arg(long, value_parser = SSL_MODES)]
    pub sslmode: Option<String>,
    /// Auto-discovery on or off (true/false)
    #[arg(long, value_name = "BOOL")]
    pub auto_discover: Option<bool>,
    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    #[test]
    fn discovery_flags_parse_and_bad_windows_are_refused() {
        let cli = Cli::try_parse_from([
            "pgsnap",
            "instance",
            "edit",
            "3",
            "--auto-discover",
            "true",
            "--backup-window",
            "22-4",
            "--discovered-status",
            "HALTED",
            "--discovered-keep-daily",
            "30",
        ])
        .unwrap();
        let Command::Instance(InstanceCommand::Edit(e)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(e.auto_discover, Some(true));
        let d = &e.discovery;
        assert_eq!(d.backup_window, Some("22-4".parse().unwrap()));
        assert_eq!(d.discovered_status, Some(StatusArg::Halted));
        let r = d.retention_over(&v1::Retention::default()).unwrap();
        assert_eq!((r.keep_daily, r.keep_weekly), (30, 0));
        assert!(!d.is_empty());
        for bad in ["24-4", "2", "x-y"] {
            let err =
                Cli::try_parse_from(["pgsnap", "instance", "edit", "3", "--backup-window", bad])
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains("backup window") || err.contains("0-23"),
                "{bad}: {err}"
            );
        }
    }
}
