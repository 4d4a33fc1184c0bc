//! How the worker talks to one Postgres instance: a conninfo string without
//! any secret, a private password file for the (opened) password
//! (`PassFile`, the only place one is written), and `Session`, which runs
//! SQL there with psql and builds the other client programs' commands.
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::v1::InstanceConnection;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::process::{self, Outcome, StdoutTo};
use crate::error::{self, ClientError, ServerTimeout};

/// Quotes a libpq conninfo value: single quotes, with `\` and `'` escaped by
/// a backslash, so any value is taken literally.
pub fn quote_conninfo_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The port, user and sslmode an instance connects with (5432, postgres
/// and prefer when unset).
pub fn port_user_sslmode(instance: &InstanceConnection) -> (u32, &str, &str) {
    let port = if instance.port == 0 {
        5432
    } else {
        instance.port
    };
    let user = if instance.user.is_empty() {
        "postgres"
    } else {
        &instance.user
    };
    let sslmode = if instance.sslmode.is_empty() {
        "prefer"
    } else {
        &instance.sslmode
    };
    (port, user, sslmode)
}

/// A conninfo string for `--dbname`. Never contains the password.
pub fn conninfo(
    instance: &InstanceConnection,
    database: &str,
    connect_timeout: Duration,
    application_name: &str,
) -> String {
    let (port, user, sslmode) = port_user_sslmode(instance);
    let pairs: [(&str, String); 7] = [
        ("host", instance.host.clone()),
        ("port", port.to_string()),
        ("user", user.to_string()),
        ("dbname", database.to_string()),
        (
            "connect_timeout",
            connect_timeout.as_secs().max(1).to_string(),
        ),
        ("application_name", application_name.to_string()),
        ("sslmode", sslmode.to_string()),
    ];
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", quote_conninfo_value(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Escapes one field of a `.pgpass` line (`\` and `:` get a backslash).
pub fn escape_passfile_field(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '\\' || c == ':' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The one line of a password file for this instance:
/// `host:port:*:user:password`. A Unix socket directory as host is written as
/// `*`, since libpq may match such a connection as `localhost`.
pub fn passfile_line(instance: &InstanceConnection, password: &str) -> Zeroizing<String> {
    let host = if instance.host.starts_with('/') || instance.host.is_empty() {
        "*".to_string()
    } else {
        escape_passfile_field(&instance.host)
    };
    let port = if instance.port == 0 {
        5432
    } else {
        instance.port
    };
    let user = if instance.user.is_empty() {
        "postgres"
    } else {
        &instance.user
    };
    let password = Zeroizing::new(escape_passfile_field(password));
    Zeroizing::new(format!(
        "{host}:{port}:*:{}:{}\n",
        escape_passfile_field(user),
        *password
    ))
}

/// A `--schema` pattern that matches exactly `schema`: double-quoted with
/// inner quotes doubled, so `.`, `*` and `?` are literal.
pub fn schema_pattern(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// A client program's command with the password coming only from
/// `passfile` (if any; else the worker's own `~/.pgpass`): `PGPASSWORD` is
/// removed from its environment.
fn client_command(program: impl AsRef<OsStr>, passfile: Option<&Path>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("PGPASSWORD");
    if let Some(p) = passfile {
        cmd.env("PGPASSFILE", p);
    }
    cmd
}

/// `synchronous_commit = off` for the session of a client program that
/// fills a database no one relies on before a later synchronous commit:
/// a restore's temporary database (the swap's commit flushes the WAL up to
/// itself, so every commit before it too) or a verification's scratch
/// database (dropped). Each of pg_restore's statements commits on its own;
/// without the flush wait per commit, a database of thousands of objects
/// restores far faster on a server with fsync on (docs/worker.md,
/// "Asynchronous commits"). Appended to the worker's own `PGOPTIONS`.
pub fn commit_async(cmd: &mut Command) {
    let options = pgoptions_with(std::env::var_os("PGOPTIONS"), ASYNC_COMMIT);
    cmd.env("PGOPTIONS", options);
}

/// The setting `commit_async` adds.
const ASYNC_COMMIT: &str = "-c synchronous_commit=off";

/// `inherited` (a `PGOPTIONS` value, if any) with `option` after it.
fn pgoptions_with(inherited: Option<std::ffi::OsString>, option: &str) -> std::ffi::OsString {
    let mut options = inherited.unwrap_or_default();
    if !options.is_empty() {
        options.push(" ");
    }
    options.push(option);
    options
}

/// A temporary password file (mode 0600) removed when dropped.
pub struct PassFile {
    file: tempfile::NamedTempFile,
}

impl PassFile {
    /// Writes the instance's password line into a new file under `dir`.
    /// Fails (without quoting the password) when a field holds a line
    /// break: a password file has one entry per line and no escape for it.
    pub fn create(dir: &Path, instance: &InstanceConnection, password: &str) -> Result<Self> {
        let breaks = |s: &str| s.contains(['\n', '\r']);
        if breaks(password) {
            bail!(
                "the password of instance {} contains a line break, which a password file \
                 cannot hold: set a password without one",
                instance.instance_id
            );
        }
        if breaks(&instance.user) || breaks(&instance.host) {
            bail!(
                "the user or host of instance {} contains a line break, which a password file \
                 cannot hold",
                instance.instance_id
            );
        }
        // tempfile creates the file with mode 0600.
        let mut file = tempfile::Builder::new()
            .prefix("pgpass-")
            .tempfile_in(dir)
            .with_context(|| format!("create password file in {}", dir.display()))?;
        file.write_all(passfile_line(instance, password).as_bytes())
            .context("write password file")?;
        file.flush().context("write password file")?;
        Ok(Self { file })
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// What every session of the worker shares (from the configuration).
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// libpq `connect_timeout`.
    pub connect_timeout: Duration,
    /// Time between SIGTERM and SIGKILL for a cancelled psql.
    pub kill_grace: Duration,
    /// Most bytes of output one run may return (more is an error).
    pub max_output: u64,
    /// `statement_timeout` and `lock_timeout` of every run (zero: none).
    pub statement_timeout: Duration,
    pub lock_timeout: Duration,
}

impl SessionSettings {
    /// `PGOPTIONS` giving a session the timeouts.
    fn pgoptions(&self) -> String {
        format!(
            "-c statement_timeout={} -c lock_timeout={}",
            self.statement_timeout.as_millis(),
            self.lock_timeout.as_millis()
        )
    }

    /// psql's failure with error `text`: a `Timeout` naming the setting
    /// when a timeout of these settings cancelled the statement.
    fn failure(&self, status: std::process::ExitStatus, text: String) -> ClientError {
        let (setting, value) = match ServerTimeout::in_text(&text) {
            Some(ServerTimeout::Statement) => (error::STATEMENT_TIMEOUT, self.statement_timeout),
            Some(ServerTimeout::Lock) => (error::LOCK_TIMEOUT, self.lock_timeout),
            None if text.is_empty() => {
                let text = format!("psql exited with {status} without an error message");
                return ClientError::exited("psql", status, text);
            }
            None => return ClientError::exited("psql", status, text),
        };
        ClientError::Timeout {
            setting,
            value,
            text,
        }
    }
}

/// The worker's way into one instance as one application name: owns the
/// password file (removed when the session is dropped), builds conninfo
/// strings and client commands, and runs SQL with psql. Each `run` is one
/// psql process; nothing is kept open between runs.
pub struct Session {
    psql: PathBuf,
    /// The instance without its password (that is in `passfile`).
    instance: InstanceConnection,
    app_name: String,
    passfile: Option<PassFile>,
    /// Where a script too long for psql's command line is written.
    tmp_dir: PathBuf,
    settings: SessionSettings,
}

/// Statements longer than this in all go to psql through a private script
/// file instead of `-c` arguments: Linux limits one argument to 128 KiB and
/// all of them to about 2 MiB (a 1 MB database comment, a TRUNCATE of
/// 10,000 tables).
const MAX_ARGV_SQL_BYTES: usize = 64 * 1024;

/// A script file for psql (mode 0600, removed when dropped): each statement
/// is followed by a line holding only `;`, so a trailing `--` comment cannot
/// swallow the terminator.
fn script_file(dir: &Path, statements: &[&str]) -> Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix("psql-")
        .suffix(".sql")
        .tempfile_in(dir)
        .with_context(|| format!("create a psql script in {}", dir.display()))?;
    for sql in statements {
        file.write_all(sql.as_bytes())
            .and_then(|()| file.write_all(b"\n;\n"))
            .context("write a psql script")?;
    }
    file.flush().context("write a psql script")?;
    Ok(file)
}

impl Session {
    /// A session on `instance` through `psql`; `password` (if any) goes
    /// into a new password file under `tmp_dir`.
    pub fn open(
        psql: PathBuf,
        instance: &InstanceConnection,
        password: Option<&str>,
        app_name: &str,
        tmp_dir: &Path,
        settings: SessionSettings,
    ) -> Result<Self> {
        let passfile = match password {
            Some(p) => Some(PassFile::create(tmp_dir, instance, p)?),
            None => None,
        };
        let mut instance = instance.clone();
        instance.password.clear();
        instance.sealed_password = None;
        Ok(Self {
            psql,
            instance,
            app_name: app_name.to_string(),
            passfile,
            tmp_dir: tmp_dir.to_path_buf(),
            settings,
        })
    }

    /// The instance (without its password).
    pub fn instance(&self) -> &InstanceConnection {
        &self.instance
    }

    pub fn app_name(&self) -> &str {
        &self.app_name
    }

    /// A conninfo string for `--dbname` (never with the password).
    pub fn conninfo(&self, database: &str) -> String {
        conninfo(
            &self.instance,
            database,
            self.settings.connect_timeout,
            &self.app_name,
        )
    }

    /// A client program's command that reads the password from this
    /// session's password file only.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        client_command(program, self.passfile.as_ref().map(PassFile::path))
    }

    /// Runs `statements` on `database` (each its own `-c`, in order,
    /// stopping at the first error); returns the trimmed unaligned output,
    /// `None` if `cancel` fired. A failure carries psql's error lines. The
    /// client encoding is the database's: names in shared catalogs
    /// (databases, roles) come back as their creator wrote them.
    pub async fn run(
        &self,
        database: &str,
        statements: &[&str],
        cancel: &CancellationToken,
    ) -> Result<Option<String>, ClientError> {
        Ok(
            match self.run_partial(database, statements, cancel).await? {
                None => None,
                Some((out, None)) => Some(out),
                Some((_, Some(failure))) => return Err(failure),
            },
        )
    }

    /// `run` that nothing cancels and that also returns, on a failure, the
    /// output of the statements before the failed one: `(output, failure)`.
    pub async fn run_uncancelled_partial(
        &self,
        database: &str,
        statements: &[&str],
    ) -> Result<(String, Option<ClientError>), ClientError> {
        self.run_partial(database, statements, &CancellationToken::new())
            .await?
            .ok_or_else(|| ClientError::Cancelled {
                program: "psql".into(),
            })
    }

    /// One psql process: `Err` when it could not run, else its output and
    /// (when it exited unsuccessfully) its failure.
    async fn run_partial(
        &self,
        database: &str,
        statements: &[&str],
        cancel: &CancellationToken,
    ) -> Result<Option<(String, Option<ClientError>)>, ClientError> {
        let mut cmd = self.command(&self.psql);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "--no-password",
            "-v",
            "ON_ERROR_STOP=1",
        ]);
        // Kept until psql has exited.
        let mut _script = None;
        if statements.iter().map(|s| s.len()).sum::<usize>() > MAX_ARGV_SQL_BYTES {
            let file = script_file(&self.tmp_dir, statements)?;
            cmd.arg("-f").arg(file.path());
            _script = Some(file);
        } else {
            for sql in statements {
                cmd.arg("-c").arg(sql);
            }
        }
        cmd.env("PGOPTIONS", self.settings.pgoptions());
        cmd.arg(format!("--dbname={}", self.conninfo(database)));
        let stdout = StdoutTo::Capture(self.settings.max_output);
        let started = std::time::Instant::now();
        let outcome = process::run(cmd, "psql", stdout, cancel, self.settings.kill_grace).await;
        // Where a restore's fixed costs go (docs/worker.md): one line per psql.
        tracing::debug!(
            app = %self.app_name,
            statements = statements.len(),
            ms = started.elapsed().as_millis() as u64,
            "psql session run"
        );
        match outcome? {
            Outcome::Cancelled => Ok(None),
            Outcome::Exited {
                status,
                stdout,
                stderr,
            } => {
                let out = String::from_utf8_lossy(&stdout).trim().to_string();
                let failure =
                    (!status.success()).then(|| self.settings.failure(status, stderr.error_text()));
                Ok(Some((out, failure)))
            }
        }
    }

    /// `run` that nothing cancels: cleanup that must finish even during
    /// shutdown (resuming replay, dropping what a failed restore created).
    pub async fn run_uncancelled(
        &self,
        database: &str,
        statements: &[&str],
    ) -> Result<String, ClientError> {
        self.run(database, statements, &CancellationToken::new())
            .await?
            .ok_or_else(|| ClientError::Cancelled {
                program: "psql".into(),
            })
    }

    /// `statements` in one transaction; `None` if cancelled.
    pub async fn transaction(
        &self,
        database: &str,
        statements: &[String],
        cancel: &CancellationToken,
    ) -> Result<Option<()>> {
        let mut all: Vec<&str> = vec!["BEGIN"];
        all.extend(statements.iter().map(String::as_str));
        all.push("COMMIT");
        Ok(self.run(database, &all, cancel).await?.map(|_| ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(host: &str, user: &str) -> InstanceConnection {
        InstanceConnection {
            instance_id: 1,
            name: "i".into(),
            host: host.into(),
            port: 5433,
            user: user.into(),
            maintenance_db: "postgres".into(),
            status: 1,
            ..Default::default()
        }
    }

    #[test]
    fn conninfo_values_are_quoted_literally() {
        assert_eq!(quote_conninfo_value("plain"), "'plain'");
        assert_eq!(quote_conninfo_value("a b"), "'a b'");
        assert_eq!(quote_conninfo_value("it's"), r"'it\'s'");
        assert_eq!(quote_conninfo_value(r"back\slash"), r"'back\\slash'");
        assert_eq!(quote_conninfo_value("db.name"), "'db.name'");
        assert_eq!(quote_conninfo_value("ünï \"x\""), "'ünï \"x\"'");
        assert_eq!(quote_conninfo_value(""), "''");
    }

    #[test]
    fn conninfo_has_every_key_and_no_password() {
        let i = inst("127.0.0.1", "postgres");
        let c = conninfo(
            &i,
            "My \"odd\" db.ünï 'x'",
            Duration::from_secs(10),
            "pgsnapman-dump-7",
        );
        assert_eq!(
            c,
            "host='127.0.0.1' port='5433' user='postgres' dbname='My \"odd\" db.ünï \\'x\\'' \
             connect_timeout='10' application_name='pgsnapman-dump-7' sslmode='prefer'"
        );
        assert!(!c.contains("s3cret"));
        let strict = InstanceConnection {
            sslmode: "verify-full".into(),
            ..i
        };
        let c = conninfo(&strict, "d", Duration::from_secs(10), "a");
        assert!(c.ends_with(" sslmode='verify-full'"), "{c}");
    }

    #[test]
    fn passfile_fields_are_escaped() {
        assert_eq!(escape_passfile_field(r"a:b\c"), r"a\:b\\c");
        let line = passfile_line(&inst("db.example", "us:er"), r"p:w\d'");
        assert_eq!(*line, "db.example:5433:*:us\\:er:p\\:w\\\\d'\n");
        let socket = passfile_line(&inst("/var/run/postgresql", "postgres"), "x");
        assert_eq!(*socket, "*:5433:*:postgres:x\n");
    }

    #[test]
    fn schema_patterns_are_literal() {
        assert_eq!(schema_pattern("public"), "\"public\"");
        assert_eq!(schema_pattern("Sch \"ema\".ü"), "\"Sch \"\"ema\"\".ü\"");
        assert_eq!(schema_pattern("a*b?"), "\"a*b?\"");
    }

    #[test]
    fn async_commit_keeps_the_inherited_pgoptions() {
        assert_eq!(pgoptions_with(None, ASYNC_COMMIT), ASYNC_COMMIT);
        assert_eq!(pgoptions_with(Some("".into()), ASYNC_COMMIT), ASYNC_COMMIT);
        assert_eq!(
            pgoptions_with(Some("-c work_mem=64MB".into()), ASYNC_COMMIT),
            "-c work_mem=64MB -c synchronous_commit=off"
        );
    }

    #[test]
    fn timeouts_go_into_pgoptions_and_errors_name_them() {
        let s = SessionSettings {
            connect_timeout: Duration::from_secs(10),
            kill_grace: Duration::from_secs(1),
            max_output: 1 << 20,
            statement_timeout: Duration::from_secs(300),
            lock_timeout: Duration::from_millis(1500),
        };
        assert_eq!(
            s.pgoptions(),
            "-c statement_timeout=300000 -c lock_timeout=1500"
        );
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(3 << 8);
        let lock = s.failure(
            status,
            "ERROR:  canceling statement due to lock timeout".into(),
        );
        assert!(
            matches!(
                lock,
                ClientError::Timeout {
                    setting: error::LOCK_TIMEOUT,
                    ..
                }
            ),
            "{lock:?}"
        );
        assert_eq!(
            lock.to_string(),
            "ERROR:  canceling statement due to lock timeout (the worker's postgres.lock_timeout = 1s 500ms)"
        );
        let statement = s.failure(
            status,
            "ERROR:  canceling statement due to statement timeout".into(),
        );
        assert!(
            statement
                .to_string()
                .ends_with("(the worker's postgres.statement_timeout = 5m)")
        );
        let other = s.failure(status, "ERROR:  other".into());
        assert!(matches!(other, ClientError::Exited { .. }), "{other:?}");
        assert_eq!(other.to_string(), "ERROR:  other");
        assert_eq!(
            s.failure(status, String::new()).to_string(),
            "psql exited with exit status: 3 without an error message"
        );
    }

    #[test]
    fn password_file_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let pf = PassFile::create(dir.path(), &inst("h", "u"), "pw").unwrap();
            let mode = std::fs::metadata(pf.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(
                std::fs::read_to_string(pf.path()).unwrap(),
                "h:5433:*:u:pw\n"
            );
            pf.path().to_path_buf()
        };
        assert!(!path.exists());
    }

    #[test]
    fn line_breaks_cannot_go_into_a_password_file() {
        let dir = tempfile::tempdir().unwrap();
        for pw in ["line\nbreak-secret", "cr\rbreak-secret", "\n"] {
            let err = PassFile::create(dir.path(), &inst("h", "u"), pw)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("contains a line break"), "{err}");
            assert!(!err.contains("secret") && !err.contains('\n'), "{err}");
        }
        assert!(PassFile::create(dir.path(), &inst("h", "u\nx"), "pw").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
