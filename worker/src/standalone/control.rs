//! A standalone service's control socket, `<data_dir>/control.sock`
//! (docs/standalone.md): `pgsnapman-worker dump now JOB` asks the running
//! service to dump JOB in its scheduler slot and waits for the outcome. The
//! socket is mode 0600 inside the 0700 data directory: only the worker's OS
//! user (and root) may use it. One request per connection, one line each way:
//! `dump NAME` → `ok UUID` or `error TEXT`.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use pgsnapman_proto::jobs_file::stable_id;
use pgsnapman_proto::model::excerpt;
use pgsnapman_proto::v1::event;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// The socket's file name in the data directory.
pub const SOCKET: &str = "control.sock";
/// Longest request line read (a job name is at most 63 bytes).
const MAX_LINE: u64 = 1024;
/// Requests served at once; why: each holds a connection and may wait for a
/// slot, a bound keeps a looping client from piling them up.
const MAX_CLIENTS: usize = 16;
/// Pause after a failed accept (e.g. out of file descriptors); why: an
/// immediate retry fails again at once and spins a core.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Serves the socket until `stop` fires, then removes it. A socket file
/// left by a crash is replaced (the data directory's lock, taken when the
/// service opened it, says no other service uses it).
pub async fn serve(shared: Arc<Shared>, stop: CancellationToken) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = path(shared.runner.store().root());
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
    }
    let listener = UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("set mode 0600 on {}", path.display()))?;
    tracing::info!(socket = %path.display(), "control socket open");
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // E.g. EMFILE: retrying at once would spin and flood the
                    // log; a short pause lets connections close first.
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_RETRY) => {}
                    }
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&clients).try_acquire_owned() else {
            let mut stream = stream;
            let _ = stream
                .write_all(format!("error {MAX_CLIENTS} requests are waiting already\n").as_bytes())
                .await;
            continue;
        };
        let shared = Arc::clone(&shared);
        let tasks = shared.tasks.clone();
        tasks.spawn(async move {
            let _permit = permit;
            if let Err(e) = handle(&shared, stream).await {
                tracing::warn!("control socket: {e:#}");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// One request: reads the line, runs it, answers.
async fn handle(shared: &Arc<Shared>, stream: UnixStream) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_LINE);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .await
        .context("read the request")?;
    let answer = match line.trim_end_matches('\n').split_once(' ') {
        Some(("dump", name)) => {
            let cancel = shared.tasks_token.child_token();
            // The client going away (interrupted) cancels the dump.
            let mut rest = reader.into_inner();
            let run = dump(shared, name, &cancel);
            tokio::pin!(run);
            let mut buf = [0u8; 64];
            loop {
                tokio::select! {
                    a = &mut run => break a,
                    r = rest.read(&mut buf), if !cancel.is_cancelled() => {
                        if matches!(r, Ok(0) | Err(_)) {
                            tracing::info!(job = %excerpt(name), "dump now: the client went away; cancelling");
                            cancel.cancel();
                        }
                    }
                }
            }
        }
        _ => format!(
            "error unknown request {}",
            pgsnapman_proto::model::quoted(&excerpt(line.trim_end()))
        ),
    };
    // One line whatever the error text holds.
    let answer = answer.replace('\n', " ");
    write
        .write_all(format!("{answer}\n").as_bytes())
        .await
        .context("answer")?;
    Ok(())
}

/// `dump NAME`: the answer line.
async fn dump(shared: &Arc<Shared>, name: &str, cancel: &CancellationToken) -> String {
    let id = stable_id("job", name);
    let Some(job) = shared
        .mirror
        .snapshot()
        .jobs
        .iter()
        .find(|j| j.id == id)
        .cloned()
    else {
        return format!(
            "error no job {} in the running service's jobs file",
            pgsnapman_proto::model::quoted(&excerpt(name))
        );
    };
    match crate::scheduler::run_now(shared, &job, cancel).await {
        Err(e) => format!("error job {name}: {e}"),
        Ok(Some(event::Body::DumpFinished(f))) if f.succeeded => format!("ok {}", f.dump_uuid),
        Ok(Some(event::Body::DumpFinished(f))) => {
            format!("error job {name}: the dump failed: {}", f.error)
        }
        Ok(Some(event::Body::Message(m))) => format!("error {}", m.text),
        Ok(Some(_)) => format!("error job {name}: no dump was recorded"),
        Ok(None) => format!("error job {name}: the dump was cancelled or could not be recorded"),
    }
}

/// Asks a running service over its socket; `None` when no service listens
/// (no socket, or a stale one): then the caller runs in the foreground.
pub async fn ask(data_dir: &Path, request: &str) -> Result<Option<String>> {
    let path = path(data_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => {
            return Err(e).with_context(|| format!("connect to {}", path.display()));
        }
    };
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{request}\n").as_bytes())
        .await
        .context("send the request")?;
    let mut answer = String::new();
    BufReader::new(read)
        .take(64 * 1024)
        .read_line(&mut answer)
        .await
        .context("read the answer")?;
    if answer.is_empty() {
        bail!("the worker service closed the control socket without an answer (is it stopping?)");
    }
    Ok(Some(answer.trim_end().to_string()))
}
