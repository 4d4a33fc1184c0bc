//! The embedded catalog: with no `catalog.url`, the coordinator creates a
//! Postgres cluster under `<data_dir>/catalog` on first start (initdb, SCRAM
//! password in `<data_dir>/catalog.password`, mode 0600), listens on a Unix
//! socket only, starts it with the coordinator and stops it on shutdown.
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use rand::Rng;
use rand::distributions::Alphanumeric;
use sqlx::postgres::PgConnectOptions;

use crate::config::CatalogConfig;

/// The catalog database inside the embedded cluster.
const DATABASE: &str = "pgsnapman";

pub struct EmbeddedCatalog {
    bin_dir: PathBuf,
    pgdata: PathBuf,
    socket_dir: PathBuf,
    password: String,
    run_as: Option<(u32, u32)>,
    started_by_us: bool,
}

impl EmbeddedCatalog {
    /// Creates the cluster if needed and starts it if it is not running.
    pub fn start(data_dir: &Path, cfg: &CatalogConfig) -> Result<Self> {
        let bin_dir = find_bin_dir(&cfg.pg_bin_dir)?;
        let data_dir = std::path::absolute(data_dir)
            .with_context(|| format!("resolve coordinator.data_dir {}", data_dir.display()))?;
        let password_file = data_dir.join("catalog.password");
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name(&cfg.embedded_os_user)
                .context("look up catalog.embedded_os_user")?
                .with_context(|| {
                    format!(
                        "running as root, the embedded catalog needs the OS user {:?} (catalog.embedded_os_user), which does not exist",
                        cfg.embedded_os_user
                    )
                })?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let root = match run_as {
            Some((uid, gid)) if !reachable(&data_dir, uid, gid) => {
                fallback_root(&data_dir, &cfg.embedded_fallback_dir, cfg, uid, gid)?
            }
            _ => data_dir.join("catalog"),
        };
        let pgdata = root.join("data");
        let socket_dir = root.join("run");
        std::fs::create_dir_all(&socket_dir)
            .with_context(|| format!("create {}", socket_dir.display()))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = run_as {
            chown(&root, Some(uid), Some(gid))?;
            chown(&socket_dir, Some(uid), Some(gid))?;
        }
        let mut me = Self {
            bin_dir,
            pgdata,
            socket_dir,
            password: String::new(),
            run_as,
            started_by_us: false,
        };
        if !me.pgdata.join("PG_VERSION").exists() {
            me.init(&root, &password_file)?;
        }
        me.password = std::fs::read_to_string(&password_file)
            .with_context(|| format!("read the catalog password {}", password_file.display()))?
            .trim()
            .to_string();
        if me.is_running() {
            tracing::info!(pgdata = %me.pgdata.display(), "embedded catalog already running; using it");
        } else {
            let log = root.join("postgres.log");
            me.pg_ctl(&["start", "-w", "-t", "120", "-l"], Some(&log))
                .context("start the embedded catalog cluster")?;
            me.started_by_us = true;
            tracing::info!(pgdata = %me.pgdata.display(), "embedded catalog started");
        }
        Ok(me)
    }

