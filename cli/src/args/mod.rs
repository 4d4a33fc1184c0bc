//! The command line of `pgsnap`: clap definitions and the parsers of values
//! that need more than clap's own (worker references, `--since`). No I/O.
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use pgsnapman_proto::model::quoted;
use pgsnapman_proto::v1;

mod auth;
mod instance;
mod notify;
mod restore;
mod script;
mod shell;
pub use auth::{AuditCommand, CertCommand, TokenCommand};
pub use instance::{
    DiscoverMode, InstanceAddArgs, InstanceCommand, InstanceEditArgs, PasswordArgs, SetPasswordArgs,
};
pub use notify::{NotifyAddCommand, NotifyCommand, NotifyRuleCommand, SecretArgs};
pub use restore::{
    CopyCommand, RestoreCommand, RestoreJobCommand, RestoreLogCommand, RestoreStatusArg,
};
pub use script::ScriptCommand;
pub use shell::{CompletionShell, CompletionsArgs, ManArgs};

/// Help heading of the options every subcommand takes.
const GLOBAL: &str = "Global options";

#[derive(Debug, Parser)]
#[command(
    name = "pgsnap",
    version,
    about = "Operate pgsnapman: workers, Postgres instances, dump jobs, dumps and tasks",
    propagate_version = true
)]
pub struct Cli {
    /// Coordinator URL, or several on one catalog separated by commas (the first that connects is used) [default: `coordinator` in the config file, else https://127.0.0.1:7431]
    #[arg(long, global = true, env = "PGSNAPMAN_COORDINATOR", value_name = "URL", help_heading = GLOBAL)]
    pub coordinator: Option<String>,

    /// PEM CA the coordinator's certificate must chain to (its <data_dir>/pki/ca.crt) [default: `ca_file` in the config file, else the system roots]
    #[arg(long, global = true, env = "PGSNAPMAN_CA_FILE", value_name = "PATH", help_heading = GLOBAL)]
    pub ca_file: Option<PathBuf>,

    /// Client certificate (PEM) to present to the coordinator; needs --key-file
    #[arg(long, global = true, env = "PGSNAPMAN_CERT_FILE", value_name = "PATH", requires = "key_file", help_heading = GLOBAL)]
    pub cert_file: Option<PathBuf>,

    /// Private key (PEM, mode 0600) of --cert-file
    #[arg(long, global = true, env = "PGSNAPMAN_KEY_FILE", value_name = "PATH", requires = "cert_file", help_heading = GLOBAL)]
    pub key_file: Option<PathBuf>,

    /// Config file [default: $XDG_CONFIG_HOME/pgsnapman/pgsnap.toml or ~/.config/pgsnapman/pgsnap.toml]
    #[arg(long, global = true, env = "PGSNAPMAN_CONFIG", value_name = "PATH", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,

    /// File holding the operator token (mode 0600) [default: `token_file` in the config file]; env PGSNAPMAN_TOKEN holds the token itself
    #[arg(long, global = true, env = "PGSNAPMAN_TOKEN_FILE", value_name = "PATH", help_heading = GLOBAL)]
    pub token_file: Option<PathBuf>,

