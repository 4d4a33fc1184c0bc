//! `PgCluster`: a throwaway PostgreSQL cluster made with initdb/pg_ctl on a
//! free loopback port, stopped and deleted on drop. When the tests run as root
//! the server runs as the unprivileged `postgres` OS user (Postgres refuses
//! root).
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// How to set up a cluster.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub major: u32,
    /// When set, TCP connections need this password for role `postgres`
    /// (scram-sha-256); Unix-socket connections stay trusted for the harness.
    pub superuser_password: Option<String>,
    /// Extra `-c name=value` server settings.
    pub settings: Vec<(String, String)>,
}

impl PgOptions {
    pub fn new(major: u32) -> Self {
        Self {
            major,
            superuser_password: None,
            settings: Vec::new(),
        }
    }
}

pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
    pub bindir: PathBuf,
    pub options: PgOptions,
    owner: Option<(u32, u32)>,
    running: bool,
}

/// Directory of the server binaries of `major`:
/// `PGSNAPMAN_TEST_PG<major>_BINDIR` (set by deploy/pg-majors.sh for 16 and
/// 18), else `PG_BINDIR` when it holds that major, else
/// `/usr/lib/postgresql/<major>/bin`, else `pg_config --bindir` if it is that
/// major. Fails with install instructions; tests are never skipped.
pub fn server_bindir(major: u32) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(format!("PGSNAPMAN_TEST_PG{major}_BINDIR")) {
        let dir = PathBuf::from(dir);
        return match bindir_major(&dir) {
            Some(m) if m == major => Ok(dir),
            found => bail!(
                "PGSNAPMAN_TEST_PG{major}_BINDIR={} holds no PostgreSQL {major} (found {found:?}): \
                 run deploy/pg-majors.sh or fix the variable",
                dir.display()
            ),
        };
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Some(dir) = candidates
        .into_iter()
        .find(|d| d.join("initdb").exists() && bindir_major(d) == Some(major))
    {
        return Ok(dir);
    }
    let hint = if major == 16 || major == 18 {
        "source deploy/pg-majors.sh (it fetches them), or set PGSNAPMAN_TEST_PG{major}_BINDIR"
    } else {
        "install them (apt-get install postgresql-{major}) or set PG_BINDIR"
    };
    bail!(
        "PostgreSQL {major} server binaries (initdb, pg_ctl) not found: {}",
        hint.replace("{major}", &major.to_string())
    )
}

/// The major version of the `postgres` binary in `dir` (`None` when it does
/// not run or says nothing parsable).
pub fn bindir_major(dir: &Path) -> Option<u32> {
    let out = Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "postgres (PostgreSQL) 16.2" → 16; "… 15.18 (Debian 15.18-1)" → 15.
    let version = text
        .split_whitespace()
        .skip_while(|t| *t != "(PostgreSQL)")
        .nth(1)?;
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// uid/gid to run Postgres as: the `postgres` user when we are root.
fn server_owner() -> Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .context("look up OS user postgres")?
        .context("tests run as root, so PostgreSQL needs an unprivileged OS user `postgres`: create it (useradd --system postgres)")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(l.local_addr()?.port())
}

fn check(out: Output, what: &str) -> Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )
    }
}

impl PgCluster {
    /// Starts a trust-auth cluster of `major`.
    pub fn start(major: u32) -> Result<Self> {
        Self::start_with(PgOptions::new(major))
    }

    pub fn start_with(options: PgOptions) -> Result<Self> {
        let bindir = server_bindir(options.major)?;
        let owner = server_owner()?;
        let dir = crate::shared_tempdir("pgsnapman-pg-");
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(
                dir.path(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .context("chown cluster dir")?;
        }
        let mut cluster = Self {
            dir,
            port: 0,
            bindir,
            options,
            owner,
            running: false,
        };
        cluster.initdb()?;
        let mut last_err = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    cluster.running = true;
                    return Ok(cluster);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err
            .expect("at least one attempt")
            .context("start cluster"))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Directory of the Unix socket (trusted connections for the harness).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("pg.log")
    }

