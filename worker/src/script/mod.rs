//! SCRIPT dumps (docs/scripts.md): the opt-in (`[scripts] enabled`), the
//! private scratch directory with the script and its password file, the
//! script's environment and command, its bounded stderr lines. Storing its
//! output is the runner's (the same ingest as pg_dump's). Restore scripts
//! are in `restore`.
pub mod restore;

use std::ffi::OsString;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::script::{content_hash, validate_arguments, validate_content, validate_name};
use pgsnapman_proto::v1::{DumpFinished, DumpFormat, DumpSpec, InstanceConnection, ScriptSource};
use serde::{Deserialize, Serialize};
use tokio::process::Command;

use crate::runner::connection::PassFile;
use crate::runner::ingest::Ended;
use crate::runner::process::LineObserver;

/// Stderr lines of one run kept as messages; later lines are counted only.
pub const MAX_MESSAGE_LINES: usize = 200;
/// Longest stderr line kept as a message (longer ones are cut).
pub const MAX_LINE_BYTES: usize = 1024;

/// `[scripts]` of the worker's own configuration. A coordinator cannot
/// change it: only this file (or the worker's environment) enables scripts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ScriptsConfig {
    /// Run SCRIPT jobs at all (default false: they fail, saying so).
    pub enabled: bool,
    /// A script still running after this long is killed (its whole process
    /// group) and the dump fails; `dump.max_run_time` applies as well.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            timeout: Duration::from_secs(6 * 3600),
        }
    }
}

/// Checks that this worker runs scripts and that the spec's script is
/// whole (name, size, content hash); returns it.
pub fn check<'a>(
    config: &ScriptsConfig,
    worker: &str,
    spec: &'a DumpSpec,
) -> Result<&'a ScriptSource> {
    let script = check_source(
        config,
        worker,
        spec.script.as_ref(),
        &format!("job {} is a SCRIPT job", spec.job_id),
    )?;
    validate_arguments(&spec.extra_options)?;
    Ok(script)
}

/// Checks that this worker runs scripts and that `script` arrived whole
/// (name, size, content hash); `what` names the work that needs it.
pub fn check_source<'a>(
    config: &ScriptsConfig,
    worker: &str,
    script: Option<&'a ScriptSource>,
    what: &str,
) -> Result<&'a ScriptSource> {
    if !config.enabled {
        bail!(
            "scripts are disabled on worker {worker}: set scripts.enabled = true in its config \
             (docs/scripts.md)"
        );
    }
    let Some(script) = script else {
        bail!(
            "{what} but its script did not arrive (a schedule or coordinator older than this \
             worker?)"
        );
    };
    validate_name(&script.name)?;
    validate_content(&script.name, &script.content)?;
    let hash = content_hash(&script.content);
    if hash != script.hash {
        bail!(
            "script {:?} does not match its hash (expected {}, found {hash}): not run",
            script.name,
            script.hash
        );
    }
    Ok(script)
}

/// The lower-case format name scripts see in `PGSNAPMAN_FORMAT`.
pub(crate) fn format_name(format: DumpFormat) -> &'static str {
    match format {
        DumpFormat::Directory => "directory",
        DumpFormat::Plain => "plain",
        _ => "custom",
    }
}

/// A script's private scratch directory (mode 0700 under the worker's
/// tmp directory): the script file, its password file, its working
/// directory. Removed when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
    script: PathBuf,
    passfile: Option<PassFile>,
}

