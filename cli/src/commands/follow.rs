//! Following a queued task: print it, or with `--wait` follow it until it
//! ends (on a WatchTask stream, or by polling an older coordinator; through
//! a coordinator restart), then print it and what it produced.
//! Progress goes to stderr, and only to a terminal.
use std::time::Duration;

use anyhow::{Result, bail};
use pgsnapman_proto::v1;
use tokio::time::Instant;

use super::Ctx;
use crate::args::WaitArgs;
use crate::client::{Admin, rpc};
use crate::output::{json, restore, table};

/// How often `--wait` asks for the task's state when it polls, and the
/// pause before following again after the coordinator was unreachable.
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
    let done = follow(ctx, admin, task, wait.timeout).await?;
    ctx.out.object(json::task(&done), table::task_rows(&done))?;
    if !ctx.out.is_json() && done.kind() == v1::TaskKind::Restore && done.restore_run_id != 0 {
        let log = rpc(admin
            .get_restore_log(v1::IdRequest {
                id: done.restore_run_id,
            })
            .await)?;
        if let Some(run) = &log.run {
            ctx.out.note(&format!("\nrestore run {}", run.id))?;
            ctx.out.object(restore::run(run), restore::run_rows(run))?;
        }
        ctx.out
            .list(vec![restore::log(&log)], restore::log_lines(&log))?;
    }
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

/// How long `--wait` keeps polling a coordinator it cannot reach.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(120);

/// Errors worth retrying while waiting: the coordinator is away for a moment.
fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

/// What one attempt to follow the task ended with.
enum Watched {
    /// The stream ended (the task finished, or the coordinator stopped).
    Ended,
    /// The coordinator does not offer WatchTask (older): poll instead.
    Unsupported,
    /// Unreachable for a moment: try again.
    Transient(tonic::Status),
}

/// Follows the task on a `WatchTask` stream (each change as it happens)
/// until it is finished, `deadline` passes or the stream breaks.
async fn watch(
    admin: &mut Admin,
    task: &mut v1::Task,
    deadline: Instant,
    progress: &mut Progress,
) -> Result<Watched> {
    let mut stream = match admin.watch_task(v1::IdRequest { id: task.id }).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::Unimplemented => return Ok(Watched::Unsupported),
        // Too many watchers on the coordinator: polling still works.
        Err(s) if s.code() == tonic::Code::ResourceExhausted => return Ok(Watched::Unsupported),
        Err(s) if transient(&s) => return Ok(Watched::Transient(s)),
        Err(s) => return rpc(Err(s)),
    };
    loop {
        let next = tokio::select! {
            m = stream.message() => m,
            () = tokio::time::sleep_until(deadline) => return Ok(Watched::Ended),
        };
        match next {
            Ok(Some(t)) => {
                *task = t;
                progress.show(task);
                if task.state().is_finished() {
                    return Ok(Watched::Ended);
                }
            }
            Ok(None) => return Ok(Watched::Ended),
            Err(s) if transient(&s) => return Ok(Watched::Transient(s)),
            Err(s) => return rpc(Err(s)),
        }
    }
}

/// Follows the task until it is finished or `timeout` has passed: on a
/// `WatchTask` stream, or by polling a coordinator without one. Rides out a
/// coordinator restart for up to `UNREACHABLE_GRACE`, moving to another of
/// several coordinator URLs (`--coordinator a,b`) if one answers.
async fn follow(
    ctx: &Ctx,
    admin: &mut Admin,
    mut task: v1::Task,
    timeout: Duration,
) -> Result<v1::Task> {
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::new();
    let mut unreachable_since: Option<Instant> = None;
    let mut polling = false;
    while !task.state().is_finished() {
        progress.show(&task);
        if Instant::now() >= deadline {
            progress.clear();
            bail!(
                "task {} has not finished after {}; it goes on: see `pgsnap task show {}`",
                task.id,
                humantime::format_duration(timeout),
                task.id
            );
        }
        let failed = if polling {
            tokio::time::sleep(POLL_INTERVAL).await;
            match admin.get_task(v1::IdRequest { id: task.id }).await {
                Ok(r) => {
                    task = r.into_inner();
                    None
                }
                Err(s) if transient(&s) => Some(s),
                Err(s) => {
                    progress.clear();
                    return rpc(Err(s));
                }
            }
        } else {
            match watch(admin, &mut task, deadline, &mut progress).await {
                Ok(Watched::Ended) => None,
                Ok(Watched::Unsupported) => {
                    polling = true;
                    None
                }
                Ok(Watched::Transient(s)) => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                    Some(s)
                }
                Err(e) => {
                    progress.clear();
                    return Err(e);
                }
            }
        };
        // The coordinator may restart while we wait: keep trying for a
        // while (the channel reconnects by itself), the task goes on.
        match failed {
            None => unreachable_since = None,
            Some(s) => {
                // Following is only reading: safe to go on elsewhere.
                if let Ok(other) = ctx.admin().await {
                    *admin = other;
                }
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_GRACE {
                    progress.clear();
                    return rpc(Err(s));
                }
            }
        }
    }
    progress.clear();
    Ok(task)
}

/// Progress on a terminal's stderr (indicatif hides it when stderr is a
/// file or a pipe): a bar of bytes done of the total when the worker knows
/// the total (restores), else a spinner with the task's state line.
struct Progress {
    bar: indicatif::ProgressBar,
    with_total: bool,
}

impl Progress {
    fn new() -> Self {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(spinner_style());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self {
            bar,
            with_total: false,
        }
    }

    fn show(&mut self, task: &v1::Task) {
        match task.progress.as_ref().filter(|p| p.bytes_total > 0) {
            Some(p) => {
                if !self.with_total {
                    self.with_total = true;
                    self.bar.set_style(bar_style());
                }
                self.bar.set_length(p.bytes_total);
                self.bar.set_position(p.bytes_done.min(p.bytes_total));
                self.bar
                    .set_message(format!("task {} {}", task.id, p.phase));
            }
            None => self.bar.set_message(table::task_progress_line(task)),
        }
    }

    fn clear(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn spinner_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
}

fn bar_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}
