//! Running one client program (pg_dump, pg_dumpall, psql) as a child in its
//! own process group: stderr is collected (bounded), stdout captured up to a
//! stated limit (more is an error, never a silent cut), and cancellation
//! reaches the whole group (SIGTERM, grace period, SIGKILL) and always reaps
//! the child.
use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;

/// Lines of stderr kept from the end of the output.
const TAIL_LINES: usize = 40;
/// Bytes of stderr kept from the end of the output.
const TAIL_BYTES: usize = 8 * 1024;
/// Error-looking lines kept from anywhere in the output.
const IMPORTANT_LINES: usize = 20;
/// Longest single stderr line kept (longer ones are cut).
const MAX_LINE: usize = 1024;
/// Default of `postgres.max_query_output_bytes`: the most stdout bytes
/// captured from one run (query results, `pg_restore --list`).
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024 * 1024;
/// Bytes of a program's output (or any long text) an error message quotes.
const EXCERPT_BYTES: usize = 200;

/// The start of `text` for an error message: at most `EXCERPT_BYTES`
/// bytes, cut at a character boundary and marked with an ellipsis.
pub fn excerpt(text: &str) -> String {
    if text.len() <= EXCERPT_BYTES {
        return text.to_string();
    }
    let mut cut = EXCERPT_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..cut], text.len())
}

/// What a child wrote on stderr: the last lines, and the lines that look
/// like the reason of a failure.
#[derive(Debug, Default, Clone)]
pub struct Stderr {
    tail: VecDeque<String>,
    tail_bytes: usize,
    important: Vec<String>,
}

/// True for lines that carry the reason of a failure.
fn is_important(line: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "pg_dump: error:",
        "pg_dumpall: error:",
        "psql: error:",
        "pg_dump: detail:",
        "pg_dumpall: detail:",
        "psql: detail:",
        "FATAL",
        "DETAIL",
        "ERROR:",
    ];
    let t = line.trim_start();
    PREFIXES.iter().any(|p| t.starts_with(p))
}

/// `line` without the `psql:<script>:<line>: ` position psql puts before
/// messages about a script it reads (`-f`, stdin).
fn without_script_position(line: &str) -> &str {
    let Some(rest) = line.strip_prefix("psql:") else {
        return line;
    };
    let Some(end) = rest.find(": ") else {
        return line;
    };
    match rest[..end].rsplit_once(':') {
        Some((_, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => &rest[end + 2..],
        _ => line,
    }
}

impl Stderr {
    pub fn push(&mut self, line: &str) {
        let mut line = without_script_position(line.trim_end()).to_string();
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        if line.is_empty() {
            return;
        }
        if is_important(&line) && self.important.len() < IMPORTANT_LINES {
            self.important.push(line.clone());
        }
        self.tail_bytes += line.len();
        self.tail.push_back(line);
        while self.tail.len() > TAIL_LINES || self.tail_bytes > TAIL_BYTES {
            match self.tail.pop_front() {
                Some(old) => self.tail_bytes -= old.len(),
                None => break,
            }
        }
    }

    /// The error text for a failed run: the error lines if there are any,
    /// else the last lines.
    pub fn error_text(&self) -> String {
        if !self.important.is_empty() {
            return self.important.join("\n");
        }
        let n = self.tail.len();
        self.tail
            .iter()
            .skip(n.saturating_sub(10))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn all_text(&self) -> String {
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// How a child run ended.
#[derive(Debug)]
pub enum Outcome {
    Exited {
        status: ExitStatus,
        /// Standard output, if it was captured (all of it: more than the
        /// capture limit is an error instead).
        stdout: Vec<u8>,
        stderr: Stderr,
    },
    /// Cancelled; the process group is gone and the child reaped.
    Cancelled,
}

/// Sees every stderr line of a child as it is written (classification of
/// pg_restore's errors needs all of them, not only the kept tail).
pub type LineObserver = Box<dyn FnMut(&str) + Send>;

async fn collect_stderr(
    pipe: impl AsyncRead + Unpin,
    mut observer: Option<LineObserver>,
) -> Stderr {
    let mut reader = BufReader::new(pipe);
    let mut stderr = Stderr::default();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // At most MAX_LINE bytes of one line are kept; the rest is skipped.
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if buf.last() != Some(&b'\n') && buf.len() >= MAX_LINE {
                    skip_rest_of_line(&mut reader).await;
                }
                let line = String::from_utf8_lossy(&buf);
                if let Some(o) = observer.as_mut() {
                    o(line.trim_end_matches(['\n', '\r']));
                }
                stderr.push(&line);
            }
        }
    }
    stderr
}

/// Reads up to and including the next newline (or EOF), keeping nothing.
async fn skip_rest_of_line(reader: &mut (impl AsyncBufReadExt + Unpin)) {
    loop {
        let (used, done) = match reader.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            },
        };
        reader.consume(used);
        if done {
            return;
        }
    }
}