    fn server_cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C.UTF-8");
        cmd
    }

    fn initdb(&self) -> Result<()> {
        let mut cmd = self.server_cmd("initdb");
        cmd.arg("-D").arg(self.data_dir()).args([
            "--no-sync",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        match &self.options.superuser_password {
            Some(pw) => {
                let pwfile = self.dir.path().join("pwfile");
                std::fs::write(&pwfile, format!("{pw}\n"))?;
                if let Some((uid, gid)) = self.owner {
                    nix::unistd::chown(
                        &pwfile,
                        Some(nix::unistd::Uid::from_raw(uid)),
                        Some(nix::unistd::Gid::from_raw(gid)),
                    )?;
                }
                cmd.args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                    .arg(format!("--pwfile={}", pwfile.display()));
            }
            None => {
                cmd.arg("--auth=trust");
            }
        }
        check(cmd.stdin(Stdio::null()).output()?, "initdb")?;
        Ok(())
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.socket_dir().display()
        );
        for (k, v) in &self.options.settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let out = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "60", "-l"])
            .arg(self.log_path())
            .args(["-o", &opts, "start"])
            .stdin(Stdio::null())
            .output()?;
        check(out, "pg_ctl start")
            .map(|_| ())
            .map_err(|e| e.context(crate::logs::tail(&self.log_path(), 20)))
    }

    /// Stops the server (fast), keeping the files; `start_again` restarts it.
    pub fn stop(&mut self) -> Result<()> {
        if self.running {
            self.pg_ctl_stop("fast")?;
        }
        Ok(())
    }

    /// `pg_ctl stop -m <mode>`.
    fn pg_ctl_stop(&mut self, mode: &str) -> Result<()> {
        let out = self
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-m", mode, "stop"])
            .stdin(Stdio::null())
            .output()?;
        check(out, &format!("pg_ctl stop -m {mode}"))?;
        self.running = false;
        Ok(())
    }

    /// `pg_ctl restart -m immediate`: a crash and recovery, on the same port;
    /// every session is cut off mid-transaction.
    pub fn restart_immediate(&mut self) -> Result<()> {
        self.pg_ctl_stop("immediate")?;
        self.start_again()
    }

    /// A streaming standby of this cluster (pg_basebackup -R over the Unix
    /// socket), started on its own free port.
    pub fn start_standby(&self) -> Result<PgCluster> {
        let dir = crate::shared_tempdir("pgsnapman-standby-");
        if let Some((uid, gid)) = self.owner {
            nix::unistd::chown(
                dir.path(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .context("chown standby dir")?;
        }
        let mut standby = PgCluster {
            dir,
            port: 0,
            bindir: self.bindir.clone(),
            options: self.options.clone(),
            owner: self.owner,
            running: false,
        };
        let out = standby
            .server_cmd("pg_basebackup")
            .arg("-D")
            .arg(standby.data_dir())
            // A fast checkpoint: a spread one waits for checkpoint_timeout.
            .args(["-R", "-X", "stream", "-c", "fast", "-U", "postgres", "-h"])
            .arg(self.socket_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .output()?;
        check(out, "pg_basebackup")?;
        standby.port = free_port()?;
        standby.pg_ctl_start()?;
        standby.running = true;
        Ok(standby)
    }

    /// Starts a stopped cluster again on the same port.
    pub fn start_again(&mut self) -> Result<()> {
        self.pg_ctl_start()?;
        self.running = true;
        Ok(())
    }

    /// `SHOW server_version`, e.g. "15.18".
    pub fn server_version(&self) -> Result<String> {
        self.query("postgres", "SHOW server_version")
    }

    /// Connection URL for TCP connections as `postgres` (with the password if
    /// the cluster has one).
    pub fn url(&self, database: &str) -> String {
        let auth = match &self.options.superuser_password {
            Some(pw) => format!("postgres:{pw}"),
            None => "postgres".to_string(),
        };
        format!(
            "postgres://{auth}@127.0.0.1:{}/{}",
            self.port,
            urlencode(database)
        )
    }

    /// Runs SQL through psql over the Unix socket with ON_ERROR_STOP; returns
    /// unaligned, tuples-only output (trimmed).
    pub fn query(&self, database: &str, sql: &str) -> Result<String> {
        let out = self.psql_cmd(database).arg("-c").arg(sql).output()?;
        let out = check(out, &format!("psql {sql:?}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Runs a multi-statement SQL script through psql.
    pub fn script(&self, database: &str, sql: &str) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("script.sql");
        std::fs::write(&file, sql)?;
        let out = self.psql_cmd(database).arg("-f").arg(&file).output()?;
        check(out, "psql script")?;
        Ok(())
    }

    /// A psql command connected over the socket (trusted) as `postgres`.
    pub fn psql_cmd(&self, database: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join("psql"));
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
        ])
        .arg("-h")
        .arg(self.socket_dir())
        .arg("-p")
        .arg(self.port.to_string())
        .arg("-d")
        .arg(conninfo_dbname(database))
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
        cmd
    }

    /// Creates a database (any name) with `CREATE DATABASE`.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.query(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )
        .map(|_| ())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .server_cmd("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-m", "immediate", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Double-quotes an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A `dbname=` conninfo so that any database name is taken literally by libpq.
pub fn conninfo_dbname(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
