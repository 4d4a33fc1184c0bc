//! Validated model types shared by coordinator, worker and CLI. Raw protobuf
//! messages are checked here once, at the edge; code behind the edge relies on
//! the guarantees these types document.
use std::str::FromStr;

use thiserror::Error;

use crate::v1::{DumpFormat, DumpType, TaskState};

/// Longest part of an operator's input that an error message repeats.
pub const QUOTED_INPUT_CHARS: usize = 100;

/// `text` cut to `QUOTED_INPUT_CHARS` characters, with an ellipsis and its
/// full length when longer: what an error may repeat of an input.
pub fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(QUOTED_INPUT_CHARS) {
        None => text.into(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()).into(),
    }
}

/// An operator's input as an error message quotes it: `{:?}` (so on one
/// line), cut like `excerpt`.
pub fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_INPUT_CHARS) {
        None => format!("{value:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &value[..end], value.len()),
    }
}

/// Why a value given by an operator or a peer was refused. Inputs are
/// quoted through `quoted`, never whole.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvalidInput {
    #[error("invalid cron expression {}: {}", quoted(.expr), excerpt(.reason))]
    Cron { expr: String, reason: String },
    #[error("pg_dump option {} is not allowed: {reason}", quoted(.option))]
    DumpOption {
        option: String,
        reason: &'static str,
    },
    #[error("pg_restore option {} is not allowed: {reason}", quoted(.option))]
    RestoreOption {
        option: String,
        reason: &'static str,
    },
    #[error("invalid {what} {}: {reason}", quoted(.value))]
    Identifier {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{0}")]
    Other(String),
}

/// A five-field crontab expression (minute hour day-of-month month
/// day-of-week), as operators write them, also accepting `@hourly`, `@daily`,
/// `@weekly`, `@monthly` and `@yearly`. Kept in the operator's spelling;
/// evaluated with the `cron` crate at second 0.
#[derive(Debug, Clone)]
pub struct CronExpr {
    text: String,
    schedule: cron::Schedule,
}

impl CronExpr {
    pub fn parse(expr: &str) -> Result<Self, InvalidInput> {
        let text = expr.split_whitespace().collect::<Vec<_>>().join(" ");
        let invalid = |reason: String| InvalidInput::Cron {
            expr: expr.to_string(),
            reason,
        };
        let six_field = match text.as_str() {
            "@hourly" => "0 0 * * * *".to_string(),
            "@daily" | "@midnight" => "0 0 0 * * *".to_string(),
            "@weekly" => "0 0 0 * * Sun".to_string(),
            "@monthly" => "0 0 0 1 * *".to_string(),
            "@yearly" | "@annually" => "0 0 0 1 1 *".to_string(),
            _ => {
                let fields = text.split(' ').filter(|f| !f.is_empty()).count();
                if fields != 5 {
                    return Err(invalid(format!(
                        "expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
                    )));
                }
                // Crontab numbers Sunday 0 (and 7); the cron crate numbers it 1.
                let mut parts: Vec<String> = text.split(' ').map(str::to_string).collect();
                parts[4] = crontab_weekdays(&parts[4]).map_err(invalid)?;
                format!("0 {}", parts.join(" "))
            }
        };
        let schedule = cron::Schedule::from_str(&six_field).map_err(|e| invalid(e.to_string()))?;
        if schedule.upcoming(chrono::Utc).next().is_none() {
            return Err(invalid("it never fires".to_string()));
        }
        Ok(Self { text, schedule })
    }

    /// The expression as the operator wrote it (whitespace normalised).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The next firing strictly after `after`.
    pub fn next_after<Tz: chrono::TimeZone>(
        &self,
        after: &chrono::DateTime<Tz>,
    ) -> Option<chrono::DateTime<Tz>> {
        self.schedule.after(after).next()
    }
}

/// Maps crontab day-of-week numbers (0-7, Sunday = 0 or 7) to names, which the
/// cron crate reads unambiguously. Names, `*` and `?` pass through.
fn crontab_weekdays(field: &str) -> Result<String, String> {
    const NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let map_num = |s: &str| -> Result<String, String> {
        match s.parse::<usize>() {
            Ok(n) if n <= 7 => Ok(NAMES[n].to_string()),
            Ok(n) => Err(format!("day-of-week {n} is out of range 0-7")),
            Err(_) => Ok(s.to_string()),
        }
    };
    let mut out = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let mapped = match range.split_once('-') {
            Some((a, b)) => format!("{}-{}", map_num(a)?, map_num(b)?),
            None => map_num(range)?,
        };
        out.push(match step {
            Some(s) => format!("{mapped}/{s}"),
            None => mapped,
        });
    }
    Ok(out.join(","))
}