impl Scratch {
    /// Writes the script (mode 0700) and, if the instance has a password,
    /// the password file (0600) into a new directory under `tmp_dir`.
    pub fn create(
        tmp_dir: &Path,
        script: &ScriptSource,
        instance: &InstanceConnection,
        password: Option<&str>,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("script-")
            .tempdir_in(tmp_dir)
            .with_context(|| format!("create a scratch directory in {}", tmp_dir.display()))?;
        // Private before anything is written into it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("make {} private", dir.path().display()))?;
        let path = dir.path().join(&script.name);
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o700)
                .open(&path)
                .with_context(|| format!("write the script to {}", path.display()))?;
            f.write_all(&script.content)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("write the script to {}", path.display()))?;
        }
        let passfile = match password {
            Some(p) => Some(PassFile::create(dir.path(), instance, p)?),
            None => None,
        };
        Ok(Self {
            dir,
            script: path,
            passfile,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// What the script's environment says about its run.
pub struct RunInfo<'a> {
    pub spec: &'a DumpSpec,
    pub instance: &'a InstanceConnection,
    pub database: &'a str,
    pub format: DumpFormat,
    pub dump_uuid: &'a str,
    pub task_id: i64,
    pub worker: &'a str,
    pub server_version: &'a str,
    /// The client binaries of the server's major.
    pub bin_dir: &'a Path,
    /// Where a directory-format script writes its files.
    pub output_dir: Option<&'a Path>,
    pub connect_timeout: Duration,
}

/// The script's command: its arguments are the job's extra options; its
/// environment is only what docs/scripts.md lists (the worker's own is
/// cleared: it may hold an enrollment token); cwd is the scratch
/// directory.
pub fn command(scratch: &Scratch, script: &ScriptSource, run: &RunInfo<'_>) -> Result<Command> {
    let mut env = base_environment(scratch, script, &run.base());
    env.extend(dump_environment(run));
    script_command(scratch, script, &run.spec.extra_options, env)
}

/// The command that runs `script` from `scratch` with `args` and exactly
/// the environment `env`.
pub(crate) fn script_command(
    scratch: &Scratch,
    script: &ScriptSource,
    args: &[String],
    env: Vec<(&'static str, OsString)>,
) -> Result<Command> {
    let (interpreter, arg) = interpreter_line(&script.content)?;
    // What the kernel would run for `#!`, run directly: executing the file
    // itself could fail with ETXTBSY while another thread's freshly forked
    // child still holds the descriptor it was written through.
    let mut cmd = Command::new(interpreter);
    cmd.args(arg)
        .arg(&scratch.script)
        .args(args)
        .current_dir(scratch.path())
        .env_clear()
        .envs(env);
    Ok(cmd)
}

/// The interpreter and its optional single argument of a script's `#!`
/// line, split as Linux does (at the first blank; the rest is one
/// argument).
fn interpreter_line(content: &[u8]) -> Result<(&str, Option<&str>)> {
    let line = content
        .strip_prefix(b"#!")
        .and_then(|rest| rest.split(|b| *b == b'\n').next())
        .and_then(|l| std::str::from_utf8(l).ok())
        .map(str::trim)
        .unwrap_or_default();
    let (interpreter, arg) = match line.split_once([' ', '\t']) {
        Some((i, a)) => (i, Some(a.trim()).filter(|a| !a.is_empty())),
        None => (line, None),
    };
    if !interpreter.starts_with('/') {
        bail!(
            "the script's #! line must name an absolute interpreter path (#!/bin/sh, \
             #!/usr/bin/env python3), not {:?}",
            pgsnapman_proto::model::excerpt(line)
        );
    }
    Ok((interpreter, arg))
}

/// What every script's environment says, dump or restore: the instance it
/// works on, the database, the client binaries, the worker.
pub(crate) struct BaseEnv<'a> {
    pub instance: &'a InstanceConnection,
    pub database: &'a str,
    pub worker: &'a str,
    pub bin_dir: &'a Path,
    pub connect_timeout: Duration,
}

impl RunInfo<'_> {
    fn base(&self) -> BaseEnv<'_> {
        BaseEnv {
            instance: self.instance,
            database: self.database,
            worker: self.worker,
            bin_dir: self.bin_dir,
            connect_timeout: self.connect_timeout,
        }
    }
}

