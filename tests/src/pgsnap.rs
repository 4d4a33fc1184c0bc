//! Runs the real `pgsnap` binary against a coordinator, the way an operator
//! or a script would.
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::Access;

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
    pub access: Access,
}

impl Pgsnap {
    pub fn new(access: Access) -> Self {
        Self { access }
    }

    /// The `pgsnap <args>` command with this coordinator's access, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::binary("pgsnap"));
        cmd.arg("--coordinator")
            .arg(&self.access.url)
            .args(args)
            .env_remove("PGSNAPMAN_CONFIG")
            .env_remove("PGSNAPMAN_CA_FILE")
            .env_remove("PGSNAPMAN_TOKEN")
            .env_remove("PGSNAPMAN_TOKEN_FILE")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        if let Some(ca) = &self.access.ca_file {
            cmd.env("PGSNAPMAN_CA_FILE", ca);
        }
        if let Some(token) = &self.access.token {
            cmd.env("PGSNAPMAN_TOKEN", token);
        }
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