    fn init(&self, root: &Path, password_file: &Path) -> Result<()> {
        tracing::info!(pgdata = %self.pgdata.display(), "creating the embedded catalog cluster");
        let password: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        write_private(password_file, &format!("{password}\n"))?;
        // initdb reads the password from a file the cluster's OS user can read.
        let pwfile = root.join("initdb.pw");
        write_private(&pwfile, &format!("{password}\n"))?;
        if let Some((uid, gid)) = self.run_as {
            chown(&pwfile, Some(uid), Some(gid))?;
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.pgdata)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("run initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        if !out.status.success() {
            bail!(
                "initdb of the embedded catalog failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let socket = self.socket_dir.to_string_lossy().replace('\'', "''");
        let extra = format!(
            "\n# pgsnapman embedded catalog: Unix socket only\nlisten_addresses = ''\nunix_socket_directories = '{socket}'\n"
        );
        let conf = self.pgdata.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).context("read postgresql.conf")?;
        text.push_str(&extra);
        std::fs::write(&conf, text).context("write postgresql.conf")?;
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        // The cluster's OS user may not be able to enter our working
        // directory (root's 0700 home), and initdb and postgres chdir back.
        cmd.current_dir("/")
            .env_remove("PGDATA")
            .env("LC_ALL", "C.UTF-8");
        cmd
    }

    fn pg_ctl(&self, args: &[&str], log: Option<&Path>) -> Result<()> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.pgdata).args(args);
        if let Some(log) = log {
            cmd.arg(log);
        }
        let out = cmd.output().context("run pg_ctl")?;
        if !out.status.success() {
            bail!(
                "pg_ctl {} failed: {}{}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("-D")
            .arg(&self.pgdata)
            .arg("status")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Connection options for a database of the embedded cluster.
    fn options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(5432)
            .username("postgres")
            .password(&self.password)
            .database(database)
            .application_name("pgsnapman-coordinator")
    }

    /// Options for the catalog database, creating it on first use.
    pub async fn catalog_options(&self) -> Result<PgConnectOptions> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect_with(&self.options("postgres"))
            .await
            .context("connect to the embedded catalog cluster")?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(DATABASE)
                .fetch_optional(&mut conn)
                .await?;
        if exists.is_none() {
            sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
                .execute(&mut conn)
                .await
                .context("create the catalog database")?;
        }
        conn.close().await?;
        Ok(self.options(DATABASE))
    }

    /// Stops the cluster if this process started it.
    pub fn stop(&self) {
        if !self.started_by_us {
            return;
        }
        match self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"], None) {
            Ok(()) => tracing::info!("embedded catalog stopped"),
            Err(e) => tracing::error!("could not stop the embedded catalog: {e:#}"),
        }
    }
}

/// True when the OS user `uid`/`gid` (without supplementary groups, as the
/// cluster's processes run) can enter `dir`.
fn reachable(dir: &Path, uid: u32, gid: u32) -> bool {
    Command::new("test")
        .arg("-x")
        .arg(dir)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `<fallback>/catalog-<hash of data_dir>`, created for the cluster's OS user
/// (one per coordinator data directory, stable across restarts).
fn fallback_root(
    data_dir: &Path,
    fallback: &Path,
    cfg: &CatalogConfig,
    uid: u32,
    gid: u32,
) -> Result<PathBuf> {
    let fail = || {
        format!(
            "the embedded catalog's OS user {:?} can reach neither coordinator.data_dir {} nor catalog.embedded_fallback_dir {}; set coordinator.data_dir to a directory it can enter (e.g. under /var/lib)",
            cfg.embedded_os_user,
            data_dir.display(),
            fallback.display()
        )
    };
    if !fallback.exists() {
        std::fs::create_dir_all(fallback).with_context(fail)?;
        std::fs::set_permissions(fallback, std::fs::Permissions::from_mode(0o755))
            .with_context(fail)?;
    }
    if !reachable(fallback, uid, gid) {
        bail!("{}", fail());
    }
    let root = fallback.join(format!(
        "catalog-{:016x}",
        fnv1a(data_dir.as_os_str().as_encoded_bytes())
    ));
    tracing::info!(
        data_dir = %data_dir.display(),
        catalog = %root.display(),
        os_user = %cfg.embedded_os_user,
        "the data directory is not reachable by the catalog's OS user; the embedded cluster lives in the fallback directory"
    );
    Ok(root)
}

/// 64-bit FNV-1a: a stable name for a path (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// The configured directory, else the newest /usr/lib/postgresql/N/bin, else
/// the directory of `initdb` on PATH.
fn find_bin_dir(configured: &str) -> Result<PathBuf> {
    if !configured.is_empty() {
        let dir = PathBuf::from(configured);
        if !dir.join("initdb").exists() {
            bail!("catalog.pg_bin_dir {configured:?} has no initdb");
        }
        return Ok(dir);
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            let Ok(major) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let bin = e.path().join("bin");
            if bin.join("initdb").exists() && best.as_ref().is_none_or(|(m, _)| major > *m) {
                best = Some((major, bin));
            }
        }
    }
    if let Some((_, dir)) = best {
        return Ok(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() {
                return Ok(dir);
            }
        }
    }
    bail!(
        "no PostgreSQL server binaries (initdb) found for the embedded catalog; install PostgreSQL or set catalog.url"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_names_are_stable_and_distinct() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a(b"/root/a"), fnv1a(b"/root/b"));
    }
}
