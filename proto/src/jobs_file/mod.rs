//! The standalone jobs file (TOML, docs/standalone.md): instances and dump
//! jobs by name, read and validated up front, turned into the same
//! `Schedule` a managed worker gets from SyncSchedule (the standalone worker
//! runs it; `pgsnap job import` puts it in the catalog). Never holds a
//! password: a password key is refused; the caller supplies passwords.
use std::collections::BTreeMap;
use std::path::Path;

use crate::model::{CronExpr, excerpt, validate_dump_options, validate_identifier};
use crate::v1::{
    DumpFormat, DumpJob, DumpType, ExistingDatabase, InstanceConnection, JobKind, Retention,
    Schedule, Status,
};
use serde::Deserialize;
use target::TargetEntry;
use toml::Spanned;

/// A jobs file that cannot be used: one line naming the file, the line,
/// the key and the reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct JobsFileError(pub String);

pub type Result<T, E = JobsFileError> = std::result::Result<T, E>;

macro_rules! anyhow {
    ($($t:tt)*) => { JobsFileError(format!($($t)*)) };
}

/// Gives an instance's password (empty: none), or why it cannot.
pub type PasswordSource<'a> = &'a dyn Fn(&InstanceConnection) -> Result<String, String>;

/// Largest jobs file read (a schedule, not a data file).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Ids of standalone instances and jobs: a stable hash of the name in
/// [2^40, 2^41), far above any id a catalog hands out.
const ID_BASE: i64 = 1 << 40;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    instances: BTreeMap<String, Spanned<InstanceEntry>>,
    #[serde(default)]
    jobs: BTreeMap<String, Spanned<JobEntry>>,
    #[serde(default)]
    copies: BTreeMap<String, Spanned<CopyEntry>>,
    #[serde(default)]
    restores: BTreeMap<String, Spanned<RestoreEntry>>,
}

/// `[restores.NAME]`: at each fire of `cron` (UTC, as a managed REPEAT
/// restore job's), the newest stored dump of `job` is restored into `to` /
/// `database`, like a copy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreEntry {
    job: Spanned<String>,
    to: Spanned<String>,
    #[serde(default)]
    database: String,
    #[serde(default)]
    existing: Option<Spanned<String>>,
    #[serde(default)]
    destructive: bool,
    cron: Spanned<String>,
    #[serde(default)]
    status: Option<Spanned<String>>,
    #[serde(default)]
    comment: String,
}

/// `[copies.NAME]`: each successful dump of `job` is restored into `to`
/// (an instance of the file), `database` (default: the dumped one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyEntry {
    job: Spanned<String>,
    to: Spanned<String>,
    #[serde(default)]
    database: String,
    #[serde(default)]
    existing: Option<Spanned<String>>,
    /// Confirms a policy that can destroy the target (drop, drop_before,
    /// truncate), as `--yes` does on the command line.
    #[serde(default)]
    destructive: bool,
}

/// A copy of the jobs file: restore every successful dump of `job_id` into
/// `instance_id` / `database` with the `existing` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub name: String,
    pub job_id: i64,
    pub instance_id: i64,
    pub database: String,
    pub existing: ExistingDatabase,
}

