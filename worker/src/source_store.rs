//! Other workers' S3 stores this worker reads for restores it was granted
//! (`pgsnap worker set-restore-worker`): opened read-only with this
//! worker's own bucket credentials, each with its own cache under
//! `<data_dir>/sources/<worker>/`. Never writes or deletes an object.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pgsnapman_proto::v1::StoreLocation;
use pgsnapman_store::{S3Config, Store, StoreKey};

use crate::store_backend::S3Section;

/// Where this worker's own store keeps its packs (sent in Hello).
pub fn location_of(store: &Store) -> Option<StoreLocation> {
    Some(match store.bucket_config() {
        None => StoreLocation {
            kind: "local".into(),
            ..StoreLocation::default()
        },
        Some(c) => StoreLocation {
            kind: "s3".into(),
            endpoint: c.endpoint.clone(),
            region: c.region.clone(),
            bucket: c.bucket.clone(),
            prefix: c.prefix.clone(),
        },
    })
}

/// The read-only opens of other workers' bucket stores, kept open (one
/// RocksDB index each) and refreshed at every use.
pub struct SourceStores {
    root: PathBuf,
    /// This worker's `[store.s3]`: endpoint it may reach, credentials,
    /// `allow_http`, cache bound per source. `None`: no `[store.s3] bucket`
    /// configured, so no bucket is read.
    own: Option<S3Config>,
    open: Mutex<HashMap<String, Store>>,
}