    /// Output format
    #[arg(long, global = true, value_enum, ignore_case = true, default_value_t = OutputFormat::Table, help_heading = GLOBAL)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register, list, halt and resume workers
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Manage the Postgres servers that get dumped
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Manage dump jobs (what to dump, when, and how long to keep it)
    #[command(subcommand)]
    Job(JobCommand),
    /// Run a dump job now
    #[command(subcommand)]
    Dump(DumpCommand),
    /// Inspect ad-hoc tasks
    #[command(subcommand)]
    Task(TaskCommand),
    /// Inspect the dump catalog; delete dumps; rebuild it from a worker's store
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// The workers' deduplicating pack stores: figures and verification
    #[command(subcommand)]
    Store(StoreCommand),
    /// Restore a dump now, run a restore job now, or restore a whole server
    #[command(subcommand)]
    Restore(RestoreCommand),
    /// Manage restore jobs (SINGLE, REPEAT by cron, TRIGGER after every dump)
    #[command(subcommand)]
    RestoreJob(RestoreJobCommand),
    /// The restore log: every restore run and its lines
    #[command(subcommand)]
    RestoreLog(RestoreLogCommand),
    /// Copy jobs: dump a database and restore it elsewhere after every dump
    #[command(subcommand)]
    Copy(CopyCommand),
    /// List messages from workers and the coordinator
    Messages(MessagesArgs),
    /// Operator tokens: create (printed once), list, revoke (admin)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Operator client certificates: issue (key made here) or register (admin);
    /// list and revoke them with `token list` / `token revoke`
    #[command(subcommand)]
    Cert(CertCommand),
    /// The audit log of changes and refused calls (admin)
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Scripts that SCRIPT dump jobs run (docs/scripts.md)
    #[command(subcommand)]
    Script(ScriptCommand),
    /// Verify a dump: read it through, or restore it into a scratch database
    /// and compare its row counts (docs/verification.md)
    #[command(subcommand)]
    Verify(VerifyCommand),
    /// Print the completion script for bash, zsh or fish (docs/packages.md)
    Completions(CompletionsArgs),
    /// Write the man pages: pgsnap.1 and one page per subcommand
    Man(ManArgs),
    /// Alerts: channels (webhook, e-mail) and rules (docs/alerts.md)
    #[command(subcommand)]
    Notify(NotifyCommand),
}

#[derive(Debug, Subcommand)]
pub enum VerifyCommand {
    /// Verify one dump now, on the worker that stores it
    Now {
        /// Catalog id of the dump
        dump: i64,
        /// read: the archive through pg_restore; restore: into a scratch
        /// database, then row counts and checks
        #[arg(long, value_parser = ["read", "restore"])]
        method: String,
        /// restore: the instance id to restore into [default: the dump's]
        #[arg(long, value_name = "ID")]
        instance: Option<i64>,
        /// restore: SQL that must return one row holding true (repeatable;
        /// needs admin)
        #[arg(long = "check", value_name = "SQL")]
        checks: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

// ───────────────────────────── workers ─────────────────────────────

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Register a worker name and print its one-time enrollment token
    /// (shown once; the worker exchanges it for its certificate)
    Register {
        /// 1-128 letters, digits, '.', '-' or '_'
        name: String,
    },
    /// Issue a new one-time enrollment token for a worker (first enrollment
    /// after a lost token, or re-enrollment after a revocation)
    EnrollToken { worker: WorkerArg },
    /// Revoke every certificate of a worker: its streams are cut, its leased
    /// tasks return to the queue; it needs a new token to enroll again
    Revoke { worker: WorkerArg },
    /// List workers
    List,
    /// Show one worker
    Show { worker: WorkerArg },
    /// Stop the worker's scheduled and new ad-hoc work
    Halt { worker: WorkerArg },
    /// Let a halted worker work again
    Resume { worker: WorkerArg },
    /// Run restores of WORKER's dumps on RESTORE_WORKER (which reads WORKER's
    /// store: its restore.shared_stores); without RESTORE_WORKER, on WORKER again
    SetRestoreWorker {
        worker: WorkerArg,
        restore_worker: Option<WorkerArg>,
    },
}

/// A worker given by id (all digits) or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerArg {
    Id(i64),
    Name(String),
}

impl FromStr for WorkerArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("a worker id or name must not be empty".to_string());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<i64>()
                .map(WorkerArg::Id)
                .map_err(|_| format!("worker id {} is out of range", quoted(s)));
        }
        Ok(WorkerArg::Name(s.to_string()))
    }
}