/// A cron-scheduled restore of the jobs file (a managed REPEAT restore job):
/// at each fire of `cron`, in UTC, the newest stored dump of `target.job_id`
/// is restored as `target` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// A stable id from the name, in the standalone range; it keys the
    /// restore's fire state beside the jobs' (never equal to a job's).
    pub id: i64,
    pub cron: String,
    pub status: Status,
    pub comment: String,
    /// What is restored where: the same fields as a copy (its name is the
    /// restore's).
    pub target: Copy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceEntry {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    user: String,
    #[serde(default = "default_maintenance_db")]
    maintenance_db: String,
    #[serde(default)]
    sslmode: Option<String>,
    #[serde(default)]
    status: Option<Spanned<String>>,
    /// Only so that it can be refused by name.
    #[serde(default)]
    password: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobEntry {
    instance: Spanned<String>,
    #[serde(default)]
    database: String,
    #[serde(default)]
    schema: String,
    #[serde(default, rename = "type")]
    dump_type: Option<Spanned<String>>,
    #[serde(default)]
    format: Option<Spanned<String>>,
    cron: Spanned<String>,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default)]
    parallel_jobs: u32,
    #[serde(default)]
    pause_replay: bool,
    #[serde(default)]
    on_demand: bool,
    #[serde(default)]
    status: Option<Spanned<String>>,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    retention: Option<RetentionEntry>,
    #[serde(default)]
    verify: Option<Spanned<VerifyEntry>>,
    #[serde(default)]
    password: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionEntry {
    #[serde(default)]
    daily: u32,
    #[serde(default)]
    weekly: u32,
    #[serde(default)]
    monthly: u32,
    #[serde(default)]
    yearly: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyEntry {
    cron: Spanned<String>,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    instance: Option<Spanned<String>>,
    #[serde(default)]
    checks: Vec<String>,
}

fn default_port() -> u16 {
    5432
}
fn default_maintenance_db() -> String {
    "postgres".into()
}
fn default_method() -> String {
    "read".into()
}

/// Retention of a job that names none (the catalog's default too).
pub const DEFAULT_RETENTION: Retention = Retention {
    keep_daily: 14,
    keep_weekly: 2,
    keep_monthly: 5,
    keep_yearly: 2,
};

/// A parsed jobs file: the schedule, and the names behind its ids.
#[derive(Debug, Clone)]
pub struct Jobs {
    /// The schedule version the file stands for (`version_of` its text).
    pub version: u64,
    pub schedule: Schedule,
    /// Job name → id, in name order.
    pub job_ids: BTreeMap<String, i64>,
    /// Instance name → id, in name order.
    pub instance_ids: BTreeMap<String, i64>,
    /// `[copies.NAME]`, in name order.
    pub copies: Vec<Copy>,
    /// `[restores.NAME]`, in name order.
    pub restores: Vec<Restore>,
}

impl Jobs {
    /// The job called `name`, or a line naming the ones there are.
    pub fn job(&self, name: &str) -> Result<&DumpJob> {
        let id = self.job_ids.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.job_ids.keys().map(String::as_str).collect();
            anyhow!(
                "no job {} in the jobs file (jobs: {})",
                crate::model::quoted(&excerpt(name)),
                excerpt(&known.join(", "))
            )
        })?;
        self.schedule
            .dump_jobs
            .iter()
            .find(|j| j.id == *id)
            .ok_or_else(|| anyhow!("job {name} has no entry"))
    }

    /// The instance called `name`.
    pub fn instance(&self, name: &str) -> Result<&InstanceConnection> {
        self.schedule
            .instances
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.instance_ids.keys().map(String::as_str).collect();
                anyhow!(
                    "no instance {} in the jobs file (instances: {})",
                    crate::model::quoted(&excerpt(name)),
                    excerpt(&known.join(", "))
                )
            })
    }

    /// The name of job `id`, if it is one of the file's.
    pub fn job_name(&self, id: i64) -> Option<&str> {
        self.job_ids
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.as_str())
    }
}

/// Whether `id` lies in the standalone range [2^40, 2^41): the ids a jobs
/// file gives, which `pgsnap job import` may ask the catalog to use.
pub fn is_standalone_id(id: i64) -> bool {
    (ID_BASE..2 * ID_BASE).contains(&id)
}