/// Checks extra pg_dump arguments of a job. Options that would defeat the
/// store or that pgsnapman sets itself are refused: the output target and
/// format, compression, connection and password options, and `-j` (use the
/// job's `parallel_jobs`).
pub fn validate_dump_options(options: &[String]) -> Result<(), InvalidInput> {
    // (short, long, reason)
    const FORBIDDEN: &[(&str, &str, &str)] = &[
        ("-f", "--file", "pgsnapman chooses where the dump goes"),
        ("-F", "--format", "set the job's format instead"),
        (
            "-Z",
            "--compress",
            "dumps are taken uncompressed so that the store can deduplicate them",
        ),
        ("-j", "--jobs", "set the job's parallel_jobs instead"),
        ("-d", "--dbname", "the job names the database"),
        ("-h", "--host", "the instance gives the host"),
        ("-p", "--port", "the instance gives the port"),
        ("-U", "--username", "the instance gives the user"),
        (
            "-W",
            "--password",
            "passwords come from the instance or the worker's password file",
        ),
        ("-w", "--no-password", "pgsnapman sets it"),
        ("-n", "--schema", "set the job's schema instead"),
        ("-s", "--schema-only", "choose the SCHEMA dump type instead"),
        ("-V", "--version", "not a dump option"),
        ("-?", "--help", "not a dump option"),
    ];
    check_options(options, FORBIDDEN)
        .map_err(|(option, reason)| InvalidInput::DumpOption { option, reason })
}

/// Checks extra pg_restore arguments of a restore. Options that pgsnapman
/// sets itself, or that a restore target setting expresses, are refused.
pub fn validate_restore_options(options: &[String]) -> Result<(), InvalidInput> {
    // (short, long, reason)
    const FORBIDDEN: &[(&str, &str, &str)] = &[
        (
            "-f",
            "--file",
            "pgsnapman restores into the target database",
        ),
        ("-d", "--dbname", "the restore names the target database"),
        ("-F", "--format", "the dump's format is known"),
        (
            "-C",
            "--create",
            "pgsnapman creates the database (encoding, locale, owner)",
        ),
        (
            "-c",
            "--clean",
            "choose the existing-database policy instead",
        ),
        ("-l", "--list", "not a restore"),
        (
            "-L",
            "--use-list",
            "choose the restore type and schema instead",
        ),
        ("-j", "--jobs", "set the restore's parallel jobs instead"),
        ("-n", "--schema", "set the restore's schema instead"),
        (
            "-s",
            "--schema-only",
            "choose the SCHEMA restore type instead",
        ),
        ("-a", "--data-only", "choose the DATA restore type instead"),
        ("-O", "--no-owner", "turn role handling off instead"),
        ("-x", "--no-privileges", "turn role handling off instead"),
        (
            "-e",
            "--exit-on-error",
            "pgsnapman classifies errors itself",
        ),
        (
            "-1",
            "--single-transaction",
            "the temporary database makes the restore atomic",
        ),
        ("-h", "--host", "the target instance gives the host"),
        ("-p", "--port", "the target instance gives the port"),
        ("-U", "--username", "the target instance gives the user"),
        (
            "-W",
            "--password",
            "passwords come from the instance or the worker's password file",
        ),
        ("-w", "--no-password", "pgsnapman sets it"),
        ("-V", "--version", "not a restore option"),
        ("-?", "--help", "not a restore option"),
    ];
    const FORBIDDEN_LONG: &[(&str, &str)] = &[
        (
            "--no-tablespaces",
            "use the restore's tablespace settings instead",
        ),
        ("--role", "the restore runs as the target instance's user"),
    ];
    for option in options {
        for (long, reason) in FORBIDDEN_LONG {
            if option == long || option.starts_with(&format!("{long}=")) {
                return Err(InvalidInput::RestoreOption {
                    option: option.clone(),
                    reason,
                });
            }
        }
    }
    check_options(options, FORBIDDEN)
        .map_err(|(option, reason)| InvalidInput::RestoreOption { option, reason })
}

