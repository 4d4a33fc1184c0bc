//! The command line of restores: ad-hoc restores, restore jobs, the restore
//! log, copy jobs and server restores. No I/O.
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use pgsnapman_proto::model::quoted;
use pgsnapman_proto::v1;

use super::{FormatArg, StatusArg, WaitArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestoreTypeArg {
    /// Schema and data
    Full,
    /// Schema only
    Schema,
    /// Data only
    Data,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExistingArg {
    /// Restore into a temporary database, swap, keep the old one as <name>_pgsnapman_bak
    Rename,
    /// Restore into a temporary database, swap, drop the old one
    Drop,
    /// Drop the target first, then restore
    DropBefore,
    /// Do nothing if the target exists (reported as ABORTED)
    Leave,
    /// Data restores: empty the dumped tables first
    Truncate,
}

/// Where and how a dump is restored (every restore command takes these).
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Restore schema and data, the schema only, or the data only [default: full]
    #[arg(long, value_enum, ignore_case = true)]
    pub restore_type: Option<RestoreTypeArg>,
    /// Restore only this schema of the dump [default: all]
    #[arg(long)]
    pub schema: Option<String>,
    /// What to do when the target database exists [default: rename]
    #[arg(long, value_enum, ignore_case = true)]
    pub existing: Option<ExistingArg>,
    /// No owners, no privileges, no roles created: everything belongs to --owner
    #[arg(long)]
    pub no_roles: bool,
    /// With --no-roles: owner of the restored database [default: the target instance's user]
    #[arg(long, value_name = "ROLE", requires = "no_roles")]
    pub owner: Option<String>,
    /// Keep the dumped tablespace assignments [default: none are kept]
    #[arg(long)]
    pub keep_tablespaces: bool,
    /// Map a tablespace, OLD=NEW (repeatable; OLD= drops that assignment)
    #[arg(long = "map-tablespace", value_name = "OLD=NEW")]
    pub map_tablespace: Vec<String>,
    /// pg_restore -j (the archive is spooled on the worker when needed)
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Extra pg_restore option, repeatable (--option=--disable-triggers);
    /// with --script: the script's arguments, in order
    #[arg(long = "option", value_name = "ARG", allow_hyphen_values = true)]
    pub options: Vec<String>,
    /// Restore with this registered script instead of pg_restore/psql
    /// (docs/scripts.md; the worker must enable scripts)
    #[arg(long, value_name = "NAME")]
    pub script: Option<String>,
}

impl TargetArgs {
    /// The proto target onto `instance` under `database` (empty: the dumped name).
    pub fn to_proto(&self, instance: i64, database: &str) -> Result<v1::RestoreTarget> {
        let mut map = std::collections::HashMap::new();
        for m in &self.map_tablespace {
            let Some((old, new)) = m.split_once('=') else {
                bail!(
                    "--map-tablespace {}: write OLD=NEW (or OLD= to drop the assignment)",
                    quoted(m)
                );
            };
            if old.is_empty() {
                bail!(
                    "--map-tablespace {}: the old tablespace name is empty",
                    quoted(m)
                );
            }
            map.insert(old.to_string(), new.to_string());
        }
        Ok(v1::RestoreTarget {
            instance_id: instance,
            database: database.to_string(),
            schema: self.schema.clone().unwrap_or_default(),
            restore_type: self.restore_type.map_or(0, |t| match t {
                RestoreTypeArg::Full => v1::RestoreType::Full,
                RestoreTypeArg::Schema => v1::RestoreType::Schema,
                RestoreTypeArg::Data => v1::RestoreType::Data,
            } as i32),
            existing_database: self.existing.map_or(0, |e| match e {
                ExistingArg::Rename => v1::ExistingDatabase::Rename,
                ExistingArg::Drop => v1::ExistingDatabase::Drop,
                ExistingArg::DropBefore => v1::ExistingDatabase::DropBefore,
                ExistingArg::Leave => v1::ExistingDatabase::Leave,
                ExistingArg::Truncate => v1::ExistingDatabase::Truncate,
            } as i32),
            roles: !self.no_roles,
            owner: self.owner.clone().unwrap_or_default(),
            keep_tablespaces: self.keep_tablespaces,
            tablespace_map: map,
            parallel_jobs: self.jobs.unwrap_or(0),
            extra_options: self.options.clone(),
            script_name: self.script.clone().unwrap_or_default(),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Restore one dump now (no job is created)
    Now {
        /// The dump to restore (catalog id)
        #[arg(long, value_name = "ID")]
        dump: i64,
        /// Target instance id
        #[arg(long, value_name = "ID")]
        to_instance: i64,
        /// Target database [default: the dumped database's name]
        #[arg(long, value_name = "DB")]
        to_database: Option<String>,
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Run a restore job now (its fixed dump, or its source job's latest good dump)
    Run {
        restore_job_id: i64,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Restore every database of an instance onto another, each from its latest good FULL dump
    Server {
        /// Source instance id
        #[arg(long, value_name = "ID")]
        from: i64,
        /// Target instance id
        #[arg(long, value_name = "ID")]
        to: i64,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestoreKindArg {
    /// Once: as soon as possible, or at --at
    Single,
    /// By --cron
    Repeat,
    /// After every successful dump of --from-job
    Trigger,
}

#[derive(Debug, Subcommand)]
pub enum RestoreJobCommand {
    /// Add a restore job
    Add(Box<RestoreJobAddArgs>),
    /// List restore jobs with their last run
    List {
        /// Only jobs restoring this dump job's dumps
        #[arg(long, value_name = "ID")]
        source_job: Option<i64>,
        /// Only jobs restoring onto this instance
        #[arg(long, value_name = "ID")]
        instance: Option<i64>,
    },
    /// Show one restore job
    Show { id: i64 },
    /// Stop running the job
    Halt { id: i64 },
    /// Run a halted job again
    Resume { id: i64 },
    /// Remove a restore job (its runs stay in the restore log)
    Remove { id: i64 },
}

#[derive(Debug, Args)]
pub struct RestoreJobAddArgs {
    /// Restore the latest good dump of this dump job
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "from_dump",
        required_unless_present = "from_dump"
    )]
    pub from_job: Option<i64>,
    /// Restore this dump
    #[arg(long, value_name = "ID")]
    pub from_dump: Option<i64>,
    /// Target instance id
    #[arg(long, value_name = "ID")]
    pub to_instance: i64,
    /// Target database [default: the dumped database's name]
    #[arg(long, value_name = "DB")]
    pub to_database: Option<String>,
    /// When it runs [default: single]
    #[arg(long, value_enum, ignore_case = true, default_value_t = RestoreKindArg::Single)]
    pub kind: RestoreKindArg,
    /// REPEAT: five-field crontab expression (UTC)
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// SINGLE: not before this time (RFC 3339) [default: as soon as possible]
    #[arg(long, value_name = "TIME")]
    pub at: Option<DateTime<Utc>>,
    /// Create the job halted
    #[arg(long)]
    pub halted: bool,
    /// Free text for people
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

impl RestoreJobAddArgs {
    pub fn to_proto(&self) -> Result<v1::AddRestoreJobRequest> {
        Ok(v1::AddRestoreJobRequest {
            kind: match self.kind {
                RestoreKindArg::Single => v1::RestoreJobKind::Single,
                RestoreKindArg::Repeat => v1::RestoreJobKind::Repeat,
                RestoreKindArg::Trigger => v1::RestoreJobKind::Trigger,
            } as i32,
            source_job_id: self.from_job.unwrap_or(0),
            source_dump_id: self.from_dump.unwrap_or(0),
            target: Some(
                self.target
                    .to_proto(self.to_instance, self.to_database.as_deref().unwrap_or(""))?,
            ),
            cron: self.cron.clone().unwrap_or_default(),
            run_at: self.at.map(pgsnapman_proto::timestamp),
            status: if self.halted {
                v1::Status::Halted as i32
            } else {
                0
            },
            comment: self.comment.clone().unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestoreStatusArg {
    Queued,
    Running,
    Succeeded,
    Failed,
    Aborted,
}

#[derive(Debug, Subcommand)]
pub enum RestoreLogCommand {
    /// List restore runs, newest first
    List {
        /// Only runs of this restore job
        #[arg(long, value_name = "ID")]
        job: Option<i64>,
        /// Only runs onto this instance
        #[arg(long, value_name = "ID")]
        instance: Option<i64>,
        #[arg(long, value_enum, ignore_case = true)]
        status: Option<RestoreStatusArg>,
        /// At most this many [default: 100, at most 10000]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: Option<u32>,
    },
    /// Show one run with its log lines
    Show { run: i64 },
}

impl RestoreStatusArg {
    pub fn to_proto(self) -> v1::RestoreStatus {
        match self {
            RestoreStatusArg::Queued => v1::RestoreStatus::Queued,
            RestoreStatusArg::Running => v1::RestoreStatus::Running,
            RestoreStatusArg::Succeeded => v1::RestoreStatus::Succeeded,
            RestoreStatusArg::Failed => v1::RestoreStatus::Failed,
            RestoreStatusArg::Aborted => v1::RestoreStatus::Aborted,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum CopyCommand {
    /// Dump a database by cron and restore every successful dump onto one or more targets
    Add(Box<CopyAddArgs>),
    /// List copy jobs: source, targets, last dump and last restore of each target
    List,
}

#[derive(Debug, Args)]
pub struct CopyAddArgs {
    /// Source instance id
    #[arg(long, value_name = "ID")]
    pub instance: i64,
    /// Source database
    #[arg(long, value_name = "DB")]
    pub database: String,
    /// When to dump (and so copy): five-field crontab expression, in the worker's time zone
    #[arg(long, value_name = "EXPR")]
    pub cron: String,
    /// Archive format of the dumps [default: custom]
    #[arg(long, value_enum, ignore_case = true)]
    pub format: Option<FormatArg>,
    /// A target, INSTANCE_ID[:DATABASE] (repeatable) [database default: the source's name]
    #[arg(long = "to", value_name = "INSTANCE[:DB]", required = true)]
    pub to: Vec<String>,
    /// Create the copy job halted
    #[arg(long)]
    pub halted: bool,
    /// Free text for people
    #[arg(long)]
    pub comment: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

impl CopyAddArgs {
    pub fn to_proto(&self) -> Result<v1::AddCopyJobRequest> {
        let mut targets = Vec::with_capacity(self.to.len());
        for t in &self.to {
            let (instance, database) = match t.split_once(':') {
                Some((i, d)) => (i, d),
                None => (t.as_str(), ""),
            };
            let Ok(instance) = instance.parse::<i64>() else {
                bail!(
                    "--to {}: write INSTANCE_ID or INSTANCE_ID:DATABASE",
                    quoted(t)
                );
            };
            targets.push(self.target.to_proto(instance, database)?);
        }
        Ok(v1::AddCopyJobRequest {
            dump: Some(v1::AddDumpJobRequest {
                instance_id: self.instance,
                database: self.database.clone(),
                dump_type: v1::DumpType::Full as i32,
                format: self.format.map_or(0, |f| f.to_proto() as i32),
                cron: self.cron.clone(),
                status: if self.halted {
                    StatusArg::Halted.to_proto() as i32
                } else {
                    0
                },
                ..Default::default()
            }),
            targets,
            comment: self.comment.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(args: &[&str]) -> TargetArgs {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            t: TargetArgs,
        }
        let mut full = vec!["t"];
        full.extend_from_slice(args);
        <T as clap::Parser>::try_parse_from(full).unwrap().t
    }

    #[test]
    fn target_flags_become_the_proto_target() {
        let t = target(&[
            "--restore-type",
            "data",
            "--existing",
            "truncate",
            "--map-tablespace",
            "fast=slow",
            "--map-tablespace",
            "old=",
            "--jobs",
            "4",
            "--option=--disable-triggers",
        ])
        .to_proto(7, "Copy ü")
        .unwrap();
        assert_eq!(t.instance_id, 7);
        assert_eq!(t.database, "Copy ü");
        assert_eq!(t.restore_type, v1::RestoreType::Data as i32);
        assert_eq!(t.existing_database, v1::ExistingDatabase::Truncate as i32);
        assert!(t.roles, "roles are on unless --no-roles");
        assert_eq!(t.tablespace_map["fast"], "slow");
        assert_eq!(t.tablespace_map["old"], "");
        assert_eq!(t.parallel_jobs, 4);
        assert_eq!(t.extra_options, ["--disable-triggers"]);
        let off = target(&["--no-roles", "--owner", "app"])
            .to_proto(1, "")
            .unwrap();
        assert!(!off.roles);
        assert_eq!(off.owner, "app");
        assert!(
            target(&["--map-tablespace", "nothing"])
                .to_proto(1, "")
                .is_err()
        );
    }

    #[test]
    fn copy_targets_parse_instance_and_database() {
        #[derive(clap::Parser)]
        struct C {
            #[command(flatten)]
            c: CopyAddArgs,
        }
        let c = <C as clap::Parser>::try_parse_from([
            "c",
            "--instance",
            "1",
            "--database",
            "app",
            "--cron",
            "0 2 * * *",
            "--to",
            "2",
            "--to",
            "3:app copy",
        ])
        .unwrap()
        .c;
        let req = c.to_proto().unwrap();
        assert_eq!(req.targets.len(), 2);
        assert_eq!(req.targets[0].instance_id, 2);
        assert_eq!(req.targets[0].database, "");
        assert_eq!(req.targets[1].database, "app copy");
        assert_eq!(req.dump.unwrap().database, "app");
        let bad = <C as clap::Parser>::try_parse_from([
            "c",
            "--instance",
            "1",
            "--database",
            "a",
            "--cron",
            "0 2 * * *",
            "--to",
            "x:y",
        ])
        .unwrap()
        .c;
        assert!(bad.to_proto().is_err());
    }
}
