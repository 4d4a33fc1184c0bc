//! The store's pack and manifest operations that depend on the backend:
//! upload after seal, fetch into the bounded cache on a local miss, listing
//! and deleting in the bucket. On the local backend each is today's file
//! operation (or nothing).

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

use crate::error::StoreError;
use crate::pack::PackId;
use crate::shared::Inner;

/// Suffix of a pack being downloaded (`Store::open` removes leftovers, as
/// for `.pack.open`).
const FETCH_SUFFIX: &str = ".fetch.pack.open";

impl Inner {
    /// Opens a sealed pack for reading: the local file, else (S3) the
    /// object, downloaded into the cache first.
    pub(crate) fn open_pack(&self, id: PackId) -> Result<File, std::io::Error> {
        let path = self.pack_path(id);
        match File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.remote.is_some() => {
                match self.fetch_pack(id, true) {
                    Ok(Some(f)) => Ok(f),
                    Ok(None) => Err(e),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                }
            }
            other => other,
        }
    }

    /// Downloads a pack from the bucket. `keep`: into the cache under its
    /// sealed name; else into an unlinked file (verify reads the bucket's
    /// bytes, not the cache's). `None` if the bucket has no such object.
    pub(crate) fn fetch_pack(&self, id: PackId, keep: bool) -> Result<Option<File>, StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        let key = remote.key("packs", &id.sealed_name());
        let Some(bytes) = remote.get(&key)? else {
            return Ok(None);
        };
        let tmp = self.packs_dir.join(format!("{id}{FETCH_SUFFIX}"));
        let tmp = tmp_unique(&tmp);
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(StoreError::io(format!("create {}", tmp.display())))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .and_then(|()| f.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(StoreError::io(format!("write {}", tmp.display())))?;
        if keep {
            let path = self.pack_path(id);
            fs::rename(&tmp, &path).map_err(StoreError::io(format!(
                "rename {} to {}",
                tmp.display(),
                path.display()
            )))?;
            self.trim_cache(Some(id))?;
        } else {
            fs::remove_file(&tmp).map_err(StoreError::io(format!("remove {}", tmp.display())))?;
        }
        Ok(Some(f))
    }

    /// Uploads a just-sealed pack (S3); a no-op on the local backend.
    pub(crate) fn upload_pack(&self, id: PackId, len: u64) -> Result<(), StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let key = remote.key("packs", &id.sealed_name());
        remote.put_file(&key, &self.pack_path(id), len)?;
        Ok(())
    }

    /// Uploads a manifest before it is written locally (S3).
    pub(crate) fn upload_manifest(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        remote.put_bytes(&remote.key("manifests", name), bytes.to_vec())
    }

    /// Deletes a manifest's object (S3) before the local file goes.
    pub(crate) fn delete_remote_manifest(&self, path: &Path) -> Result<(), StoreError> {
        let (Some(remote), Some(name)) = (&self.remote, path.file_name().and_then(|n| n.to_str()))
        else {
            return Ok(());
        };
        remote.delete(&remote.key("manifests", name))
    }

    /// Deletes a pack: its object (S3) first, then the local file (which an
    /// S3 store may not have).
    pub(crate) fn remove_pack(&self, id: PackId) -> Result<(), StoreError> {
        if let Some(remote) = &self.remote {
            remote.delete(&remote.key("packs", &id.sealed_name()))?;
        }
        let path = self.pack_path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.remote.is_some() => Ok(()),
            r => r.map_err(StoreError::io(format!("remove pack {}", path.display()))),
        }
    }

    /// Sealed packs in the cache with their size and last use, oldest first.
    fn cached_packs(&self) -> Result<Vec<(SystemTime, PackId, u64)>, StoreError> {
        let dir = &self.packs_dir;
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(StoreError::io(format!("list {}", dir.display())))? {
            let entry = entry.map_err(StoreError::io(format!("list {}", dir.display())))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(PackId::from_sealed_name)
            else {
                continue;
            };
            let Ok(meta) = entry.metadata() else {
                continue; // evicted or collected meanwhile
            };
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push((used, id, meta.len()));
        }
        out.sort();
        Ok(out)
    }

    /// Bytes of sealed packs in the local cache (S3 stores).
    pub(crate) fn cache_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.cached_packs()?.iter().map(|(_, _, l)| l).sum())
    }

    /// Evicts the least recently written packs until the cache holds at most
    /// `cache_size` bytes (never `keep`, the pack just fetched, and never a
    /// pack the bucket does not hold at its full size). Open handles keep
    /// reading an evicted pack.
    pub(crate) fn trim_cache(&self, keep: Option<PackId>) -> Result<(), StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let limit = remote.config().cache_size;
        let packs = self.cached_packs()?;
        let mut total: u64 = packs.iter().map(|(_, _, l)| l).sum();
        for (_, id, len) in packs {
            if total <= limit {
                break;
            }
            if Some(id) == keep {
                continue;
            }
            let key = remote.key("packs", &id.sealed_name());
            if remote.head(&key)? != Some(len) {
                tracing::warn!(pack_id = %id, "cached pack is not in the bucket at its size; kept");
                continue;
            }
            let path = self.pack_path(id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("evict {}", path.display()))(e)),
            }
            total -= len;
        }
        Ok(())
    }
}

/// `path` with a random tail so that two readers can fetch the same pack.
fn tmp_unique(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s = {
        let name = s.to_string_lossy().into_owned();
        let stem = name.trim_end_matches(FETCH_SUFFIX);
        format!("{stem}.{}{FETCH_SUFFIX}", uuid::Uuid::new_v4().simple()).into()
    };
    s.into()
}