/// Checks what a restore target says on its own (names, pg_restore options,
/// a TRUNCATE only with a DATA restore, at most 64 parallel jobs); the
/// coordinator also checks the instance and fills in defaults.
pub fn validate_restore_target(t: &crate::v1::RestoreTarget) -> Result<(), InvalidInput> {
    use crate::v1::{ExistingDatabase, RestoreType};
    if !t.database.is_empty() {
        validate_identifier("target database", &t.database)?;
    }
    if !t.schema.is_empty() {
        validate_identifier("schema", &t.schema)?;
    }
    if !t.owner.is_empty() {
        validate_identifier("owner", &t.owner)?;
    }
    for (old, new) in &t.tablespace_map {
        validate_identifier("tablespace", old)?;
        if !new.is_empty() {
            validate_identifier("tablespace", new)?;
        }
    }
    if t.existing_database == ExistingDatabase::Truncate as i32
        && t.restore_type != RestoreType::Data as i32
    {
        return Err(InvalidInput::Other(
            "TRUNCATE (empty the dumped tables first) goes with a DATA restore".into(),
        ));
    }
    if t.parallel_jobs > 64 {
        return Err(InvalidInput::Other(format!(
            "parallel jobs {} is more than 64",
            t.parallel_jobs
        )));
    }
    if !t.script_name.is_empty() {
        // The options of a script restore are the script's arguments.
        return crate::script::validate_restore_target(t);
    }
    validate_restore_options(&t.extra_options)
}

/// The first option that is malformed or in `forbidden` (short, long,
/// reason), with the reason.
fn check_options(
    options: &[String],
    forbidden: &[(&str, &str, &'static str)],
) -> Result<(), (String, &'static str)> {
    for option in options {
        if option.is_empty() || option.contains('\0') || option.contains('\n') {
            return Err((option.clone(), "empty or containing a NUL or newline"));
        }
        if !option.starts_with('-') {
            return Err((
                option.clone(),
                "give each option with its value attached (--opt=value)",
            ));
        }
        for (short, long, reason) in forbidden {
            let long_hit = option == long || option.starts_with(&format!("{long}="));
            // Short options may carry their value attached (-Z0, -fout).
            let short_hit = !option.starts_with("--") && option.starts_with(short);
            if long_hit || short_hit {
                return Err((option.clone(), reason));
            }
        }
    }
    Ok(())
}

/// Checks a database, schema or role name. Postgres allows almost anything in a
/// quoted identifier; we refuse only what cannot be passed safely: empty names,
/// NUL bytes, and names longer than Postgres keeps (63 bytes).
pub fn validate_identifier(what: &'static str, value: &str) -> Result<(), InvalidInput> {
    let invalid = |reason| InvalidInput::Identifier {
        what,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.contains('\0') {
        return Err(invalid("must not contain a NUL byte"));
    }
    if value.len() > 63 {
        return Err(invalid(
            "longer than 63 bytes, which Postgres would truncate",
        ));
    }
    Ok(())
}

/// Checks an instance password before it is stored: the worker writes it
/// into a libpq password file, one entry per line, so a line break would
/// cut it (and start a bogus entry); a NUL cannot reach libpq at all.
pub fn validate_password(password: &str) -> Result<(), InvalidInput> {
    if password.contains(['\n', '\r']) {
        return Err(InvalidInput::Other(
            "the password contains a line break, which a libpq password file cannot hold"
                .to_string(),
        ));
    }
    if password.contains('\0') {
        return Err(InvalidInput::Other(
            "the password contains a NUL byte".to_string(),
        ));
    }
    Ok(())
}

/// libpq's `sslmode` values, weakest first (docs/configuration.md, "TLS to
/// the database servers").
pub const SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// Checks an instance's `sslmode`.
pub fn validate_sslmode(mode: &str) -> Result<(), InvalidInput> {
    if SSL_MODES.contains(&mode) {
        Ok(())
    } else {
        Err(InvalidInput::Other(format!(
            "sslmode {} is not one of {}",
            quoted(mode),
            SSL_MODES.join(", ")
        )))
    }
}

/// The `sslmode` an instance gets when none is given: `prefer` for a Unix
/// socket or a loopback address (nobody sits between), `require` for any
/// other host, so that a man in the middle cannot downgrade the connection
/// to cleartext and read the password.
pub fn default_sslmode(host: &str) -> &'static str {
    let local = host.is_empty()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    if local { "prefer" } else { "require" }
}

/// A worker name: 1-128 characters of letters, digits, `.`, `-` and `_`
/// (host names fit), since it will also be the certificate's name.
pub fn validate_worker_name(name: &str) -> Result<(), InvalidInput> {
    simple_name("worker name", name)
}

/// 1-128 ASCII letters, digits, `.`, `-` and `_`.
fn simple_name(what: &'static str, name: &str) -> Result<(), InvalidInput> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::Identifier {
            what,
            value: name.to_string(),
            reason: "use 1-128 letters, digits, '.', '-' or '_'",
        })
    }
}