/// The libpq variables, PATH, HOME, the password file, the locale and the
/// `PGSNAPMAN_*` variables every script gets (docs/scripts.md).
pub(crate) fn base_environment(
    scratch: &Scratch,
    script: &ScriptSource,
    run: &BaseEnv<'_>,
) -> Vec<(&'static str, OsString)> {
    let i = run.instance;
    let (port, user, sslmode) = crate::runner::connection::port_user_sslmode(i);
    let mut path = OsString::from(run.bin_dir);
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()));
    let mut env: Vec<(&'static str, OsString)> = vec![
        ("PATH", path),
        ("HOME", scratch.path().into()),
        ("PGHOST", i.host.clone().into()),
        ("PGPORT", port.to_string().into()),
        ("PGUSER", user.into()),
        ("PGDATABASE", run.database.into()),
        ("PGSSLMODE", sslmode.into()),
        (
            "PGCONNECT_TIMEOUT",
            run.connect_timeout.as_secs().max(1).to_string().into(),
        ),
        (
            "PGAPPNAME",
            format!("pgsnapman-script-{}", script.name).into(),
        ),
        ("PGSNAPMAN_WORKER", run.worker.into()),
        ("PGSNAPMAN_PG_BINDIR", run.bin_dir.into()),
        ("PGSNAPMAN_SCRATCH_DIR", scratch.path().into()),
        ("PGSNAPMAN_SCRIPT_NAME", script.name.clone().into()),
        ("PGSNAPMAN_SCRIPT_HASH", script.hash.clone().into()),
    ];
    // The worker's PGPASSFILE never leaks in: without a password there is
    // none (libpq then tries the script's HOME, the scratch directory).
    match &scratch.passfile {
        Some(p) => env.push(("PGPASSFILE", p.path().into())),
        None => env.push(("PGPASSFILE", scratch.path().join(".pgpass").into())),
    }
    for keep in ["LANG", "LC_ALL", "TZ"] {
        if let Some(v) = std::env::var_os(keep) {
            env.push((keep, v));
        }
    }
    env
}

/// The `PGSNAPMAN_*` variables of a SCRIPT dump.
fn dump_environment(run: &RunInfo<'_>) -> Vec<(&'static str, OsString)> {
    let mut env: Vec<(&'static str, OsString)> = vec![
        ("PGSNAPMAN_JOB_ID", run.spec.job_id.to_string().into()),
        ("PGSNAPMAN_TASK_ID", run.task_id.to_string().into()),
        ("PGSNAPMAN_DUMP_UUID", run.dump_uuid.into()),
        ("PGSNAPMAN_DATABASE", run.database.into()),
        ("PGSNAPMAN_SCHEMA", run.spec.schema.clone().into()),
        ("PGSNAPMAN_FORMAT", format_name(run.format).into()),
        ("PGSNAPMAN_SERVER_VERSION", run.server_version.into()),
    ];
    if let Some(d) = run.output_dir {
        env.push(("PGSNAPMAN_OUTPUT_DIR", d.into()));
    }
    env
}

/// One SCRIPT dump while it runs: its scratch directory, its
/// `scripts.timeout` deadline and its stderr lines.
pub(crate) struct ScriptRun {
    /// `script NAME`, for messages.
    pub name: String,
    scratch: Scratch,
    deadline: Deadline,
    timeout: Duration,
    lines: Arc<Mutex<StderrLines>>,
}

impl ScriptRun {
    /// Feeds the script's stderr lines into the run.
    pub fn observer(&self) -> LineObserver {
        observer(Arc::clone(&self.lines))
    }

    /// What the script runs under: the dump's cancellation and the timeout.
    pub fn cancel(&self) -> &tokio_util::sync::CancellationToken {
        self.deadline.token()
    }

