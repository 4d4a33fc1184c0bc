//! The real coordinator and worker binaries run as child processes, each in
//! its own directory, configured through environment variables and logging to
//! a file. Readiness is polled against a deadline; on a test failure the tail
//! of every log is printed.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgsnapman_proto::v1::admin_service_client::AdminServiceClient;
use pgsnapman_proto::v1::{ListWorkersRequest, Worker as WorkerInfo};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::{Access, PkiSource, logs};

/// A child process with its log file.
pub struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Self> {
        let file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(Signal::SIGTERM);
        self.wait_exit(timeout).await
    }

    /// SIGKILL, as a crash would; waits for the process to be gone.
    pub async fn kill9(&mut self) -> Result<ExitStatus> {
        self.signal(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10)).await
    }

    async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            bail!("{} is not running", self.name);
        };
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then asserts a clean exit with status 0.
    pub async fn stop_clean(&mut self) {
        let status = self
            .terminate(Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", logs::tail(&self.log, 40)));
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM\n{}",
            self.name,
            logs::tail(&self.log, 40)
        );
    }

    /// Fails the test if the log holds an ERROR line not matching `allowed`.
    pub fn assert_no_unexpected_errors(&self, allowed: &[&str]) {
        let bad = logs::unexpected_errors(&self.log, allowed);
        assert!(
            bad.is_empty(),
            "unexpected ERROR lines in the {} log:\n{}",
            self.name,
            bad.join("\n")
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            logs::print_tails(&[(self.name.clone(), self.log.clone())]);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CoordinatorOptions {
    /// Catalog URL; `None` uses the embedded catalog cluster.
    pub catalog_url: Option<String>,
    /// Listen address; default `127.0.0.1:0`.
    pub listen: Option<String>,
    /// Data directory; default a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// Extra `PGSNAPMAN_*` settings.
    pub env: Vec<(String, String)>,
    /// Working directory of the process; default the test's.
    pub cwd: Option<PathBuf>,
    /// Serve plaintext (`server.plaintext`) instead of TLS.
    pub plaintext: bool,
    /// Where its CA comes from; default the test run's shared CA.
    pub pki: PkiSource,
}

pub struct Coordinator {
    pub process: Process,
    pub addr: String,
    pub data_dir: PathBuf,
    /// The CA file clients trust it with; `None` when it serves plaintext.
    pub ca_file: Option<PathBuf>,
    /// The bootstrap admin token (`<data_dir>/admin.token`, or for a
    /// coordinator on a catalog another one bootstrapped, that one's).
    pub token: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

/// An AdminService client that sends a bearer token (or none).
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// Any text as the token, for tests that send garbage; `None`: no header.
    pub fn new(token: Option<&str>) -> Result<Self> {
        token
            .map(|t| MetadataValue::try_from(format!("Bearer {t}")))
            .transpose()
            .context("the token is not a valid header value")
            .map(Self)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Short timings so that lease expiry and polling show up within a test.
const TEST_LEASE_ENV: &[(&str, &str)] = &[
    ("PGSNAPMAN_LEASE__TTL", "6s"),
    ("PGSNAPMAN_LEASE__POLL_INTERVAL", "200ms"),
    ("PGSNAPMAN_LEASE__REAP_INTERVAL", "1s"),
    ("PGSNAPMAN_LEASE__KEEPALIVE_INTERVAL", "1s"),
];

impl Coordinator {
    pub async fn start(opts: CoordinatorOptions) -> Result<Self> {
        let (dir, data_dir) = match &opts.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let dir = crate::shared_tempdir("pgsnapman-coord-");
                let data = dir.path().join("data");
                (Some(dir), data)
            }
        };
        std::fs::create_dir_all(&data_dir)?;
        let ca_file = match &opts.pki {
            PkiSource::Shared => {
                let shared = crate::pki::shared_ca_dir()?;
                crate::pki::install_ca(&shared, &data_dir)?;
                shared.join("ca.crt")
            }
            PkiSource::Own => data_dir.join("pki/ca.crt"),
            PkiSource::From(other) => {
                crate::pki::install_ca(&other.join("pki"), &data_dir)?;
                data_dir.join("pki/ca.crt")
            }
        };
        let ready = data_dir.join(format!("ready-{}", uuid::Uuid::new_v4()));
        let log = data_dir.join(format!("coordinator-{}.log", uuid::Uuid::new_v4()));
        let mut cmd = Command::new(crate::binary("pgsnapman-coordinator"));
        cmd.env("RUST_LOG", "info,pgsnapman_coordinator=debug")
            .env(
                "PGSNAPMAN_SERVER__LISTEN",
                opts.listen.as_deref().unwrap_or("127.0.0.1:0"),
            )
            .env("PGSNAPMAN_SERVER__READY_FILE", &ready)
            .env("PGSNAPMAN_COORDINATOR__DATA_DIR", &data_dir);
        if let Some(url) = &opts.catalog_url {
            cmd.env("PGSNAPMAN_CATALOG__URL", url);
        }
        if opts.plaintext {
            cmd.env("PGSNAPMAN_SERVER__PLAINTEXT", "true");
        }
        for (k, v) in TEST_LEASE_ENV {
            cmd.env(k, v);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if let Some(cwd) = &opts.cwd {
            cmd.current_dir(cwd);
        }
        let mut process = Process::spawn("coordinator", cmd, log)?;
        // The embedded catalog runs initdb on first start: allow for it.
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && text.ends_with('\n')
            {
                break text.trim().to_string();
            }
            if !process.is_running() {
                bail!(
                    "coordinator exited before it was ready:\n{}",
                    logs::tail(process.log_path(), 40)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "coordinator not ready after 120s:\n{}",
                    logs::tail(process.log_path(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let token = match (read_admin_token(&data_dir)?, &opts.catalog_url) {
            (Some(t), Some(url)) => {
                known_tokens().insert(url.clone(), t.clone());
                Some(t)
            }
            // A second coordinator on a catalog that has an admin token
            // writes no file: it takes the token the first one wrote.
            (None, Some(url)) => known_tokens().get(url).cloned(),
            (t, None) => t,
        };
        Ok(Self {
            process,
            addr,
            data_dir,
            ca_file: (!opts.plaintext).then_some(ca_file),
            token,
            _dir: dir,
        })
    }

    /// `https://ADDR`, or `http://ADDR` when it serves plaintext.
    pub fn url(&self) -> String {
        match self.ca_file {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// URL, CA and admin token for `pgsnap` and workers.
    pub fn access(&self) -> Access {
        Access {
            ca_file: self.ca_file.clone(),
            ..Access::plain(self.url())
        }
        .with_token(self.token.clone())
    }

    /// `pgsnap` with this coordinator's access.
    pub fn cli(&self) -> crate::Pgsnap {
        crate::Pgsnap::new(self.access())
    }

    /// An AdminService client with the bootstrap admin token.
    pub async fn admin(&self) -> Result<AdminClient> {
        self.admin_with(self.token.as_deref()).await
    }

    /// An AdminService client sending `token` (any text; `None`: none).
    pub async fn admin_with(&self, token: Option<&str>) -> Result<AdminClient> {
        let channel = self.access().channel().await?;
        Ok(
            AdminServiceClient::with_interceptor(channel, Bearer::new(token)?)
                .max_decoding_message_size(pgsnapman_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(pgsnapman_proto::MAX_MESSAGE_BYTES),
        )
    }

    /// Enrolls worker `name` (registered already) the way a worker does: a
    /// token from the AdminService (admin client `admin`), a key pair made
    /// here, its CSR to `Enroll`. Returns (certificate PEM, key PEM).
    pub async fn enroll_worker(
        &self,
        admin: &mut AdminClient,
        name: &str,
    ) -> Result<(String, String)> {
        use pgsnapman_proto::v1;
        let token = admin
            .issue_enrollment_token(v1::WorkerRef {
                r#ref: Some(v1::worker_ref::Ref::Name(name.into())),
            })
            .await?
            .into_inner()
            .token;
        let key = rcgen::KeyPair::generate()?;
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)?
            .pem()?;
        let r = v1::worker_service_client::WorkerServiceClient::new(self.access().channel().await?)
            .enroll(v1::EnrollRequest {
                token,
                csr_pem: csr,
            })
            .await?
            .into_inner();
        Ok((r.certificate_pem, key.serialize_pem()))
    }

    /// Polls until the named worker is registered and connected.
    pub async fn wait_worker_connected(&self, name: &str) -> WorkerInfo {
        let name = name.to_string();
        crate::wait::until(
            &format!("worker {name} to connect to {}", self.addr),
            Duration::from_secs(60),
            || {
                let name = name.clone();
                async move {
                    let mut admin = self.admin().await.ok()?;
                    let workers = admin
                        .list_workers(ListWorkersRequest {})
                        .await
                        .ok()?
                        .into_inner()
                        .workers;
                    workers.into_iter().find(|w| w.name == name && w.connected)
                }
            },
        )
        .await
    }
}

/// The bootstrap admin token of each external catalog (by URL) that a
/// coordinator of this test process wrote.
fn known_tokens() -> std::sync::MutexGuard<'static, std::collections::HashMap<String, String>> {
    static TOKENS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, String>>,
    > = std::sync::OnceLock::new();
    TOKENS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The bootstrap admin token the coordinator wrote into its data directory
/// (`None` for a coordinator that does not write one).
pub fn read_admin_token(data_dir: &Path) -> Result<Option<String>> {
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    pub name: String,
    pub coordinator: Access,
    /// Data directory; default a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

pub struct Worker {
    pub process: Process,
    pub name: String,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Worker {
    /// Starts the worker; it connects on its own (use
    /// `Coordinator::wait_worker_connected`).
    pub fn start(opts: WorkerOptions) -> Result<Self> {
        let (dir, data_dir) = match &opts.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let dir = crate::shared_tempdir("pgsnapman-worker-");
                let data = dir.path().join("data");
                (Some(dir), data)
            }
        };
        std::fs::create_dir_all(&data_dir)?;
        let log = data_dir.join(format!("worker-{}.log", uuid::Uuid::new_v4()));
        let mut cmd = Command::new(crate::binary("pgsnapman-worker"));
        cmd.env("RUST_LOG", "info,pgsnapman_worker=debug")
            .env("PGSNAPMAN_WORKER__NAME", &opts.name)
            .env("PGSNAPMAN_WORKER__DATA_DIR", &data_dir)
            .env("PGSNAPMAN_COORDINATOR__URL", &opts.coordinator.url)
            .env_remove("PGSNAPMAN_COORDINATOR__CA_FILE")
            .env("PGSNAPMAN_COORDINATOR__BACKOFF_MAX", "1s")
            .env("PGSNAPMAN_DUMP__KILL_GRACE_PERIOD", "3s")
            // Scenarios that take several dumps of a job in one (simulated)
            // day count on finding them all; retention's own tests turn it on.
            .env("PGSNAPMAN_RETENTION__ENABLED", "false");
        if let Some(ca) = &opts.coordinator.ca_file {
            cmd.env("PGSNAPMAN_COORDINATOR__CA_FILE", ca);
        }
        if let Some(token) = enroll_token(&opts, &data_dir)? {
            cmd.env("PGSNAPMAN_COORDINATOR__ENROLL_TOKEN", token);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let process = Process::spawn(&format!("worker {}", opts.name), cmd, log)?;
        Ok(Self {
            process,
            name: opts.name,
            data_dir,
            _dir: dir,
        })
    }

    /// Runs `pgsnapman-worker store ARGS` on this worker's data directory
    /// (read-only; works while the worker runs) and returns its stdout.
    pub fn store_tool(&self, args: &[&str]) -> Result<String> {
        store_tool(&self.data_dir, args)
    }

    /// Uuids of the dumps in this worker's store.
    pub fn stored_dumps(&self) -> Result<Vec<String>> {
        Ok(self
            .store_tool(&["list"])?
            .lines()
            .filter_map(|l| l.split('\t').next())
            .map(str::to_string)
            .collect())
    }

    /// Writes every file of a stored dump into `to` (as pg_dump wrote them).
    pub fn extract(&self, dump_uuid: &str, to: &Path) -> Result<()> {
        let to = to.to_string_lossy().into_owned();
        self.store_tool(&["extract", dump_uuid, "--to", &to])?;
        Ok(())
    }
}

/// A fresh enrollment token for a worker that has no identity yet on a TLS
/// coordinator (plaintext coordinators identify workers by name). A worker
/// that is not registered, or a coordinator that cannot be reached, gets no
/// token: the worker then says why in its log.
fn enroll_token(opts: &WorkerOptions, data_dir: &Path) -> Result<Option<String>> {
    if opts.coordinator.ca_file.is_none() || data_dir.join("identity/worker.key").exists() {
        return Ok(None);
    }
    let pgsnap = crate::Pgsnap::new(opts.coordinator.clone());
    match pgsnap.json(&["worker", "enroll-token", &opts.name]) {
        Ok(v) => Ok(v["enrollment_token"].as_str().map(str::to_string)),
        Err(e) => {
            eprintln!("worker {}: no enrollment token: {e:#}", opts.name);
            Ok(None)
        }
    }
}

/// `pgsnapman-worker store --data-dir DIR ARGS`; fails with its stderr.
pub fn store_tool(data_dir: &Path, args: &[&str]) -> Result<String> {
    worker_tool(data_dir, "store", args)
}

/// `pgsnapman-worker COMMAND --data-dir DIR ARGS` (the offline commands:
/// `store`, `outbox`); fails with its stderr.
pub fn worker_tool(data_dir: &Path, command: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(crate::binary("pgsnapman-worker"))
        .arg(command)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .with_context(|| format!("run pgsnapman-worker {command}"))?;
    if !out.status.success() {
        bail!(
            "pgsnapman-worker {command} {args:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