/// All of stdout, or `Err(bytes seen)` when it is longer than `limit`.
async fn collect_stdout(pipe: impl AsyncRead + Unpin, limit: u64) -> Result<Vec<u8>, u64> {
    let mut out = Vec::new();
    let mut limited = pipe.take(limit.saturating_add(1));
    let _ = limited.read_to_end(&mut out).await;
    if (out.len() as u64) <= limit {
        return Ok(out);
    }
    drop(out);
    // Drain the rest so the child never blocks on a full pipe.
    let rest = tokio::io::copy(&mut limited.into_inner(), &mut tokio::io::sink())
        .await
        .unwrap_or(0);
    Err(limit.saturating_add(1).saturating_add(rest))
}

/// Where a child's standard output goes.
pub enum StdoutTo {
    /// /dev/null.
    Null,
    /// Captured whole, up to this many bytes; a longer output fails the
    /// run with an error naming the limit (`postgres.max_query_output_bytes`).
    Capture(u64),
    /// The write end of a pipe (or any file) someone else reads: dump data
    /// on its way into the store.
    File(std::os::fd::OwnedFd),
}

/// Runs `cmd` to its end, or until `cancel` fires. The command gets stdin
/// from /dev/null, stderr piped, stdout as `stdout` says and its own
/// process group.
pub async fn run(
    cmd: Command,
    program: &str,
    stdout: StdoutTo,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<Outcome, ClientError> {
    run_with(cmd, program, None, stdout, cancel, grace).await
}

/// `run` with stdin from `stdin` (a pipe's read end; /dev/null if `None`)
/// and stdout as `stdout` says. Our copies of both descriptors are closed as
/// soon as the child runs, so the other ends see EOF when the child exits.
pub async fn run_with(
    cmd: Command,
    program: &str,
    stdin: Option<std::os::fd::OwnedFd>,
    stdout: StdoutTo,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<Outcome, ClientError> {
    run_observed(cmd, program, stdin, stdout, None, cancel, grace).await
}

/// `run_with`, and every stderr line is shown to `observer` as it comes.
pub async fn run_observed(
    mut cmd: Command,
    program: &str,
    stdin: Option<std::os::fd::OwnedFd>,
    stdout: StdoutTo,
    observer: Option<LineObserver>,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<Outcome, ClientError> {
    let mut capture_limit = 0;
    cmd.stdin(stdin.map_or_else(Stdio::null, Stdio::from))
        .stdout(match stdout {
            StdoutTo::Null => Stdio::null(),
            StdoutTo::Capture(limit) => {
                capture_limit = limit;
                Stdio::piped()
            }
            StdoutTo::File(fd) => Stdio::from(fd),
        })
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let spawned = cmd.spawn();
    // The command holds our copies of the child's stdin/stdout descriptors:
    // close them now, not when this function returns.
    drop(cmd);
    let mut child = spawned.map_err(|source| ClientError::Spawn {
        program: program.to_string(),
        source,
    })?;
    let pid = child.id();
    let reader = child
        .stderr
        .take()
        .map(|pipe| tokio::spawn(collect_stderr(pipe, observer)));
    let out_reader = child
        .stdout
        .take()
        .map(|pipe| tokio::spawn(collect_stdout(pipe, capture_limit)));
    let status = tokio::select! {
        status = child.wait() => Some(status.map_err(|source| ClientError::Wait {
            program: program.to_string(),
            source,
        })?),
        () = cancel.cancelled() => None,
    };
    let Some(status) = status else {
        terminate_group(&mut child, pid, program, grace).await;
        if let Some(r) = reader {
            // Every process of the group is gone, so the pipe is at EOF.
            let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
        }
        if let Some(r) = out_reader {
            r.abort();
        }
        return Ok(Outcome::Cancelled);
    };
    reap_group(pid, program);
    let stderr = match reader {
        Some(r) => tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => Stderr::default(),
    };
    let stdout = match out_reader {
        Some(r) => match tokio::time::timeout(Duration::from_secs(10), r).await {
            Ok(Ok(Ok(out))) => out,
            Ok(Ok(Err(seen))) => {
                return Err(ClientError::OutputTooLarge {
                    program: program.to_string(),
                    seen,
                    limit: capture_limit,
                });
            }
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    Ok(Outcome::Exited {
        status,
        stdout,
        stderr,
    })
}

/// After the child exited on its own: SIGKILL to anything of its process
/// group that is still running (a script's background job), which would
/// otherwise hold the output pipes open and the run with them.
fn reap_group(pid: Option<u32>, program: &str) {
    let Some(g) = pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw) else {
        return;
    };
    // Signal 0 only asks whether the group still has a member.
    if killpg(g, None).is_ok() {
        tracing::warn!(
            pid = g.as_raw(),
            program,
            "exited but left processes running in its group: SIGKILL to the group"
        );
        let _ = killpg(g, Signal::SIGKILL);
    }
}

/// SIGTERM to the group, up to `grace` for the child to exit, then SIGKILL to
/// the group; always reaps the child.
async fn terminate_group(
    child: &mut tokio::process::Child,
    pid: Option<u32>,
    program: &str,
    grace: Duration,
) {
    let group = pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw);
    if let Some(g) = group {
        tracing::info!(
            pid = g.as_raw(),
            program,
            "sending SIGTERM to process group"
        );
        let _ = killpg(g, Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_ok() {
        // The leader is gone; make sure nothing it forked survives.
        if let Some(g) = group {
            let _ = killpg(g, Signal::SIGKILL);
        }
        return;
    }
    if let Some(g) = group {
        tracing::warn!(
            pid = g.as_raw(),
            program,
            "still running after the grace period: SIGKILL"
        );
        let _ = killpg(g, Signal::SIGKILL);
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_extracted() {
        let mut s = Stderr::default();
        s.push("pg_dump: warning: something harmless\n");
        s.push("pg_dump: error: connection to server at \"127.0.0.1\", port 5433 failed: FATAL:  password authentication failed for user \"postgres\"\n");
        s.push("pg_dump: detail: more\n");
        let t = s.error_text();
        assert!(t.contains("password authentication failed for user"), "{t}");
        assert!(t.contains("detail: more"));
        assert!(!t.contains("harmless"));
    }

    #[test]
    fn script_positions_are_dropped() {
        let mut s = Stderr::default();
        s.push("psql:/tmp/w/psql-x1.sql:3: ERROR:  permission denied for database d\n");
        s.push("psql:<stdin>:12: NOTICE:  hi\n");
        assert_eq!(s.error_text(), "ERROR:  permission denied for database d");
        assert_eq!(without_script_position("psql: error: x"), "psql: error: x");
        assert_eq!(without_script_position("psql:a:b: c"), "psql:a:b: c");
    }

    #[test]
    fn without_error_lines_the_tail_is_used_and_bounded() {
        let mut s = Stderr::default();
        for i in 0..100 {
            s.push(&format!("line {i}"));
        }
        assert_eq!(s.tail.len(), TAIL_LINES);
        let t = s.error_text();
        assert!(t.ends_with("line 99") && t.contains("line 90") && !t.contains("line 89\n"));
        let mut big = Stderr::default();
        for _ in 0..40 {
            big.push(&"x".repeat(5000));
        }
        assert!(big.tail_bytes <= TAIL_BYTES);
        assert!(!big.tail.is_empty());
    }

    #[tokio::test]
    async fn exit_status_and_stderr_are_collected() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'psql: error: Connection refused' >&2; exit 3"]);
        let out = run(
            cmd,
            "sh",
            StdoutTo::Capture(1024),
            &CancellationToken::new(),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        match out {
            Outcome::Exited {
                status,
                stdout,
                stderr,
            } => {
                assert_eq!(status.code(), Some(3));
                assert!(stdout.is_empty());
                assert_eq!(stderr.error_text(), "psql: error: Connection refused");
            }
            Outcome::Cancelled => panic!("not cancelled"),
        }
    }

    #[tokio::test]
    async fn output_over_the_limit_is_an_error_never_a_cut() {
        async fn run_sh(bytes: u32, limit: u64) -> Result<Outcome, ClientError> {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(format!("head -c {bytes} /dev/zero"));
            let cancel = CancellationToken::new();
            run(
                cmd,
                "sh",
                StdoutTo::Capture(limit),
                &cancel,
                Duration::from_secs(1),
            )
            .await
        }
        // Far more than the old 64 KiB cut, within the limit: all of it.
        match run_sh(300_000, 300_000).await.unwrap() {
            Outcome::Exited { stdout, .. } => assert_eq!(stdout.len(), 300_000),
            Outcome::Cancelled => panic!("not cancelled"),
        }
        // One byte more than the limit: one clear line, no output.
        let err = run_sh(300_001, 300_000).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::OutputTooLarge {
                    limit: 300_000,
                    seen: 300_001,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "sh wrote 300001 bytes of output, more than the 300000 bytes \
             postgres.max_query_output_bytes allows (raise it in the worker's configuration)"
        );
    }

    #[test]
    fn excerpts_are_short_and_marked() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(5000);
        let e = excerpt(&long);
        assert!(e.len() < EXCERPT_BYTES + 40, "{e}");
        assert!(e.ends_with("… (10000 bytes in all)"), "{e}");
        assert!(e.starts_with("éé"));
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let mut cmd = Command::new("sh");
        // The grandchild ignores SIGTERM: only SIGKILL to the group stops it.
        cmd.arg("-c").arg(format!(
            "sh -c 'trap \"\" TERM; echo $$ > {}; sleep 60' & wait",
            pidfile.display()
        ));
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let pf = pidfile.clone();
        tokio::spawn(async move {
            while !pf.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            c2.cancel();
        });
        let out = run(
            cmd,
            "sh",
            StdoutTo::Null,
            &cancel,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert!(matches!(out, Outcome::Cancelled));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Reaped by init eventually; it must at least be dead or a zombie.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        assert!(
            stat.is_empty() || state == Some('Z'),
            "grandchild alive: {stat}"
        );
    }
}