    /// After the run: keeps the stderr lines in `finished`, removes the
    /// scratch directory, and says which script failed and how (a run the
    /// timeout cut off fails naming `scripts.timeout`; one cancelled from
    /// outside, by `cancel`, stays cancelled).
    pub fn end(
        self,
        ended: Result<Ended>,
        finished: &mut DumpFinished,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Ended> {
        let lines = std::mem::take(&mut *self.lines.lock().unwrap_or_else(|e| e.into_inner()));
        finished.script_stderr = lines.into_lines();
        drop(self.scratch);
        if matches!(ended, Ok(Ended::Cancelled)) && self.deadline.fired() && !cancel.is_cancelled()
        {
            bail!(
                "{} ran longer than scripts.timeout = {} and was killed (its whole process group)",
                self.name,
                humantime::format_duration(self.timeout)
            );
        }
        ended.map_err(name_failure)
    }
}

/// Everything a SCRIPT dump needs before it runs: the scratch directory
/// (script, password file), the command, and the run with its
/// `scripts.timeout` deadline (a child of `cancel`).
pub(crate) fn prepare(
    runner: &crate::runner::Runner,
    c: &crate::runner::spec::Checked<'_>,
    tools: &crate::runner::client::ClientTools,
    server_version: &str,
    finished: &DumpFinished,
    output_dir: Option<&Path>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(Command, ScriptRun)> {
    let script = check(runner.scripts_config(), runner.worker_name(), c.spec)?;
    let password = runner.instance_password(c.instance)?;
    let scratch = Scratch::create(
        runner.tmp_dir(),
        script,
        c.instance,
        password.as_deref().map(String::as_str),
    )?;
    let run = RunInfo {
        spec: c.spec,
        instance: c.instance,
        database: &c.connect_db,
        format: c.format,
        dump_uuid: &finished.dump_uuid,
        task_id: finished.task.as_ref().map_or(0, |t| t.task_id),
        worker: runner.worker_name(),
        server_version,
        bin_dir: &tools.dir,
        output_dir,
        connect_timeout: runner.connect_timeout(),
    };
    let cmd = command(&scratch, script, &run)?;
    tracing::info!(
        script = %script.name,
        hash = %script.hash,
        scratch = %scratch.path().display(),
        "running a script dump"
    );
    let timeout = runner.scripts_config().timeout;
    Ok((
        cmd,
        ScriptRun {
            name: format!("script {}", script.name),
            scratch,
            deadline: Deadline::start(cancel, timeout),
            timeout,
            lines: Arc::default(),
        },
    ))
}

/// A script's failure as the catalog row says it: which script, its exit
/// status, and its stderr's error lines or tail.
pub fn name_failure(err: anyhow::Error) -> anyhow::Error {
    match err.downcast::<crate::error::ClientError>() {
        Ok(crate::error::ClientError::Exited {
            program,
            status,
            text,
        }) => anyhow::anyhow!("{program} failed ({status}); its stderr ends with:\n{text}"),
        Ok(other) => other.into(),
        Err(err) => err,
    }
}

/// The script's stderr lines for the catalog: the first
/// [`MAX_MESSAGE_LINES`], each cut to [`MAX_LINE_BYTES`], and a last line
/// saying how many more there were.
#[derive(Debug, Default)]
pub struct StderrLines {
    kept: Vec<String>,
    dropped: u64,
}

impl StderrLines {
    pub fn push(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        if self.kept.len() >= MAX_MESSAGE_LINES {
            self.dropped += 1;
            return;
        }
        let mut end = line.len().min(MAX_LINE_BYTES);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let mut kept = line[..end].to_string();
        if end < line.len() {
            kept.push('…');
        }
        self.kept.push(kept);
    }

    pub fn into_lines(self) -> Vec<String> {
        let mut out = self.kept;
        if self.dropped > 0 {
            out.push(format!(
                "… {} more stderr lines not kept (the first {MAX_MESSAGE_LINES} are)",
                self.dropped
            ));
        }
        out
    }
}

/// An observer that feeds `lines` (for the process runner).
pub fn observer(lines: Arc<Mutex<StderrLines>>) -> LineObserver {
    Box::new(move |line: &str| {
        lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    })
}

/// `scripts.timeout` for one run: a child of the run's cancellation that
/// fires after the timeout (and says so); the timer stops when dropped.
pub struct Deadline {
    token: tokio_util::sync::CancellationToken,
    fired: Arc<std::sync::atomic::AtomicBool>,
    timer: tokio::task::JoinHandle<()>,
}

impl Deadline {
    pub fn start(parent: &tokio_util::sync::CancellationToken, timeout: Duration) -> Self {
        let token = parent.child_token();
        let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let timer = {
            let (token, fired) = (token.clone(), Arc::clone(&fired));
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                fired.store(true, std::sync::atomic::Ordering::SeqCst);
                token.cancel();
            })
        };
        Self {
            token,
            fired,
            timer,
        }
    }

    pub fn token(&self) -> &tokio_util::sync::CancellationToken {
        &self.token
    }