impl WorkerArg {
    pub fn to_proto(&self) -> v1::WorkerRef {
        let r = match self {
            WorkerArg::Id(id) => v1::worker_ref::Ref::Id(*id),
            WorkerArg::Name(name) => v1::worker_ref::Ref::Name(name.clone()),
        };
        v1::WorkerRef { r#ref: Some(r) }
    }
}

/// The proto reference of an optional `--worker`.
pub fn worker_ref(w: Option<&WorkerArg>) -> Option<v1::WorkerRef> {
    w.map(WorkerArg::to_proto)
}

// ───────────────────────────── dump jobs ─────────────────────────────

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Add a dump job
    Add(JobAddArgs),
    /// List dump jobs
    List(JobListArgs),
    /// Show one dump job
    Show { id: i64 },
    /// Change a dump job; options not given stay as they are
    Edit(JobEditArgs),
    /// Stop running the job
    Halt { id: i64 },
    /// Run a halted job again
    Resume { id: i64 },
    /// Remove a job (the catalog rows of its dumps are kept)
    Remove { id: i64 },
    /// What the job's retention keeps and removes, and why (docs/retention.md)
    Retention {
        id: i64,
        /// Only show what the next run on the worker would do (required:
        /// retention itself runs on the worker)
        #[arg(long)]
        dry_run: bool,
        /// IANA time zone days are cut in: the worker's scheduler.timezone
        #[arg(long, default_value = "UTC")]
        timezone: String,
    },
    /// Create the instances and dump jobs of a standalone worker's jobs file
    /// (docs/standalone.md) for WORKER; what exists already is left alone,
    /// so a second import changes nothing. Passwords are not imported.
    Import {
        /// The worker the jobs run on (id or name)
        #[arg(long)]
        worker: WorkerArg,
        /// The standalone jobs file (TOML)
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DumpTypeArg {
    Full,
    Schema,
    Cluster,
    #[value(alias = "cluster_schema")]
    ClusterSchema,
    Globals,
    /// Run a registered script (--script NAME) on a worker that enabled scripts
    Script,
}

impl DumpTypeArg {
    pub fn to_proto(self) -> v1::DumpType {
        match self {
            DumpTypeArg::Full => v1::DumpType::Full,
            DumpTypeArg::Schema => v1::DumpType::Schema,
            DumpTypeArg::Cluster => v1::DumpType::Cluster,
            DumpTypeArg::ClusterSchema => v1::DumpType::ClusterSchema,
            DumpTypeArg::Globals => v1::DumpType::Globals,
            DumpTypeArg::Script => v1::DumpType::Script,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Custom,
    Directory,
    Plain,
}

impl FormatArg {
    pub fn to_proto(self) -> v1::DumpFormat {
        match self {
            FormatArg::Custom => v1::DumpFormat::Custom,
            FormatArg::Directory => v1::DumpFormat::Directory,
            FormatArg::Plain => v1::DumpFormat::Plain,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Active,
    Halted,
}

impl StatusArg {
    pub fn to_proto(self) -> v1::Status {
        match self {
            StatusArg::Active => v1::Status::Active,
            StatusArg::Halted => v1::Status::Halted,
        }
    }
}

/// Grandfather-father-son retention flags.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Daily dumps to keep
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Weekly dumps to keep
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Monthly dumps to keep
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Yearly dumps to keep
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
}

impl RetentionArgs {
    /// The retention with the given flags applied over `base`; `None` when no
    /// flag was given.
    pub fn over(&self, base: &v1::Retention) -> Option<v1::Retention> {
        if self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
        {
            return None;
        }
        Some(v1::Retention {
            keep_daily: self.keep_daily.unwrap_or(base.keep_daily),
            keep_weekly: self.keep_weekly.unwrap_or(base.keep_weekly),
            keep_monthly: self.keep_monthly.unwrap_or(base.keep_monthly),
            keep_yearly: self.keep_yearly.unwrap_or(base.keep_yearly),
        })
    }
}

#[derive(Debug, Args)]
pub struct JobAddArgs {
    /// Instance id to dump from
    #[arg(long, value_name = "ID")]
    pub instance: i64,
    /// Worker that runs the job (id or name) [default: the instance's default worker]
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<WorkerArg>,
    /// Database to dump (not for cluster-wide types)
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,
    /// Only this schema [default: every schema]
    #[arg(long)]
    pub schema: Option<String>,
    /// What to dump
    #[arg(long = "type", value_enum, ignore_case = true, default_value_t = DumpTypeArg::Full)]
    pub dump_type: DumpTypeArg,
    /// Archive format [default: custom for database types, plain for cluster types]
    #[arg(long, value_enum, ignore_case = true)]
    pub format: Option<FormatArg>,
    /// Extra pg_dump option (a SCRIPT job: an argument of its script), repeatable;
    /// write values starting with '-' as --option=-x
    #[arg(long = "option", value_name = "ARG", allow_hyphen_values = true)]
    pub options: Vec<String>,
    /// The registered script a SCRIPT job runs (pgsnap script add)
    #[arg(long, value_name = "NAME")]
    pub script: Option<String>,
    /// Five-field crontab expression, in the worker's time zone
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    /// Run once, through the coordinator, instead of repeating
    #[arg(long)]
    pub single: bool,
    /// Create the job halted
    #[arg(long)]
    pub halted: bool,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// pg_dump -j for the directory format
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// On a standby source: pause WAL replay during the dump, resume after
    #[arg(long)]
    pub pause_replay: bool,
    /// Scheduled runs dump only when the source's pgsnapman.metainfo asks (TAKE_BACKUP)
    #[arg(long)]
    pub on_demand: bool,
    /// Free text for people
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// A job's scheduled verification (docs/verification.md).
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify the job's newest dump on this five-field cron (worker's time
    /// zone); an empty string turns it off
    #[arg(long, value_name = "EXPR")]
    pub verify_cron: Option<String>,
    /// How to verify [default: read]
    #[arg(long, value_name = "METHOD", value_parser = ["read", "restore"])]
    pub verify_method: Option<String>,
    /// restore: the instance (id or name) to restore into [default: the job's own]
    #[arg(long, value_name = "INSTANCE")]
    pub verify_instance: Option<String>,
    /// restore: SQL that must return one row holding true, repeatable
    /// (at most 32, 8 KiB each; needs admin)
    #[arg(long = "verify-check", value_name = "SQL")]
    pub verify_checks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct JobListArgs {
    #[arg(long, value_name = "ID")]
    pub instance: Option<i64>,
    /// Worker id or name
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<WorkerArg>,
    #[arg(long, value_enum, ignore_case = true)]
    pub status: Option<StatusArg>,
}

#[derive(Debug, Args)]
pub struct JobEditArgs {
    pub id: i64,
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// Extra pg_dump option, repeatable; replaces all current options
    #[arg(long = "option", value_name = "ARG", allow_hyphen_values = true)]
    pub options: Vec<String>,
    /// Remove all extra pg_dump options
    #[arg(long, conflicts_with = "options")]
    pub clear_options: bool,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Free text for people
    #[arg(long)]
    pub comment: Option<String>,
    /// Worker id or name
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<WorkerArg>,
    #[arg(long, value_enum, ignore_case = true)]
    pub format: Option<FormatArg>,
    /// pg_dump -j for the directory format
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// On a standby source: pause WAL replay during dumps (true/false)
    #[arg(long, value_name = "BOOL")]
    pub pause_replay: Option<bool>,
    /// Dump on demand (true/false)
    #[arg(long, value_name = "BOOL")]
    pub on_demand: Option<bool>,
    /// A SCRIPT job: run this registered script instead
    #[arg(long, value_name = "NAME")]
    pub script: Option<String>,
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// Remove every user check of the scheduled verification
    #[arg(long, conflicts_with = "verify_checks")]
    pub clear_verify_checks: bool,
    /// Turn scheduled verification off and clear its settings
    #[arg(long, conflicts_with_all = ["verify_cron", "verify_method", "verify_instance", "verify_checks", "clear_verify_checks"])]
    pub no_verify: bool,
}

// ───────────────────────────── dumps and tasks ─────────────────────────────

#[derive(Debug, Subcommand)]
pub enum DumpCommand {
    /// Queue a dump of a job now and print the task
    Now {
        job_id: i64,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskStateArg {
    Queued,
    Leased,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskStateArg {
    pub fn to_proto(self) -> v1::TaskState {
        match self {
            TaskStateArg::Queued => v1::TaskState::Queued,
            TaskStateArg::Leased => v1::TaskState::Leased,
            TaskStateArg::Succeeded => v1::TaskState::Succeeded,
            TaskStateArg::Failed => v1::TaskState::Failed,
            TaskStateArg::Cancelled => v1::TaskState::Cancelled,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Show one task
    Show { id: i64 },
    /// Cancel a queued or running task (a running dump or restore is stopped)
    Cancel { id: i64 },
    /// List tasks, newest first
    List {
        #[arg(long, value_enum, ignore_case = true)]
        state: Option<TaskStateArg>,
        /// Worker id or name
        #[arg(long, value_name = "WORKER")]
        worker: Option<WorkerArg>,
        #[arg(long, value_name = "ID")]
        job: Option<i64>,
        /// At most this many [default: 100, at most 10000]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DumpStatusArg {
    Succeeded,
    Failed,
    Removing,
}

impl DumpStatusArg {
    pub fn to_proto(self) -> v1::DumpStatus {
        match self {
            DumpStatusArg::Succeeded => v1::DumpStatus::Succeeded,
            DumpStatusArg::Failed => v1::DumpStatus::Failed,
            DumpStatusArg::Removing => v1::DumpStatus::Removing,
        }
    }
}

/// `--wait` and `--timeout` of commands that queue a task.
#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArgs {
    /// Wait until the task has finished; exit 1 unless it succeeded
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 30m, 2h)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "24h", requires = "wait")]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// List dumps in the catalog, newest first
    List(CatalogListArgs),
    /// Show one dump
    Show { id: i64 },
    /// Delete a dump: from its worker's store, then from the catalog
    Delete {
        id: i64,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Keep a dump from retention (it goes only when deleted by hand)
    Pin { id: i64 },
    /// Hand a pinned dump back to retention (admin)
    Unpin { id: i64 },
    /// Recreate missing catalog rows from the manifests in a worker's store
    Rebuild {
        /// Worker id or name
        #[arg(long, value_name = "WORKER")]
        worker: WorkerArg,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// What each worker's store holds, as the worker last reported it
    Stats {
        /// Only this worker (id or name)
        #[arg(long, value_name = "WORKER")]
        worker: Option<WorkerArg>,
    },
    /// Read and hash-check every chunk of every dump in a worker's store
    Verify {
        /// Worker id or name
        #[arg(long, value_name = "WORKER")]
        worker: WorkerArg,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Args)]
pub struct CatalogListArgs {
    #[arg(long, value_name = "ID")]
    pub job: Option<i64>,
    #[arg(long, value_name = "ID")]
    pub instance: Option<i64>,
    #[arg(long, value_name = "DB")]
    pub database: Option<String>,
    #[arg(long, value_enum, ignore_case = true)]
    pub status: Option<DumpStatusArg>,
    /// Worker id or name
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<WorkerArg>,
    /// Only dumps started at or after this: RFC 3339 time, date, or age like 2d
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// At most this many [default: 100, at most 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: Option<u32>,
}

// ───────────────────────────── messages ─────────────────────────────

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl LevelArg {
    pub fn to_proto(self) -> v1::MessageLevel {
        match self {
            LevelArg::Debug => v1::MessageLevel::Debug,
            LevelArg::Info => v1::MessageLevel::Info,
            LevelArg::Warning => v1::MessageLevel::Warning,
            LevelArg::Error => v1::MessageLevel::Error,
            LevelArg::Critical => v1::MessageLevel::Critical,
        }
    }
}

#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// Only messages at this level or above
    #[arg(long, value_enum, ignore_case = true)]
    pub level: Option<LevelArg>,
    /// Worker id or name
    #[arg(long, value_name = "WORKER")]
    pub worker: Option<WorkerArg>,
    #[arg(long, value_name = "ID")]
    pub job: Option<i64>,
    /// Subsystem: DUMP, RESTORE, SCHEDULE, LINK, STORE, RETENTION, CATALOG, …
    #[arg(long)]
    pub class: Option<String>,
    /// Only messages logged at or after this: RFC 3339 time, date, or age like 2d
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// At most this many [default: 100, at most 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: Option<u32>,
}

// ───────────────────────────── value parsers ─────────────────────────────

/// Parses `--since`: an RFC 3339 time (`2026-01-02T03:04:05Z`), a date
/// (`2026-01-02`, midnight UTC) or an age (`2d`, `90m`, `1h 30m`) before now.
pub fn parse_since(s: &str) -> Result<DateTime<Utc>> {
    since_at(s, Utc::now())
}

fn since_at(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let midnight = d
            .and_hms_opt(0, 0, 0)
            .ok_or_else(|| anyhow!("invalid date {}", quoted(s)))?;
        return Ok(midnight.and_utc());
    }
    let age = humantime::parse_duration(s).with_context(|| {
        format!(
            "{} is neither an RFC 3339 time, a date (YYYY-MM-DD) nor an age like 2d",
            quoted(s)
        )
    })?;
    let age = chrono::Duration::from_std(age)
        .with_context(|| format!("age {} is too large", quoted(s)))?;
    now.checked_sub_signed(age)
        .ok_or_else(|| anyhow!("age {} is too large", quoted(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn worker_ref_digits_are_ids_and_anything_else_a_name() {
        assert_eq!("42".parse::<WorkerArg>(), Ok(WorkerArg::Id(42)));
        assert_eq!(
            "w-42".parse::<WorkerArg>(),
            Ok(WorkerArg::Name("w-42".into()))
        );
        assert_eq!("-1".parse::<WorkerArg>(), Ok(WorkerArg::Name("-1".into())));
        assert!("".parse::<WorkerArg>().is_err());
        assert!("99999999999999999999".parse::<WorkerArg>().is_err());
        let r = WorkerArg::Name("db1".into()).to_proto();
        assert_eq!(r.r#ref, Some(v1::worker_ref::Ref::Name("db1".into())));
        let r = WorkerArg::Id(7).to_proto();
        assert_eq!(r.r#ref, Some(v1::worker_ref::Ref::Id(7)));
    }

    #[test]
    fn since_accepts_times_dates_and_ages() {
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
        assert_eq!(
            since_at("2d", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 8, 12, 0, 0).unwrap()
        );
        assert_eq!(
            since_at("1h 30m", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 10, 10, 30, 0).unwrap()
        );
        assert_eq!(
            since_at("2026-01-02T03:04:05+01:00", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 2, 2, 4, 5).unwrap()
        );
        assert_eq!(
            since_at("2026-01-02", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap()
        );
        let err = since_at("yesterday", now).unwrap_err();
        assert!(format!("{err:#}").contains("yesterday"), "{err:#}");
    }

    #[test]
    fn retention_flags_apply_over_a_base() {
        let base = v1::Retention {
            keep_daily: 14,
            keep_weekly: 2,
            keep_monthly: 5,
            keep_yearly: 2,
        };
        let none = RetentionArgs {
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
        };
        assert_eq!(none.over(&base), None);
        let some = RetentionArgs {
            keep_daily: Some(30),
            ..none
        };
        let r = some.over(&base).unwrap();
        assert_eq!((r.keep_daily, r.keep_weekly, r.keep_yearly), (30, 2, 2));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn options_starting_with_a_dash_are_accepted() {
        let cli = Cli::try_parse_from([
            "pgsnap",
            "--output",
            "json",
            "job",
            "add",
            "--instance",
            "1",
            "--cron",
            "0 1 * * *",
            "--option=-Z9",
            "--option",
            "--no-comments",
            "--type",
            "CLUSTER-SCHEMA",
        ])
        .unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        let Command::Job(JobCommand::Add(add)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(add.options, ["-Z9", "--no-comments"]);
        assert_eq!(add.dump_type, DumpTypeArg::ClusterSchema);
    }
}
