//! How the worker tells libpq clients where to connect: a conninfo string
//! without any secret, and a private password file for the password. Pure
//! string building; writing the password file is in `PassFile`.
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use pgsnapman_proto::v1::InstanceConnection;
use tokio::process::Command;

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
    let sslmode = if instance.sslmode.is_empty() {
        "prefer"
    } else {
        &instance.sslmode
    };
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
pub fn client_command(program: impl AsRef<std::ffi::OsStr>, passfile: Option<&Path>) -> Command {
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
    pub fn create(dir: &Path, instance: &InstanceConnection) -> Result<Self> {
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
            sslmode: String::new(),
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
}
