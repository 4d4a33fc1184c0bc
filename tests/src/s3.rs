//! A real S3-protocol server for the object-storage tests: moto's server mode
//! (PyPI `moto[server]`, in the test venv `deploy/python-env.sh` builds) on a
//! free loopback port, one bucket created, killed when dropped. Tests look at
//! and damage objects through the store's own client (`client`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::service::Process;

/// The bucket every test server creates.
pub const BUCKET: &str = "pgsnapman-test";
/// Credentials the tests configure (moto checks none).
pub const ACCESS_KEY_ID: &str = "AKIATESTPGSNAPMAN";
pub const SECRET_ACCESS_KEY: &str = "test-secret-never-logged-0123456789";

pub struct S3Server {
    pub process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts moto on a free loopback port and creates [`BUCKET`].
    pub fn start() -> Result<S3Server> {
        let python = std::env::var_os("PGSNAPMAN_TEST_PYTHON").context(
            "PGSNAPMAN_TEST_PYTHON is unset: source deploy/python-env.sh (test.sh does)",
        )?;
        let dir = crate::shared_tempdir("pgsnapman-s3-");
        let port = crate::cluster::free_port()?;
        let mut cmd = Command::new(python);
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .current_dir(dir.path());
        let process = Process::spawn("moto", cmd, dir.path().join("moto.log"))?;
        let server = S3Server {
            process,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((status, _)) = server.http("PUT", &format!("/{BUCKET}"), &[]) {
                if status == 200 {
                    return Ok(server);
                }
                bail!("moto answered {status} to creating bucket {BUCKET}");
            }
            if Instant::now() > deadline {
                bail!(
                    "moto did not start within 60s\n{}",
                    crate::logs::tail(server.process.log_path(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The store backend of a store under `prefix` (cache bound `cache_size`).
    pub fn store_config(&self, prefix: &str, cache_size: u64) -> pgsnapman_store::BackendConfig {
        pgsnapman_store::BackendConfig::S3(pgsnapman_store::S3Config {
            endpoint: self.endpoint(),
            region: "us-east-1".into(),
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: SECRET_ACCESS_KEY.into(),
            allow_http: true,
            cache_size,
        })
    }

    /// Worker environment for `[store] backend = "s3"` against `endpoint`
    /// (this server's, or a proxy's in front of it); the secret goes to a
    /// 0600 file in `dir`.
    pub fn worker_env(
        endpoint: &str,
        prefix: &str,
        dir: &std::path::Path,
    ) -> Vec<(String, String)> {
        use std::os::unix::fs::PermissionsExt;
        let secret: PathBuf = dir.join("s3-secret");
        std::fs::write(&secret, format!("{SECRET_ACCESS_KEY}\n")).expect("write the secret file");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the secret file");
        [
            ("PGSNAPMAN_STORE__BACKEND", "s3".to_string()),
            ("PGSNAPMAN_STORE__S3__ENDPOINT", endpoint.to_string()),
            ("PGSNAPMAN_STORE__S3__BUCKET", BUCKET.to_string()),
            ("PGSNAPMAN_STORE__S3__PREFIX", prefix.to_string()),
            ("PGSNAPMAN_STORE__S3__ALLOW_HTTP", "true".to_string()),
            (
                "PGSNAPMAN_STORE__S3__ACCESS_KEY_ID",
                ACCESS_KEY_ID.to_string(),
            ),
            (
                "PGSNAPMAN_STORE__S3__SECRET_ACCESS_KEY_FILE",
                secret.display().to_string(),
            ),
            // Every read after the dump comes from the bucket.
            ("PGSNAPMAN_STORE__S3__CACHE_SIZE", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A client of the bucket under `prefix` (the store's own).
    pub fn client(&self, prefix: &str) -> Result<pgsnapman_store::backend::Remote> {
        let pgsnapman_store::BackendConfig::S3(cfg) = self.store_config(prefix, 0) else {
            bail!("not an s3 backend");
        };
        pgsnapman_store::backend::Remote::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The objects in `<prefix>/<dir>/`: (name, size).
    pub fn list(&self, prefix: &str, dir: &str) -> Result<Vec<(String, u64)>> {
        self.client(prefix)?
            .list(dir)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn get(&self, prefix: &str, dir: &str, name: &str) -> Result<Vec<u8>> {
        self.client(prefix)?
            .get_object(dir, name)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_context(|| format!("no object {prefix}/{dir}/{name}"))
    }

    pub fn put(&self, prefix: &str, dir: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.client(prefix)?
            .put_object(dir, name, bytes)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// One unsigned HTTP/1.1 request; (status, body).
    fn http(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        )?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .context("HTTP response without a header end")?;
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("HTTP response without a status")?;
        Ok((status, resp[split + 4..].to_vec()))
    }
}
