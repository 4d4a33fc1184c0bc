//! Following a queued task: print it, or with `--wait` poll it until it
//! ends (through a coordinator restart), then print it and what it produced.
//! Progress goes to stderr, and only to a terminal.
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Result, bail};
use pgsnapman_proto::v1;
use tokio::time::Instant;

use super::Ctx;
use crate::args::WaitArgs;
use crate::client::{Admin, rpc};
use crate::output::{json, table};

/// How often `--wait` asks for the task's state.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// After a task was queued for `what`: print it, or wait for it and fail
/// unless it succeeded.
pub async fn queued(
    ctx: &Ctx,
    admin: &mut Admin,
    task: v1::Task,
    wait: WaitArgs,
    what: &str,
) -> Result<()> {
    let queued = format!("queued task {} for {what}", task.id);
    if !wait.wait {
        return ctx.out.changed(
            &queued,
            json::task(&task),
            table::tasks(std::slice::from_ref(&task)),
        );
    }
    ctx.out.note(&queued)?;
    let done = follow(admin, task, wait.timeout).await?;
    ctx.out.object(json::task(&done), table::task_rows(&done))?;
    if !ctx.out.is_json() && done.dump_id != 0 && done.kind() == v1::TaskKind::Dump {
        let dump = rpc(admin.get_dump(v1::IdRequest { id: done.dump_id }).await)?;
        ctx.out.note(&format!("\ndump {}", dump.id))?;
        ctx.out.object(json::dump(&dump), table::dump_rows(&dump))?;
    }
    let state = done.state();
    if state != v1::TaskState::Succeeded {
        let label = json::task_state(state);
        let label = label.as_str().unwrap_or("UNSPECIFIED");
        if done.error.is_empty() {
            bail!("task {} {label}", done.id);
        }
        bail!("task {} {label}: {}", done.id, done.error);
    }
    Ok(())
}

fn is_finished(state: v1::TaskState) -> bool {
    matches!(
        state,
        v1::TaskState::Succeeded | v1::TaskState::Failed | v1::TaskState::Cancelled
    )
}

/// How long `--wait` keeps polling a coordinator it cannot reach.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(120);

/// Errors worth retrying while waiting: the coordinator is away for a moment.
fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

/// Polls the task until it is finished or `timeout` has passed.
async fn follow(admin: &mut Admin, mut task: v1::Task, timeout: Duration) -> Result<v1::Task> {
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::new();
    let mut unreachable_since: Option<Instant> = None;
    while !is_finished(task.state()) {
        progress.show(&table::task_progress_line(&task));
        if Instant::now() >= deadline {
            progress.clear();
            bail!(
                "task {} has not finished after {}; it goes on: see `pgsnap task show {}`",
                task.id,
                humantime::format_duration(timeout),
                task.id
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        match admin.get_task(v1::IdRequest { id: task.id }).await {
            Ok(r) => {
                task = r.into_inner();
                unreachable_since = None;
            }
            // The coordinator may restart while we wait: keep polling for a
            // while (the channel reconnects by itself), the task goes on.
            Err(s) if transient(&s) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_GRACE {
                    progress.clear();
                    return rpc(Err(s));
                }
            }
            Err(s) => {
                progress.clear();
                return rpc(Err(s));
            }
        }
    }
    progress.clear();
    Ok(task)
}

/// A status line rewritten in place on a terminal's stderr; nothing at all
/// when stderr is a file or a pipe.
struct Progress {
    tty: bool,
    last: String,
}

impl Progress {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: String::new(),
        }
    }

    fn show(&mut self, line: &str) {
        if !self.tty || line == self.last {
            return;
        }
        // "\r\x1b[2K": back to column 0 and erase the old line.
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}").and_then(|()| err.flush());
        self.last = line.to_string();
    }

    fn clear(&mut self) {
        if self.tty && !self.last.is_empty() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K").and_then(|()| err.flush());
            self.last.clear();
        }
    }
}
