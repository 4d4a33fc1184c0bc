//! Runs the real `pgsnap` binary against a coordinator, the way an operator
//! or a script would.
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// What one `pgsnap` run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

pub struct Pgsnap {
    pub coordinator_url: String,
}

impl Pgsnap {
    pub fn new(coordinator_url: impl Into<String>) -> Self {
        Self {
            coordinator_url: coordinator_url.into(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::binary("pgsnap"));
        cmd.arg("--coordinator")
            .arg(&self.coordinator_url)
            .args(args)
            .env_remove("PGSNAPMAN_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `pgsnap <args>` (blocking; each call is short).
    pub fn run(&self, args: &[&str]) -> Result<Run> {
        let out = self.command(args).output().context("run pgsnap")?;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `pgsnap <args>` feeding `input` on stdin (for `--password-stdin`).
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Result<Run> {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run pgsnap")?;
        child
            .stdin
            .take()
            .context("pgsnap stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `pgsnap --output json <args>`, requires success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let run = self.run(&full)?;
        if !run.success() {
            bail!("pgsnap {args:?} failed ({}): {}", run.code, run.stderr);
        }
        serde_json::from_str(&run.stdout)
            .with_context(|| format!("parse JSON of pgsnap {args:?}: {}", run.stdout))
    }

    /// Like `json`, feeding `input` on stdin.
    pub fn json_with_stdin(&self, args: &[&str], input: &str) -> Result<serde_json::Value> {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let run = self.run_with_stdin(&full, input)?;
        if !run.success() {
            bail!("pgsnap {args:?} failed ({}): {}", run.code, run.stderr);
        }
        serde_json::from_str(&run.stdout)
            .with_context(|| format!("parse JSON of pgsnap {args:?}: {}", run.stdout))
    }
}
