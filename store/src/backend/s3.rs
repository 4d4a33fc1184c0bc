//! The bucket client of an S3 store (`object_store`'s AmazonS3, driven by a
//! private two-thread runtime so that the synchronous store can call it).
//! Every upload is checked with a HEAD (size) after it returns; errors name
//! the endpoint, bucket and key, never a credential.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig, WriteMultipart,
};

use super::{MULTIPART_PART_BYTES, S3Config, cut};
use crate::error::StoreError;

/// Parts of a multipart upload in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;
/// Ranged GETs of one pack in flight at once (`get_ranges` coalesces).
const DOWNLOAD_RANGE_BYTES: u64 = 8 << 20;

/// An open bucket + prefix.
pub struct Remote {
    cfg: S3Config,
    client: Arc<AmazonS3>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Opened to read another worker's prefix: every write or delete fails.
    read_only: bool,
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Dropping a runtime inside async code panics; this never blocks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Remote {
    /// Builds the client (no request is made). Credentials: the config's, or
    /// the AWS environment's (`AWS_ACCESS_KEY_ID`, …) when it has none.
    pub fn new(cfg: S3Config) -> Result<Remote, StoreError> {
        cfg.validate()?;
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_allow_http(cfg.allow_http)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: 5,
                retry_timeout: Duration::from_secs(60),
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(cfg.allow_http)
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(300)),
            );
        if !cfg.region.is_empty() {
            b = b.with_region(&cfg.region);
        }
        if !cfg.endpoint.is_empty() {
            b = b.with_endpoint(&cfg.endpoint);
        }
        if !cfg.access_key_id.is_empty() {
            b = b
                .with_access_key_id(&cfg.access_key_id)
                .with_secret_access_key(&cfg.secret_access_key);
        }
        let client = b.build().map_err(|e| StoreError::Remote {
            location: cfg.location(),
            op: "configure the client".into(),
            detail: cut(&e.to_string()),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("store-s3")
            .enable_all()
            .build()
            .map_err(StoreError::io("start the object store runtime"))?;
        Ok(Remote {
            cfg,
            client: Arc::new(client),
            runtime: Some(runtime),
            read_only: false,
        })
    }

    /// `new` for reading only: uploads and deletes fail before any request
    /// (a reader never changes another worker's prefix).
    pub fn new_read_only(cfg: S3Config) -> Result<Remote, StoreError> {
        let mut r = Remote::new(cfg)?;
        r.read_only = true;
        Ok(r)
    }

    /// Fails when this client was opened read-only.
    fn writable(&self, op: &str, key: &Key) -> Result<(), StoreError> {
        if self.read_only {
            return Err(self.err(
                format!("{op} {key}"),
                "refused: the bucket prefix is open read-only",
            ));
        }
        Ok(())
    }

    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// `<prefix>/<dir>/<name>`
    pub fn key(&self, dir: &str, name: &str) -> Key {
        if self.cfg.prefix.is_empty() {
            Key::from(format!("{dir}/{name}"))
        } else {
            Key::from(format!("{}/{dir}/{name}", self.cfg.prefix))
        }
    }

    fn err(&self, op: String, e: impl std::fmt::Display) -> StoreError {
        StoreError::Remote {
            location: self.cfg.location(),
            op,
            detail: cut(&e.to_string()),
        }
    }

    /// Runs `fut` on the private runtime and waits for it from this
    /// (synchronous) thread.
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let rt = self.runtime.as_ref().ok_or_else(|| StoreError::Invalid {
            what: "object store",
            detail: "the client is shut down".into(),
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| StoreError::Invalid {
            what: "object store",
            detail: "a request task ended without an answer".into(),
        })
    }

    /// Uploads the file at `path` (of `len` bytes) to `key` — in parts when
    /// larger than one part — and confirms with a HEAD that the object holds
    /// `len` bytes.
    pub fn put_file(&self, key: &Key, path: &Path, len: u64) -> Result<(), StoreError> {
        self.writable("upload", key)?;
        let op = || format!("upload {key}");
        let mut file =
            File::open(path).map_err(StoreError::io(format!("open {}", path.display())))?;
        if len <= MULTIPART_PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            file.read_to_end(&mut bytes)
                .map_err(StoreError::io(format!("read {}", path.display())))?;
            return self.put_bytes(key, bytes);
        }
        let client = Arc::clone(&self.client);
        let k = key.clone();
        let upload = self
            .run(async move { client.put_multipart(&k).await })?
            .map_err(|e| self.err(op(), e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
        let mut buf = vec![0u8; MULTIPART_PART_BYTES];
        loop {
            let n = read_full(&mut file, &mut buf)
                .map_err(StoreError::io(format!("read {}", path.display())))?;
            if n == 0 {
                break;
            }
            let part = bytes::Bytes::copy_from_slice(&buf[..n]);
            // `put` starts the part's upload as a task: inside the runtime.
            let (back, waited) = self.run(async move {
                w.put(part);
                let r = w.wait_for_capacity(UPLOAD_CONCURRENCY).await;
                (w, r)
            })?;
            w = back;
            if let Err(e) = waited {
                let _ = self.run(async move { w.abort().await });
                return Err(self.err(op(), e));
            }
        }
        self.run(async move { w.finish().await })?
            .map_err(|e| self.err(op(), e))?;
        self.confirm(key, len)
    }

    /// Uploads `bytes` in one PUT and confirms its size with a HEAD.
    pub fn put_bytes(&self, key: &Key, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.writable("upload", key)?;
        let len = bytes.len() as u64;
        let client = Arc::clone(&self.client);
        let k = key.clone();
        self.run(async move { client.put(&k, PutPayload::from(bytes)).await })?
            .map_err(|e| self.err(format!("upload {key}"), e))?;
        self.confirm(key, len)
    }

    fn confirm(&self, key: &Key, len: u64) -> Result<(), StoreError> {
        match self.head(key)? {
            Some(found) if found == len => Ok(()),
            Some(found) => Err(self.err(
                format!("confirm {key}"),
                format!("the bucket holds {found} bytes, {len} were uploaded"),
            )),
            None => Err(self.err(format!("confirm {key}"), "not found after upload")),
        }
    }

    /// The object's size, or `None` if it does not exist.
    pub fn head(&self, key: &Key) -> Result<Option<u64>, StoreError> {
        let client = Arc::clone(&self.client);
        let k = key.clone();
        match self.run(async move { client.head(&k).await })? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(format!("stat {key}"), e)),
        }
    }