/// An operator token's name: 1-128 letters, digits, `.`, `-` and `_` (it
/// is the actor of every audit row the token leaves).
pub fn validate_token_name(name: &str) -> Result<(), InvalidInput> {
    simple_name("token name", name)
}

/// An instance's backup window in whole hours of the worker's time zone:
/// dumps of discovered jobs start at a minute in `[start:00, end:00)`. It
/// wraps past midnight when `end < start` (22-4 is 22:00 to 03:59);
/// `start == end` is the whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupWindow {
    start: u32,
    end: u32,
}

impl BackupWindow {
    /// 02:00 to 06:00, as in the original pgsnapman.
    pub const DEFAULT: BackupWindow = BackupWindow { start: 2, end: 6 };

    /// Both hours must be 0-23.
    pub fn new(start: u32, end: u32) -> Result<Self, InvalidInput> {
        for (what, hour) in [("start", start), ("end", end)] {
            if hour > 23 {
                return Err(InvalidInput::Other(format!(
                    "backup window {what} hour {hour} is not 0-23"
                )));
            }
        }
        Ok(Self { start, end })
    }

    pub fn start(self) -> u32 {
        self.start
    }

    pub fn end(self) -> u32 {
        self.end
    }

    /// Minutes in the window: 60 to 1440.
    pub fn minutes(self) -> u32 {
        match (self.end + 24 - self.start) % 24 {
            0 => 24 * 60,
            hours => hours * 60,
        }
    }

    /// The `slot`-th minute of the window (modulo its length) as (hour, minute).
    pub fn minute_at(self, slot: u32) -> (u32, u32) {
        let total = self.start * 60 + slot % self.minutes();
        ((total / 60) % 24, total % 60)
    }

    /// True if `hour:minute` lies inside the window.
    pub fn contains(self, hour: u32, minute: u32) -> bool {
        if hour > 23 || minute > 59 {
            return false;
        }
        let from_start = (hour * 60 + minute + 24 * 60 - self.start * 60) % (24 * 60);
        from_start < self.minutes()
    }
}

impl FromStr for BackupWindow {
    type Err = InvalidInput;

    /// `START-END` in hours, e.g. `2-6` or `22-4`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            InvalidInput::Other(format!(
                "backup window {}: write START-END in hours 0-23, e.g. 2-6 or 22-4",
                quoted(s)
            ))
        };
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let start = a.trim().parse().map_err(|_| bad())?;
        let end = b.trim().parse().map_err(|_| bad())?;
        Self::new(start, end)
    }
}

impl std::fmt::Display for BackupWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl TaskState {
    /// SUCCEEDED, FAILED or CANCELLED: the task will not change again.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl DumpType {
    /// True for types dumped with pg_dumpall, which need no database.
    pub fn is_cluster_wide(self) -> bool {
        matches!(
            self,
            DumpType::Cluster | DumpType::ClusterSchema | DumpType::Globals
        )
    }

    /// The format used when a job does not choose one.
    pub fn default_format(self) -> DumpFormat {
        if self.is_cluster_wide() {
            DumpFormat::Plain
        } else {
            DumpFormat::Custom
        }
    }