impl SourceStores {
    /// `own`: this worker's `[store.s3]` with its secret read (or `None`).
    pub fn new(data_dir: &Path, own: Option<S3Config>) -> SourceStores {
        SourceStores {
            root: data_dir.join("sources"),
            own,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Reads `[store.s3]` for cross-worker reads: configured when it names a
    /// bucket (whatever this worker's own backend is).
    pub fn from_config(data_dir: &Path, s3: &S3Section, worker: &str) -> anyhow::Result<Self> {
        if s3.bucket.is_empty() {
            return Ok(SourceStores::new(data_dir, None));
        }
        let pgsnapman_store::BackendConfig::S3(cfg) =
            crate::store_backend::backend("s3", s3, worker, data_dir)?
        else {
            anyhow::bail!("store.s3 did not make an s3 backend");
        };
        Ok(SourceStores::new(data_dir, Some(cfg)))
    }

    /// The store of `worker` at `loc`, opened read-only (or refreshed). The
    /// error is one line naming the worker and what is missing. May block
    /// on the network for long (see `off_the_async_threads`).
    pub fn open(&self, worker: &str, loc: &StoreLocation) -> Result<Store, String> {
        off_the_async_threads(|| self.open_now(worker, loc))
    }

    fn open_now(&self, worker: &str, loc: &StoreLocation) -> Result<Store, String> {
        if loc.kind != "s3" {
            return Err(format!(
                "the dump is in the local store of worker {worker:?}, which this worker cannot read: \
                 add its data directory to restore.shared_stores"
            ));
        }
        let Some(own) = &self.own else {
            return Err(format!(
                "the dump is in worker {worker:?}'s bucket ({} {}/{}): this worker has no \
                 [store.s3] bucket credentials to read it with",
                endpoint_name(&loc.endpoint),
                loc.bucket,
                loc.prefix
            ));
        };
        if loc.endpoint != own.endpoint {
            return Err(format!(
                "the dump is in worker {worker:?}'s bucket at endpoint {}; this worker's \
                 store.s3.endpoint is {}: it reads buckets of its own endpoint only",
                endpoint_name(&loc.endpoint),
                endpoint_name(&own.endpoint)
            ));
        }
        if worker.is_empty() || worker.starts_with('.') || worker.contains('/') {
            return Err(format!(
                "worker name {worker:?} cannot name a cache directory"
            ));
        }
        let cfg = S3Config {
            region: if loc.region.is_empty() {
                own.region.clone()
            } else {
                loc.region.clone()
            },
            bucket: loc.bucket.clone(),
            prefix: loc.prefix.clone(),
            ..own.clone()
        };
        let what = || format!("worker {worker:?}'s bucket ({})", cfg.location());
        let cache = self.root.join(worker);
        let key_path = self.root.join(key_file_name(worker));
        let key = key_path
            .exists()
            .then(|| StoreKey::load(&key_path))
            .transpose()
            .map_err(|e| format!("cannot read {}: {e}", what()))?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = open.get(worker)
            && store.bucket_config().is_some_and(|c| same_place(c, &cfg))
            && store.key_id() == key.as_ref().map(StoreKey::id)
        {
            store
                .refresh_from_bucket()
                .map_err(|e| format!("cannot read {}: {e}", what()))?;
            check_key(&cache, &key_path, key.as_ref()).map_err(|e| format!("{}: {e}", what()))?;
            return Ok(store.clone());
        }
        open.remove(worker);
        let store = Store::open_bucket_read_only(&cache, cfg.clone(), key.as_ref())
            .map_err(|e| format!("cannot read {}: {e}", what()))?;
        check_key(&cache, &key_path, key.as_ref()).map_err(|e| format!("{}: {e}", what()))?;
        open.insert(worker.to_string(), store.clone());
        Ok(store)
    }
}

/// The file next to a source's cache directory (which may be deleted at
/// any time) that holds its owner's store key, for reading an encrypted
/// store: `pgsnapman-worker store key import --key-file
/// <data_dir>/sources/<worker>.key`.
pub fn key_file_name(worker: &str) -> String {
    format!("{worker}.key")
}

/// An encrypted source store needs its owner's key, and that key only: the
/// first sealed manifest copied from the bucket names the key it needs.
fn check_key(cache: &Path, path: &Path, key: Option<&StoreKey>) -> Result<(), String> {
    let sealed = pgsnapman_store::crypto::manifests_key_id(&cache.join("manifests"));
    let Some(needed) = sealed.ok().flatten() else {
        return Ok(());
    };
    match key {
        Some(k) if k.id() == needed => Ok(()),
        Some(k) => Err(format!(
            "encrypted with key {needed}, but {} holds key {} (wrong key file?)",
            path.display(),
            k.id()
        )),
        None => Err(format!(
            "encrypted with key {needed}: import that key on this worker with \
             `pgsnapman-worker store key import --key-file {}`",
            path.display()
        )),
    }
}

/// Runs `f`, which may block on the network for long (a first read of
/// another worker's bucket downloads its packs), without starving the
/// runtime's other tasks: on a multi-thread runtime the thread hands its
/// tasks to others first.
fn off_the_async_threads<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn same_place(a: &S3Config, b: &S3Config) -> bool {
    (&a.endpoint, &a.bucket, &a.prefix) == (&b.endpoint, &b.bucket, &b.prefix)
}

fn endpoint_name(e: &str) -> &str {
    if e.is_empty() { "aws" } else { e }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The refusal of `open`, which must refuse.
    fn refused(s: &SourceStores, worker: &str, l: &StoreLocation) -> String {
        s.open(worker, l).err().expect("a refusal")
    }

    fn loc(kind: &str, endpoint: &str) -> StoreLocation {
        StoreLocation {
            kind: kind.into(),
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            bucket: "b".into(),
            prefix: "w-a".into(),
        }
    }

    /// Each refusal is one line naming the worker and what is missing; no
    /// request is made and no directory is created.
    #[test]
    fn refusals_name_the_worker_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let none = SourceStores::new(dir.path(), None);
        let e = refused(&none, "w-a", &loc("s3", "http://127.0.0.1:9"));
        assert!(e.contains("\"w-a\"") && e.contains("no [store.s3]"), "{e}");
        let e = refused(&none, "w-a", &loc("local", ""));
        assert!(e.contains("restore.shared_stores"), "{e}");

        let own = S3Config {
            endpoint: "http://127.0.0.1:9".into(),
            region: "us-east-1".into(),
            bucket: "mine".into(),
            prefix: "w-b".into(),
            allow_http: true,
            ..S3Config::default()
        };
        let some = SourceStores::new(dir.path(), Some(own));
        let e = refused(&some, "w-a", &loc("s3", "https://elsewhere.example"));
        assert!(e.contains("its own endpoint only"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = refused(&some, "..", &loc("s3", "http://127.0.0.1:9"));
        assert!(e.contains("cache directory"), "{e}");
        assert!(!dir.path().join("sources").exists());
    }

    /// An encrypted source needs its owner's key: none, or another, is one
    /// line naming the key id needed and where to import it.
    #[test]
    fn an_encrypted_source_needs_its_owners_key() {
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        let path = dir.path().join(key_file_name("w-a"));
        assert!(check_key(dir.path(), &path, None).is_ok(), "a plain source");
        let key = StoreKey::generate();
        let dump = uuid::Uuid::now_v7();
        let sealed = pgsnapman_store::Crypto::new(&key)
            .seal_manifest(dump, b"plain")
            .unwrap();
        std::fs::write(manifests.join(format!("{dump}.manifest")), sealed).unwrap();

        let e = check_key(dir.path(), &path, None).unwrap_err();
        assert!(
            e.contains(key.id()) && e.contains("store key import"),
            "{e}"
        );
        assert!(e.contains("w-a.key") && !e.contains('\n'), "{e}");
        let other = StoreKey::generate();
        let e = check_key(dir.path(), &path, Some(&other)).unwrap_err();
        assert!(e.contains(key.id()) && e.contains(other.id()), "{e}");
        assert!(check_key(dir.path(), &path, Some(&key)).is_ok());
    }

    #[test]
    fn the_own_location_never_carries_a_credential() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            pgsnapman_store::Store::open(dir.path(), pgsnapman_store::StoreOptions::default())
                .unwrap();
        let l = location_of(&store).unwrap();
        assert_eq!(l.kind, "local");
        assert!(l.bucket.is_empty());
    }
}
