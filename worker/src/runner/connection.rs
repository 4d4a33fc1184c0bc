//! How the worker talks to one Postgres instance: a conninfo string without
//! any secret, a private password file for the password (`PassFile`, the
//! only place one is written), and `Session`, which runs SQL there with psql
//! (cancellable or not) and builds the other client programs' commands.
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::v1::InstanceConnection;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::process::{self, Outcome, StdoutTo};

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

/// A conninfo string for `--dbname`. Never contains the password.
pub fn conninfo(
    instance: &InstanceConnection,
    database: &str,
    connect_timeout: Duration,
    application_name: &str,
) -> String {
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
    let pairs: [(&str, String); 6] = [
        ("host", instance.host.clone()),
        ("port", port.to_string()),
        ("user", user.to_string()),
        ("dbname", database.to_string()),
        (
            "connect_timeout",
            connect_timeout.as_secs().max(1).to_string(),
        ),
        ("application_name", application_name.to_string()),
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
pub fn passfile_line(instance: &InstanceConnection) -> String {
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
    format!(
        "{host}:{port}:*:{}:{}\n",
        escape_passfile_field(user),
        escape_passfile_field(&instance.password)
    )
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

/// A temporary password file (mode 0600) removed when dropped.
pub struct PassFile {
    file: tempfile::NamedTempFile,
}

impl PassFile {
    /// Writes the instance's password line into a new file under `dir`.
    /// Fails (without quoting the password) when a field holds a line
    /// break: a password file has one entry per line and no escape for it.
    pub fn create(dir: &Path, instance: &InstanceConnection) -> Result<Self> {
        let breaks = |s: &str| s.contains(['\n', '\r']);
        if breaks(&instance.password) {
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
        file.write_all(passfile_line(instance).as_bytes())
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

    /// psql's error `text`, with the setting behind a timeout named.
    fn explain(&self, text: String) -> String {
        let setting = if text.contains("canceling statement due to statement timeout") {
            ("postgres.statement_timeout", self.statement_timeout)
        } else if text.contains("canceling statement due to lock timeout") {
            ("postgres.lock_timeout", self.lock_timeout)
        } else {
            return text;
        };
        format!(
            "{text} (the worker's {} = {})",
            setting.0,
            humantime::format_duration(setting.1)
        )
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
    settings: SessionSettings,
}

impl Session {
    /// A session on `instance` through `psql`; the password (if any) goes
    /// into a new password file under `tmp_dir`.
    pub fn open(
        psql: PathBuf,
        instance: &InstanceConnection,
        app_name: &str,
        tmp_dir: &Path,
        settings: SessionSettings,
    ) -> Result<Self> {
        let passfile = if instance.password.is_empty() {
            None
        } else {
            Some(PassFile::create(tmp_dir, instance)?)
        };
        let mut instance = instance.clone();
        instance.password.clear();
        Ok(Self {
            psql,
            instance,
            app_name: app_name.to_string(),
            passfile,
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
    ) -> Result<Option<String>> {
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
        for sql in statements {
            cmd.arg("-c").arg(sql);
        }
        cmd.env("PGOPTIONS", self.settings.pgoptions());
        cmd.arg(format!("--dbname={}", self.conninfo(database)));
        let stdout = StdoutTo::Capture(self.settings.max_output);
        match process::run(cmd, "psql", stdout, cancel, self.settings.kill_grace).await? {
            Outcome::Cancelled => Ok(None),
            Outcome::Exited {
                status,
                stdout,
                stderr,
            } => {
                if !status.success() {
                    let text = stderr.error_text();
                    if text.is_empty() {
                        bail!("psql exited with {status} without an error message");
                    }
                    bail!("{}", self.settings.explain(text));
                }
                Ok(Some(String::from_utf8_lossy(&stdout).trim().to_string()))
            }
        }
    }

    /// `run` that nothing cancels: cleanup that must finish even during
    /// shutdown (resuming replay, dropping what a failed restore created).
    pub async fn run_uncancelled(&self, database: &str, statements: &[&str]) -> Result<String> {
        match self
            .run(database, statements, &CancellationToken::new())
            .await?
        {
            Some(out) => Ok(out),
            None => bail!("psql was cancelled"),
        }
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

    fn inst(host: &str, user: &str, password: &str) -> InstanceConnection {
        InstanceConnection {
            instance_id: 1,
            name: "i".into(),
            host: host.into(),
            port: 5433,
            user: user.into(),
            password: password.into(),
            maintenance_db: "postgres".into(),
            status: 1,
            discover: false,
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
        let i = inst("127.0.0.1", "postgres", "s3cret");
        let c = conninfo(
            &i,
            "My \"odd\" db.ünï 'x'",
            Duration::from_secs(10),
            "pgsnapman-dump-7",
        );
        assert_eq!(
            c,
            "host='127.0.0.1' port='5433' user='postgres' dbname='My \"odd\" db.ünï \\'x\\'' \
             connect_timeout='10' application_name='pgsnapman-dump-7'"
        );
        assert!(!c.contains("s3cret"));
    }

    #[test]
    fn passfile_fields_are_escaped() {
        assert_eq!(escape_passfile_field(r"a:b\c"), r"a\:b\\c");
        let line = passfile_line(&inst("db.example", "us:er", r"p:w\d'"));
        assert_eq!(line, "db.example:5433:*:us\\:er:p\\:w\\\\d'\n");
        let socket = passfile_line(&inst("/var/run/postgresql", "postgres", "x"));
        assert_eq!(socket, "*:5433:*:postgres:x\n");
    }

    #[test]
    fn schema_patterns_are_literal() {
        assert_eq!(schema_pattern("public"), "\"public\"");
        assert_eq!(schema_pattern("Sch \"ema\".ü"), "\"Sch \"\"ema\"\".ü\"");
        assert_eq!(schema_pattern("a*b?"), "\"a*b?\"");
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
        assert_eq!(
            s.explain("ERROR:  canceling statement due to lock timeout".into()),
            "ERROR:  canceling statement due to lock timeout (the worker's postgres.lock_timeout = 1s 500ms)"
        );
        assert!(
            s.explain("ERROR:  canceling statement due to statement timeout".into())
                .ends_with("(the worker's postgres.statement_timeout = 5m)")
        );
        assert_eq!(s.explain("ERROR:  other".into()), "ERROR:  other");
    }

    #[test]
    fn password_file_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let pf = PassFile::create(dir.path(), &inst("h", "u", "pw")).unwrap();
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
            let err = PassFile::create(dir.path(), &inst("h", "u", pw))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("contains a line break"), "{err}");
            assert!(!err.contains("secret") && !err.contains('\n'), "{err}");
        }
        assert!(PassFile::create(dir.path(), &inst("h", "u\nx", "pw")).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
