//! A TCP proxy on loopback for fault injection: put it between a worker and
//! its coordinator (or a worker and a Postgres server) and `cut`,
//! `blackhole`, `slow` or `restore` the link while a scenario runs. It
//! forwards bytes only; it never looks into them.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Bytes read from one side before they are forwarded to the other.
const CHUNK: usize = 64 * 1024;

/// What the proxy does with traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Forward each chunk after this delay.
    Slow(Duration),
    /// Accept connections and hold them: nothing is forwarded, nothing is
    /// reset (a partition). Held bytes flow again on `restore`.
    Blackhole,
    /// Reset every connection and refuse new ones.
    Cut,
}

/// A running proxy; dropping it closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    accepted: watch::Receiver<u64>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `target` (a loopback
    /// address). Must be called inside a Tokio runtime.
    pub async fn start(target: SocketAddr) -> Result<Self> {
        anyhow::ensure!(
            target.ip().is_loopback(),
            "the proxy forwards to loopback only, not {target}"
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the proxy")?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Pass);
        let (count, accepted) = watch::channel(0u64);
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = tokio::spawn(accept_loop(
            listener,
            target,
            mode.clone(),
            count,
            tasks.clone(),
        ));
        lock(&tasks).push(accept.abort_handle());
        Ok(Self {
            addr,
            mode,
            tasks,
            accepted,
        })
    }

    /// Starts a proxy in front of `host:port` given as text (a URL's
    /// authority, e.g. `127.0.0.1:7431`).
    pub async fn to(authority: &str) -> Result<Self> {
        let target: SocketAddr = authority
            .parse()
            .with_context(|| format!("{authority:?} is not an address:port"))?;
        Self::start(target).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://<addr>`, for a worker's coordinator URL (the coordinator
    /// behind serves TLS; its certificate names 127.0.0.1).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        *self.accepted.borrow()
    }

    /// Resets every connection (RST) and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Holds every connection, old and new, forwarding nothing and resetting
    /// nothing, until `restore` (or `cut`).
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Forwards each chunk after `delay`.
    pub fn slow(&self, delay: Duration) {
        self.mode.send_replace(Mode::Slow(delay));
    }

    /// Forwards everything again (held bytes included).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Pass);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

fn lock(tasks: &Mutex<Vec<AbortHandle>>) -> std::sync::MutexGuard<'_, Vec<AbortHandle>> {
    tasks.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes a socket with a reset rather than a FIN.
fn reset(stream: TcpStream) {
    // A zero linger never blocks on drop.
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    count: watch::Sender<u64>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        count.send_modify(|n| *n += 1);
        if *mode.borrow() == Mode::Cut {
            reset(inbound);
            continue;
        }
        let conn = tokio::spawn(connection(inbound, target, mode.subscribe()));
        let mut all = lock(&tasks);
        all.retain(|t| !t.is_finished());
        all.push(conn.abort_handle());
    }
}

/// Waits until traffic may flow; false if the link was cut.
async fn gate(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Cut => return false,
            Mode::Pass => return true,
            Mode::Slow(d) => {
                tokio::time::sleep(d).await;
                return *mode.borrow() != Mode::Cut;
            }
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

async fn connection(inbound: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if !gate(&mut mode).await {
        reset(inbound);
        return;
    }
    let Ok(outbound) = TcpStream::connect(target).await else {
        reset(inbound);
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_r, mut in_w) = inbound.into_split();
    let (mut out_r, mut out_w) = outbound.into_split();
    let up = pump(&mut in_r, &mut out_w, mode.clone());
    let down = pump(&mut out_r, &mut in_w, mode.clone());
    let cut = async {
        while mode.changed().await.is_ok() {
            if *mode.borrow() == Mode::Cut {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = async { tokio::join!(up, down); } => {}
        () = cut => {}
    }
    // Either side closed, or the link was cut: reset both.
    if let (Ok(a), Ok(b)) = (in_r.reunite(in_w), out_r.reunite(out_w)) {
        reset(a);
        reset(b);
    }
}

/// Copies one direction, chunk by chunk, each through the gate; ends at
/// EOF (passing the half-close on), on an error, or when the link is cut.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if !gate(&mut mode).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