    /// Upper-case name as in the catalog (FULL, SCHEMA, …).
    pub fn label(self) -> &'static str {
        match self {
            DumpType::Unspecified => "UNSPECIFIED",
            DumpType::Full => "FULL",
            DumpType::Schema => "SCHEMA",
            DumpType::Cluster => "CLUSTER",
            DumpType::ClusterSchema => "CLUSTER_SCHEMA",
            DumpType::Globals => "GLOBALS",
            DumpType::Script => "SCRIPT",
        }
    }

    pub fn from_label(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "FULL" => DumpType::Full,
            "SCHEMA" => DumpType::Schema,
            "CLUSTER" => DumpType::Cluster,
            "CLUSTER_SCHEMA" => DumpType::ClusterSchema,
            "GLOBALS" => DumpType::Globals,
            "SCRIPT" => DumpType::Script,
            _ => return None,
        })
    }
}

impl DumpFormat {
    pub fn label(self) -> &'static str {
        match self {
            DumpFormat::Unspecified => "UNSPECIFIED",
            DumpFormat::Custom => "CUSTOM",
            DumpFormat::Directory => "DIRECTORY",
            DumpFormat::Plain => "PLAIN",
        }
    }

    pub fn from_label(s: &str) -> Option<Self> {
        Some(match s.to_ascii_uppercase().as_str() {
            "CUSTOM" => DumpFormat::Custom,
            "DIRECTORY" => DumpFormat::Directory,
            "PLAIN" => DumpFormat::Plain,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn only_succeeded_failed_and_cancelled_tasks_are_finished() {
        use TaskState as S;
        for (s, done) in [
            (S::Unspecified, false),
            (S::Queued, false),
            (S::Leased, false),
            (S::Succeeded, true),
            (S::Failed, true),
            (S::Cancelled, true),
        ] {
            assert_eq!(s.is_finished(), done, "{s:?}");
        }
    }

    #[test]
    fn cron_accepts_crontab_syntax_and_fires_at_minute_boundaries() {
        let c = CronExpr::parse("*/15  2 * * *").unwrap();
        assert_eq!(c.as_str(), "*/15 2 * * *");
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 2, 7, 30).unwrap();
        let next = c.next_after(&t).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 1, 1, 2, 15, 0).unwrap());
    }

    #[test]
    fn cron_sunday_is_zero_and_seven() {
        // 2026-01-04 is a Sunday.
        let sat = Utc.with_ymd_and_hms(2026, 1, 3, 12, 0, 0).unwrap();
        let want = Utc.with_ymd_and_hms(2026, 1, 4, 3, 0, 0).unwrap();
        for e in ["0 3 * * 0", "0 3 * * 7", "0 3 * * Sun"] {
            assert_eq!(
                CronExpr::parse(e).unwrap().next_after(&sat).unwrap(),
                want,
                "{e}"
            );
        }
        let weekdays = CronExpr::parse("30 1 * * 1-5").unwrap();
        assert_eq!(
            weekdays.next_after(&sat).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 5, 1, 30, 0).unwrap()
        );
    }

    #[test]
    fn cron_rejects_garbage_with_a_reason() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * 8",
            "hello world a b c",
            "0 0 31 2 *",
        ] {
            let err = CronExpr::parse(bad).unwrap_err();
            assert!(matches!(err, InvalidInput::Cron { .. }), "{bad}: {err}");
        }
        assert!(CronExpr::parse("@daily").is_ok());
    }

    #[test]
    fn dump_options_defeating_the_store_are_refused() {
        for bad in [
            "-Z9",
            "--compress=5",
            "-Fp",
            "--format=d",
            "-f/tmp/x",
            "--file=x",
            "-j4",
            "--password",
        ] {
            let err = validate_dump_options(&[bad.to_string()]).unwrap_err();
            assert!(matches!(err, InvalidInput::DumpOption { .. }), "{bad}");
        }
        validate_dump_options(&[
            "--no-comments".into(),
            "--exclude-table=audit.*".into(),
            "--lock-wait-timeout=30s".into(),
        ])
        .unwrap();
        assert!(validate_dump_options(&["value-without-dash".into()]).is_err());
    }

    #[test]
    fn backup_windows_parse_wrap_and_count_minutes() {
        let w: BackupWindow = "22-4".parse().unwrap();
        assert_eq!((w.start(), w.end(), w.minutes()), (22, 4, 360));
        assert_eq!(w.minute_at(0), (22, 0));
        assert_eq!(w.minute_at(119), (23, 59));
        assert_eq!(w.minute_at(120), (0, 0));
        assert_eq!(w.minute_at(359), (3, 59));
        assert_eq!(w.minute_at(360), (22, 0), "slots wrap around the window");
        assert!(w.contains(23, 30) && w.contains(0, 0) && w.contains(3, 59));
        assert!(!w.contains(4, 0) && !w.contains(21, 59) && !w.contains(12, 0));
        assert_eq!(w.to_string(), "22-4");
        assert_eq!(BackupWindow::DEFAULT.minutes(), 240);
        let day: BackupWindow = " 5 - 5 ".parse().unwrap();
        assert_eq!(day.minutes(), 1440);
        assert!(day.contains(4, 59) && day.contains(5, 0));
        for bad in ["", "2", "2-", "-6", "a-b", "24-4", "2-24", "2-6-8", "-1-3"] {
            assert!(bad.parse::<BackupWindow>().is_err(), "{bad:?}");
        }
        let err = BackupWindow::new(2, 30).unwrap_err().to_string();
        assert!(err.contains("30") && err.contains("0-23"), "{err}");
    }

    #[test]
    fn restore_options_that_the_restore_target_expresses_are_refused() {
        for bad in [
            "-C",
            "--clean",
            "-j2",
            "--no-owner",
            "-O",
            "--no-tablespaces",
            "--exit-on-error",
            "-1",
            "--dbname=x",
            "--role=admin",
        ] {
            let err = validate_restore_options(&[bad.to_string()]).unwrap_err();
            assert!(matches!(err, InvalidInput::RestoreOption { .. }), "{bad}");
            assert!(err.to_string().contains("pg_restore option"), "{err}");
        }
        validate_restore_options(&[
            "--disable-triggers".into(),
            "--no-comments".into(),
            "--exclude-schema=audit".into(),
            "--section=pre-data".into(),
        ])
        .unwrap();
        assert!(validate_restore_options(&["x".into()]).is_err());
    }

    #[test]
    fn errors_quote_at_most_a_hundred_characters_of_an_input() {
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(10_000);
        let q = quoted(&long);
        assert!(q.starts_with(&format!("\"{}", "é".repeat(100))), "{q}");
        assert!(q.ends_with("\"… (20000 bytes)"), "{q}");
        for err in [
            CronExpr::parse(&"1 ".repeat(5_000)).unwrap_err(),
            CronExpr::parse(&"x".repeat(10_000)).unwrap_err(),
            validate_identifier("database", &"d".repeat(10_000)).unwrap_err(),
            validate_dump_options(&["x".repeat(10_000)]).unwrap_err(),
            validate_restore_options(&["x".repeat(10_000)]).unwrap_err(),
            validate_sslmode(&"x".repeat(10_000)).unwrap_err(),
            "1-".repeat(5_000).parse::<BackupWindow>().unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(text.len() < 300 && !text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn passwords_with_line_breaks_are_refused() {
        assert!(validate_password("s3cr:et \\ ok").is_ok());
        for bad in ["a\nb", "a\rb", "a\r\n", "\nx", "a\0b"] {
            assert!(validate_password(bad).is_err(), "{bad:?}");
        }
        assert!(
            validate_password("a\nb")
                .unwrap_err()
                .to_string()
                .contains("line break")
        );
    }

    #[test]
    fn sslmodes_are_checked_and_default_by_host() {
        for m in SSL_MODES {
            assert!(validate_sslmode(m).is_ok());
        }
        assert!(validate_sslmode("verify_full").is_err());
        assert!(validate_sslmode("").is_err());
        assert_eq!(default_sslmode("/var/run/postgresql"), "prefer");
        assert_eq!(default_sslmode("localhost"), "prefer");
        assert_eq!(default_sslmode("127.0.0.1"), "prefer");
        assert_eq!(default_sslmode("::1"), "prefer");
        assert_eq!(default_sslmode("db.example.com"), "require");
        assert_eq!(default_sslmode("10.0.0.5"), "require");
    }

    #[test]
    fn identifiers_allow_odd_names_but_not_nul_or_overlong() {
        validate_identifier("database", "My \"odd\" db.name ünï").unwrap();
        assert!(validate_identifier("database", "").is_err());
        assert!(validate_identifier("database", "a\0b").is_err());
        assert!(validate_identifier("database", &"x".repeat(64)).is_err());
        validate_worker_name("worker-1.example.com").unwrap();
        assert!(validate_worker_name("bad name").is_err());
    }
}
