//! `pgsnap token …`, `pgsnap cert …` and `pgsnap audit …`: operator tokens,
//! operator client certificates and the audit log.
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use pgsnapman_proto::v1;

use super::parse_since;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its hash is kept)
    Create {
        /// 1-128 letters, digits, '.', '-' or '_'
        name: String,
        /// What the token may do
        #[arg(long, value_enum, ignore_case = true)]
        role: RoleArg,
        /// Valid for this long (e.g. 90d, 12h) [default: no expiry]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// List tokens and operator certificates (never a secret)
    List,
    /// Revoke a token or an operator certificate; the next call with it is refused
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a key pair here (the key stays here, 0600) and have the
    /// coordinator's CA sign a certificate for it; writes OUT/NAME.key,
    /// OUT/NAME.crt and OUT/ca.crt
    Issue {
        /// 1-128 letters, digits, '.', '-' or '_' (shared with token names)
        name: String,
        /// What the certificate may do
        #[arg(long, value_enum, ignore_case = true)]
        role: RoleArg,
        /// Directory to write the key and certificates into (made 0700 if missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Valid for this long, 1m to 2 years [default: 365d]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// Accept a certificate signed by a CA the coordinator trusts for
    /// client certificates, pinned by its SHA-256 fingerprint
    Register {
        /// 1-128 letters, digits, '.', '-' or '_' (shared with token names)
        name: String,
        #[arg(long, value_enum, ignore_case = true)]
        role: RoleArg,
        /// The certificate (PEM, one certificate)
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// End the credential earlier than the certificate's notAfter
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Viewer,
    Operator,
    Admin,
}

impl RoleArg {
    pub fn to_proto(self) -> v1::Role {
        match self {
            RoleArg::Viewer => v1::Role::Viewer,
            RoleArg::Operator => v1::Role::Operator,
            RoleArg::Admin => v1::Role::Admin,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit rows, newest first
    List(AuditListArgs),
}

#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// Only calls by this token name
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Only this method, e.g. RestoreNow
    #[arg(long)]
    pub method: Option<String>,
    /// Only rows at or after this: RFC 3339 time, date, or age like 2d
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Only rows before this: RFC 3339 time, date, or age like 1h
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub until: Option<DateTime<Utc>>,
    /// Only refused or failed calls
    #[arg(long)]
    pub failed: bool,
    /// At most this many [default: 100, at most 10000]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: Option<u32>,
}
