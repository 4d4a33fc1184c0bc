//! Instance passwords of a standalone worker: from the environment
//! (`PGSNAPMAN_PASSWORD_<INSTANCE>`), else from a password file in libpq's
//! pgpass format that must be mode 0600. Never from the jobs file; never
//! logged or echoed in an error.
use std::path::Path;

use anyhow::{Result, anyhow};
use pgsnapman_proto::v1::InstanceConnection;

/// Largest password file read.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

pub use pgsnapman_proto::jobs_file::password_env as env_name;

/// The lines of a pgpass file (`host:port:database:user:password`, `*`
/// matches anything, `\:` and `\\` escape).
#[derive(Default)]
pub struct PasswordFile {
    entries: Vec<[String; 5]>,
}

impl std::fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordFile")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl PasswordFile {
    /// Reads `path`, refusing it when group or others may read it.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = pgsnapman_proto::secret_file::read_private(path)
            .map_err(|e| anyhow!("password file: {e}"))?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(anyhow!(
                "password file {} is larger than {MAX_FILE_BYTES} bytes",
                path.display()
            ));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow!("password file {} is not UTF-8", path.display()))?;
        Self::parse(&text).map_err(|line| {
            anyhow!(
                "password file {}:{line}: not host:port:database:user:password",
                path.display()
            )
        })
    }

    /// Parses pgpass text; `Err(line)` names a malformed line (its text is
    /// never shown: it holds a password).
    pub fn parse(text: &str) -> std::result::Result<Self, usize> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split(line);
            let Ok(fields) = <[String; 5]>::try_from(fields) else {
                return Err(n + 1);
            };
            entries.push(fields);
        }
        Ok(Self { entries })
    }

    /// The password of the first line matching `i` (maintenance database),
    /// as libpq picks it.
    pub fn lookup(&self, i: &InstanceConnection) -> Option<&str> {
        let port = i.port.to_string();
        let want = [i.host.as_str(), &port, &i.maintenance_db, &i.user];
        self.entries
            .iter()
            .find(|e| {
                e.iter()
                    .zip(want)
                    .all(|(have, want)| have == "*" || have == want)
            })
            .map(|e| e[4].as_str())
    }
}

/// Splits one pgpass line at unescaped colons.
fn split(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(last)) = (chars.next(), out.last_mut()) {
                    last.push(next);
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// Instance `i`'s password: the environment first, then `file`; empty when
/// neither has one (libpq's own ~/.pgpass or PGPASSWORD then apply).
pub fn password_of(i: &InstanceConnection, file: Option<&PasswordFile>) -> Result<String> {
    if let Some(v) = std::env::var_os(env_name(&i.name)) {
        let p = v
            .into_string()
            .map_err(|_| anyhow!("{} is not UTF-8", env_name(&i.name)))?;
        pgsnapman_proto::model::validate_password(&p)
            .map_err(|e| anyhow!("{}: {e}", env_name(&i.name)))?;
        return Ok(p);
    }
    Ok(file
        .and_then(|f| f.lookup(i))
        .map(str::to_string)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst() -> InstanceConnection {
        InstanceConnection {
            name: "main-db".into(),
            host: "db1".into(),
            port: 5433,
            user: "backup".into(),
            maintenance_db: "postgres".into(),
            ..Default::default()
        }
    }

    #[test]
    fn pgpass_lines_match_like_libpq() {
        let f = PasswordFile::parse(
            "# comment\nother:5433:*:backup:no\ndb1:5433:*:backup:p\\:w\\\\d\n*:*:*:*:fallback\n",
        )
        .unwrap();
        assert_eq!(f.lookup(&inst()), Some("p:w\\d"));
        let mut i = inst();
        i.host = "elsewhere".into();
        assert_eq!(f.lookup(&i), Some("fallback"));
        // A malformed line is named by number, never shown.
        assert_eq!(PasswordFile::parse("a:b:c\n").unwrap_err(), 1);
    }

    #[test]
    fn env_names_are_upper_case_with_underscores() {
        assert_eq!(env_name("main-db.1"), "PGSNAPMAN_PASSWORD_MAIN_DB_1");
    }

    #[test]
    fn an_open_password_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = format!("{:#}", PasswordFile::load(&path).unwrap_err());
        assert!(err.contains("pgpass"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            PasswordFile::load(&path).unwrap().lookup(&inst()),
            Some("secret")
        );
    }
}