    /// True once the timeout cancelled the run.
    pub fn fired(&self) -> bool {
        self.fired.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(script: Option<ScriptSource>) -> DumpSpec {
        DumpSpec {
            job_id: 4,
            script,
            ..Default::default()
        }
    }

    fn source(content: &[u8]) -> ScriptSource {
        ScriptSource {
            name: "s.sh".into(),
            content: content.to_vec(),
            hash: content_hash(content),
        }
    }

    #[test]
    fn scripts_run_only_when_enabled_and_whole() {
        let on = ScriptsConfig {
            enabled: true,
            ..Default::default()
        };
        let s = spec(Some(source(b"#!/bin/sh\n")));
        let err = check(&ScriptsConfig::default(), "w1", &s).unwrap_err();
        assert!(
            err.to_string()
                .contains("scripts are disabled on worker w1: set scripts.enabled = true"),
            "{err}"
        );
        assert!(check(&on, "w1", &s).is_ok());
        let mut bad = source(b"#!/bin/sh\n");
        bad.content.push(b'x');
        let err = check(&on, "w1", &spec(Some(bad))).unwrap_err().to_string();
        assert!(err.contains("does not match its hash"), "{err}");
        assert!(check(&on, "w1", &spec(None)).is_err());
    }

    #[test]
    fn scripts_are_off_unless_the_local_config_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(&path, "[worker]\nname = \"w\"\n").unwrap();
        let c = crate::Config::load(Some(&path)).unwrap();
        assert!(!c.scripts.enabled);
        assert_eq!(c.scripts.timeout, Duration::from_secs(6 * 3600));
        std::fs::write(
            &path,
            "[worker]\nname = \"w\"\n[scripts]\nenabled = true\ntimeout = \"30m\"\n",
        )
        .unwrap();
        let c = crate::Config::load(Some(&path)).unwrap();
        assert!(c.scripts.enabled);
        assert_eq!(c.scripts.timeout, Duration::from_secs(1800));
        std::fs::write(
            &path,
            "[worker]\nname = \"w\"\n[scripts]\ntimeout = \"0s\"\n",
        )
        .unwrap();
        let err = crate::Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("scripts.timeout must be at least 1s"), "{err}");
    }

    #[test]
    fn the_interpreter_line_is_split_like_the_kernel_does() {
        assert_eq!(
            interpreter_line(b"#!/bin/sh\necho").unwrap(),
            ("/bin/sh", None)
        );
        assert_eq!(
            interpreter_line(b"#! /usr/bin/env  python3 -u \nx").unwrap(),
            ("/usr/bin/env", Some("python3 -u"))
        );
        assert!(interpreter_line(b"#!sh\n").is_err());
        assert!(interpreter_line(b"#!\n").is_err());
    }

    #[test]
    fn stderr_lines_are_bounded() {
        let mut l = StderrLines::default();
        l.push(&"é".repeat(1000));
        for i in 0..300 {
            l.push(&format!("line {i}"));
        }
        let out = l.into_lines();
        assert_eq!(out.len(), MAX_MESSAGE_LINES + 1);
        assert!(out[0].len() <= MAX_LINE_BYTES + '…'.len_utf8() && out[0].ends_with('…'));
        assert!(
            out[MAX_MESSAGE_LINES].contains("101 more stderr lines"),
            "{out:?}"
        );
    }

    #[test]
    fn the_environment_holds_no_worker_secret() {
        let dir = tempfile::tempdir().unwrap();
        let script = source(b"#!/bin/sh\n");
        let instance = InstanceConnection {
            host: "db1".into(),
            port: 5433,
            user: "u".into(),
            ..Default::default()
        };
        let scratch = Scratch::create(dir.path(), &script, &instance, Some("s3cret")).unwrap();
        let s = spec(Some(script.clone()));
        let run = RunInfo {
            spec: &s,
            instance: &instance,
            database: "app",
            format: DumpFormat::Custom,
            dump_uuid: "u-1",
            task_id: 0,
            worker: "w1",
            server_version: "15.4",
            bin_dir: Path::new("/pg/15/bin"),
            output_dir: None,
            connect_timeout: Duration::from_secs(5),
        };
        let mut env = base_environment(&scratch, &script, &run.base());
        env.extend(dump_environment(&run));
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("PGPORT"), Some("5433".into()));
        assert!(
            get("PATH")
                .unwrap()
                .to_string_lossy()
                .starts_with("/pg/15/bin:")
        );
        assert!(
            env.iter()
                .all(|(_, v)| !v.to_string_lossy().contains("s3cret"))
        );
        let passfile = PathBuf::from(get("PGPASSFILE").unwrap());
        assert!(passfile.starts_with(scratch.path()));
        let mode = std::fs::metadata(&passfile).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        let text = std::fs::read_to_string(&passfile).unwrap();
        assert!(text.contains("s3cret"));
        let dir_mode = std::fs::metadata(scratch.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o077, 0);
        let kept = scratch.path().to_path_buf();
        drop(scratch);
        assert!(!kept.exists());
    }
}