/// A stable id for `name` of `kind` (FNV-1a, 64 bits, folded into 40).
pub fn stable_id(kind: &str, name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kind.bytes().chain([0]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ID_BASE + i64::try_from(h & ((1 << 40) - 1)).unwrap_or(0)
}

/// The schedule version of a jobs file: top bit set, never a catalog's.
pub fn version_of(text: &str) -> u64 {
    let low = u64::try_from(stable_id("file", text) - ID_BASE).unwrap_or(0);
    (1 << 62) | low
}

/// Reads and validates the jobs file at `path`; `password` gives an
/// instance's password (file or environment), never the TOML.
pub fn load(path: &Path, password: PasswordSource<'_>) -> Result<Jobs> {
    let shown = path.display().to_string();
    let meta =
        std::fs::metadata(path).map_err(|e| anyhow!("cannot read jobs file {shown}: {e}"))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(anyhow!(
            "jobs file {shown} is {} bytes, more than the {MAX_FILE_BYTES} a jobs file may hold",
            meta.len()
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow!("cannot read jobs file {shown}: {e}"))?;
    parse(&shown, &text, password)
}

/// `file:line: ` for a byte offset into `text`.
fn at(file: &str, text: &str, offset: usize) -> String {
    let line = text
        .get(..offset.min(text.len()))
        .map_or(0, |t| t.bytes().filter(|b| *b == b'\n').count())
        + 1;
    format!("{file}:{line}")
}

/// Parses the jobs file `text` (named `file` in errors).
pub fn parse(file: &str, text: &str, password: PasswordSource<'_>) -> Result<Jobs> {
    let parsed: File = toml::from_str(text).map_err(|e| {
        let place = e
            .span()
            .map_or_else(|| file.to_string(), |s| at(file, text, s.start));
        anyhow!("{place}: {}", e.message())
    })?;
    let bad = |offset: usize, key: String, why: String| {
        anyhow!("{}: {key}: {why}", at(file, text, offset))
    };
    let mut schedule = Schedule::default();
    let mut instance_ids = BTreeMap::new();
    for (name, entry) in &parsed.instances {
        let start = entry.span().start;
        let e = entry.get_ref();
        let key = format!("instances.{name}");
        validate_identifier("instance name", name)
            .map_err(|err| bad(start, key.clone(), err.to_string()))?;
        if let Some(p) = &e.password {
            return Err(bad(
                p.span().start,
                format!("{key}.password"),
                password_refusal(name),
            ));
        }
        if e.host.is_empty() || e.user.is_empty() {
            return Err(bad(start, key, "host and user are required".into()));
        }
        let sslmode = match &e.sslmode {
            Some(m) => {
                crate::model::validate_sslmode(m)
                    .map_err(|err| bad(start, format!("{key}.sslmode"), err.to_string()))?;
                m.clone()
            }
            None => crate::model::default_sslmode(&e.host).to_string(),
        };
        let status = status_of(e.status.as_ref()).map_err(|why| {
            bad(
                e.status.as_ref().map_or(start, |s| s.span().start),
                format!("{key}.status"),
                why,
            )
        })?;
        let id = stable_id("instance", name);
        if instance_ids.values().any(|v| *v == id) {
            return Err(bad(
                start,
                key,
                "its id collides with another instance's: rename it".into(),
            ));
        }
        let mut conn = InstanceConnection {
            instance_id: id,
            name: name.clone(),
            host: e.host.clone(),
            port: u32::from(e.port),
            user: e.user.clone(),
            maintenance_db: e.maintenance_db.clone(),
            status: status as i32,
            sslmode,
            ..Default::default()
        };
        conn.password =
            password(&conn).map_err(|err| anyhow!("{}: {key}: {err}", at(file, text, start)))?;
        instance_ids.insert(name.clone(), id);
        schedule.instances.push(conn);
    }
    let mut job_ids = BTreeMap::new();
    for (name, entry) in &parsed.jobs {
        let start = entry.span().start;
        let e = entry.get_ref();
        let key = format!("jobs.{name}");
        validate_identifier("job name", name)
            .map_err(|err| bad(start, key.clone(), err.to_string()))?;
        if let Some(p) = &e.password {
            return Err(bad(
                p.span().start,
                format!("{key}.password"),
                password_refusal(name),
            ));
        }
        let instance_of = |r: &Spanned<String>, what: &str| {
            instance_ids.get(r.get_ref()).copied().ok_or_else(|| {
                bad(
                    r.span().start,
                    format!("{key}.{what}"),
                    format!(
                        "no instance {} in this file (instances: {})",
                        crate::model::quoted(&excerpt(r.get_ref())),
                        excerpt(&instance_ids.keys().cloned().collect::<Vec<_>>().join(", "))
                    ),
                )
            })
        };
        let instance_id = instance_of(&e.instance, "instance")?;
        let dump_type = match &e.dump_type {
            None => DumpType::Full,
            Some(t) => DumpType::from_label(&t.get_ref().replace('-', "_")).filter(|t| *t != DumpType::Script).ok_or_else(|| {
                bad(
                    t.span().start,
                    format!("{key}.type"),
                    format!(
                        "{} is not a dump type this file takes (full, schema, cluster, cluster_schema, globals; script jobs need the catalog's script registry)",
                        crate::model::quoted(&excerpt(t.get_ref()))
                    ),
                )
            })?,
        };
        let format = match &e.format {
            None => dump_type.default_format(),
            Some(f) => DumpFormat::from_label(f.get_ref()).ok_or_else(|| {
                bad(
                    f.span().start,
                    format!("{key}.format"),
                    format!(
                        "{} is not a format (custom, directory, plain)",
                        crate::model::quoted(&excerpt(f.get_ref()))
                    ),
                )
            })?,
        };
        if dump_type.is_cluster_wide() {
            if !e.database.is_empty() || !e.schema.is_empty() {
                return Err(bad(
                    start,
                    key,
                    format!(
                        "a {} dump covers the whole cluster: give no database or schema",
                        dump_type.label()
                    ),
                ));
            }
            if format != DumpFormat::Plain {
                return Err(bad(
                    start,
                    format!("{key}.format"),
                    format!(
                        "a {} dump is always PLAIN (pg_dumpall writes SQL only)",
                        dump_type.label()
                    ),
                ));
            }
        } else {
            validate_identifier("database", &e.database)
                .map_err(|err| bad(start, format!("{key}.database"), err.to_string()))?;
            if !e.schema.is_empty() {
                validate_identifier("schema", &e.schema)
                    .map_err(|err| bad(start, format!("{key}.schema"), err.to_string()))?;
            }
        }
        CronExpr::parse(e.cron.get_ref())
            .map_err(|err| bad(e.cron.span().start, format!("{key}.cron"), err.to_string()))?;
        validate_dump_options(&e.options)
            .map_err(|err| bad(start, format!("{key}.options"), err.to_string()))?;
        if e.parallel_jobs > 64 {
            return Err(bad(
                start,
                format!("{key}.parallel_jobs"),
                format!("{} is more than 64", e.parallel_jobs),
            ));
        }
        let status = status_of(e.status.as_ref()).map_err(|why| {
            bad(
                e.status.as_ref().map_or(start, |s| s.span().start),
                format!("{key}.status"),
                why,
            )
        })?;
        let retention = match &e.retention {
            None => DEFAULT_RETENTION,
            Some(r) => Retention {
                keep_daily: r.daily,
                keep_weekly: r.weekly,
                keep_monthly: r.monthly,
                keep_yearly: r.yearly,
            },
        };
        for (what, v) in [
            ("daily", retention.keep_daily),
            ("weekly", retention.keep_weekly),
            ("monthly", retention.keep_monthly),
            ("yearly", retention.keep_yearly),
        ] {
            if v > 100_000 {
                return Err(bad(
                    start,
                    format!("{key}.retention.{what}"),
                    format!("{v} is too large (at most 100000)"),
                ));
            }
        }
        let id = stable_id("job", name);
        if job_ids.values().any(|v| *v == id) {
            return Err(bad(
                start,
                key,
                "its id collides with another job's: rename it".into(),
            ));
        }
        let mut job = DumpJob {
            id,
            instance_id,
            database: e.database.clone(),
            schema: e.schema.clone(),
            dump_type: dump_type as i32,
            format: format as i32,
            extra_options: e.options.clone(),
            cron: e.cron.get_ref().clone(),
            kind: JobKind::Repeat as i32,
            status: status as i32,
            retention: Some(retention),
            comment: e.comment.clone(),
            parallel_jobs: e.parallel_jobs,
            pause_replay: e.pause_replay,
            on_demand: e.on_demand,
            ..Default::default()
        };
        if let Some(v) = &e.verify {
            let vs = v.get_ref();
            let vkey = format!("{key}.verify");
            CronExpr::parse(vs.cron.get_ref()).map_err(|err| {
                bad(
                    vs.cron.span().start,
                    format!("{vkey}.cron"),
                    err.to_string(),
                )
            })?;
            match vs.method.as_str() {
                "read" if vs.instance.is_none() && vs.checks.is_empty() => {}
                "read" => {
                    return Err(bad(
                        v.span().start,
                        vkey,
                        "method read takes no instance and no checks".into(),
                    ));
                }
                "restore" => {}
                m => {
                    return Err(bad(
                        v.span().start,
                        format!("{vkey}.method"),
                        format!(
                            "{} is not a method (read, restore)",
                            crate::model::quoted(&excerpt(m))
                        ),
                    ));
                }
            }
            if vs.checks.len() > 32 || vs.checks.iter().any(|c| c.len() > 8192) {
                return Err(bad(
                    v.span().start,
                    format!("{vkey}.checks"),
                    "at most 32 checks of at most 8 KiB each".into(),
                ));
            }
            job.verify_cron = vs.cron.get_ref().clone();
            job.verify_method = vs.method.clone();
            job.verify_instance_id = match &vs.instance {
                Some(r) => instance_of(r, "verify.instance")?,
                None => 0,
            };
            job.verify_checks = vs.checks.clone();
        }
        job_ids.insert(name.clone(), id);
        schedule.dump_jobs.push(job);
    }
    let mut copies = Vec::new();
    for (name, entry) in &parsed.copies {
        let e = entry.get_ref();
        let target = TargetEntry {
            job: &e.job,
            to: &e.to,
            database: &e.database,
            existing: e.existing.as_ref(),
            destructive: e.destructive,
        };
        copies.push(target.check(
            &format!("copies.{name}"),
            entry.span().start,
            &job_ids,
            &schedule.dump_jobs,
            &instance_ids,
            &bad,
        )?);
    }
    let mut restores = Vec::new();
    for (name, entry) in &parsed.restores {
        let start = entry.span().start;
        let e = entry.get_ref();
        let key = format!("restores.{name}");
        let target = TargetEntry {
            job: &e.job,
            to: &e.to,
            database: &e.database,
            existing: e.existing.as_ref(),
            destructive: e.destructive,
        }
        .check(
            &key,
            start,
            &job_ids,
            &schedule.dump_jobs,
            &instance_ids,
            &bad,
        )?;
        CronExpr::parse(e.cron.get_ref())
            .map_err(|err| bad(e.cron.span().start, format!("{key}.cron"), err.to_string()))?;
        let status = status_of(e.status.as_ref()).map_err(|why| {
            bad(
                e.status.as_ref().map_or(start, |s| s.span().start),
                format!("{key}.status"),
                why,
            )
        })?;
        let id = stable_id("restore", name);
        if job_ids.values().any(|v| *v == id) || restores.iter().any(|r: &Restore| r.id == id) {
            return Err(bad(
                start,
                key,
                "its id collides with a job's or another restore's: rename it".into(),
            ));
        }
        restores.push(Restore {
            id,
            cron: e.cron.get_ref().clone(),
            status,
            comment: e.comment.clone(),
            target,
        });
    }
    Ok(Jobs {
        version: version_of(text),
        schedule,
        job_ids,
        instance_ids,
        copies,
        restores,
    })
}

/// The environment variable a standalone worker reads instance `name`'s
/// password from.
pub fn password_env(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PGSNAPMAN_PASSWORD_{upper}")
}

fn password_refusal(name: &str) -> String {
    format!(
        "passwords are never read from the jobs file: put it in the password file \
         (standalone.password_file, pgpass format, mode 0600) or in {}",
        password_env(name)
    )
}

fn status_of(s: Option<&Spanned<String>>) -> std::result::Result<Status, String> {
    match s.map(|s| s.get_ref().to_ascii_lowercase()) {
        None => Ok(Status::Active),
        Some(s) if s == "active" => Ok(Status::Active),
        Some(s) if s == "halted" => Ok(Status::Halted),
        Some(s) => Err(format!(
            "{} is not a status (active, halted)",
            crate::model::quoted(&excerpt(&s))
        )),
    }
}

mod target;
#[cfg(test)]
mod tests;