    /// The whole object, fetched as ranged GETs of 8 MiB run concurrently.
    pub fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(len) = self.head(key)? else {
            return Ok(None);
        };
        let ranges: Vec<std::ops::Range<u64>> = (0..len)
            .step_by(DOWNLOAD_RANGE_BYTES as usize)
            .map(|s| s..(s + DOWNLOAD_RANGE_BYTES).min(len))
            .collect();
        let client = Arc::clone(&self.client);
        let k = key.clone();
        let parts = match self.run(async move { client.get_ranges(&k, &ranges).await })? {
            Ok(parts) => parts,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(format!("download {key}"), e)),
        };
        let mut out = Vec::with_capacity(len as usize);
        for p in parts {
            out.extend_from_slice(&p);
        }
        if out.len() as u64 != len {
            return Err(self.err(
                format!("download {key}"),
                format!("got {} of {len} bytes", out.len()),
            ));
        }
        Ok(Some(out))
    }

    /// Deletes an object; a missing one is not an error.
    pub fn delete(&self, key: &Key) -> Result<(), StoreError> {
        self.writable("delete", key)?;
        let client = Arc::clone(&self.client);
        let k = key.clone();
        match self.run(async move { client.delete(&k).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(format!("delete {key}"), e)),
        }
    }

    /// Every object under `<prefix>/<dir>/`: (file name, size).
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let client = Arc::clone(&self.client);
        let k = self.key(dir, "");
        let listed = k.clone();
        let metas = self
            .run(async move { client.list(Some(&k)).try_collect::<Vec<_>>().await })?
            .map_err(|e| self.err(format!("list {listed}"), e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| m.location.filename().map(|n| (n.to_string(), m.size)))
            .collect())
    }
}

/// By directory and name (`packs`, `<id>.pack`), for tools and tests.
impl Remote {
    pub fn get_object(&self, dir: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(&self.key(dir, name))
    }

    pub fn put_object(&self, dir: &str, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.put_bytes(&self.key(dir, name), bytes)
    }
}

/// Reads until `buf` is full or the end of the file; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
