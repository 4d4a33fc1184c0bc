//! Where sealed packs and manifests live: the local directory (default, the
//! layout of docs/store.md) or, in addition, an S3-compatible bucket
//! (`s3.rs`; docs/object-storage.md). The backend sees opaque bytes per
//! object: an encryption layer would wrap `put_*`/`get_*` here.

pub(crate) mod bucket;
mod packs;
mod s3;

use std::net::IpAddr;
use std::path::Path;

pub use s3::Remote;

use crate::error::StoreError;

/// Default bound of the local pack cache of an S3 store.
pub const DEFAULT_CACHE_SIZE: u64 = 1 << 30;
/// Largest pack uploaded in one PUT; larger ones go up in parts of this size.
pub const MULTIPART_PART_BYTES: usize = 16 << 20;

/// Which backend a store writes to.
#[derive(Clone, Debug, Default)]
pub enum BackendConfig {
    /// Packs and manifests in `<root>/packs` and `<root>/manifests` only.
    #[default]
    Local,
    /// Packs and manifests uploaded to a bucket; `packs/` is a bounded cache.
    S3(S3Config),
}

/// An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Garage, moto…).
#[derive(Clone, Default)]
pub struct S3Config {
    /// `http(s)://host:port`; empty for AWS itself.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Key prefix of this store's objects (`<prefix>/packs/…`).
    pub prefix: String,
    /// Empty: the AWS environment (AWS_ACCESS_KEY_ID, …) provides them.
    pub access_key_id: String,
    /// The secret itself (read from a 0600 file by the caller); never printed.
    pub secret_access_key: String,
    /// Plain HTTP, allowed only to a loopback endpoint.
    pub allow_http: bool,
    /// Bytes of sealed packs kept in `packs/` (the read cache).
    pub cache_size: u64,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("allow_http", &self.allow_http)
            .field("cache_size", &self.cache_size)
            .finish()
    }
}

impl S3Config {
    /// `s3 <endpoint> bucket/prefix`: for logs, stats and errors (no secret).
    pub fn location(&self) -> String {
        let endpoint = if self.endpoint.is_empty() {
            "aws"
        } else {
            &self.endpoint
        };
        format!("{endpoint} {}/{}", self.bucket, self.prefix)
    }

    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |detail: String| StoreError::Invalid {
            what: "store.s3",
            detail,
        };
        if self.bucket.is_empty() {
            return Err(bad("bucket is empty".into()));
        }
        if self.prefix.starts_with('/') || self.prefix.ends_with('/') || self.prefix.contains("//")
        {
            return Err(bad(format!(
                "prefix {:?} must not start or end with '/' nor hold '//'",
                cut(&self.prefix)
            )));
        }
        if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
            return Err(bad(
                "access_key_id and secret_access_key_file go together (or neither: the AWS environment)"
                    .into(),
            ));
        }
        if let Some(rest) = self.endpoint.strip_prefix("http://") {
            if !self.allow_http {
                return Err(bad(format!(
                    "endpoint {} is plain http: set allow_http (loopback only) or use https",
                    cut(&self.endpoint)
                )));
            }
            if !is_loopback_host(rest) {
                return Err(bad(format!(
                    "endpoint {}: allow_http is for loopback endpoints only",
                    cut(&self.endpoint)
                )));
            }
        } else if !self.endpoint.is_empty() && !self.endpoint.starts_with("https://") {
            return Err(bad(format!(
                "endpoint {} is not an http(s) URL",
                cut(&self.endpoint)
            )));
        }
        Ok(())
    }
}

/// True for `localhost`, `127.x.y.z` or `[::1]`, with an optional port/path.
fn is_loopback_host(rest: &str) -> bool {
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Marks `<root>` as the cache of an S3 store: tools that only know the
/// local directory refuse it (`refuse_if_in_bucket`).
const MARKER: &str = "BACKEND";

/// Records that the store at `root` keeps its packs in `cfg`'s bucket.
pub(crate) fn mark_in_bucket(root: &Path, cfg: &S3Config) -> Result<(), StoreError> {
    let path = root.join(MARKER);
    let line = format!("s3 {}\n", cfg.location());
    if std::fs::read_to_string(&path).is_ok_and(|s| s == line) {
        return Ok(());
    }
    crate::durable::write_atomic(&path, line.as_bytes())
}

/// Fails when the store at `root` keeps its packs in a bucket: `what` (a
/// tool reading `packs/` only) would see the cache, not the store. Rebuilding
/// the index from the cache would lose every evicted pack's chunks, and the
/// next gc would then delete those packs from the bucket.
pub fn refuse_if_in_bucket(root: &Path, what: &str) -> Result<(), StoreError> {
    match std::fs::read_to_string(root.join(MARKER)) {
        Ok(s) if s.starts_with("s3 ") => Err(StoreError::Invalid {
            what: "store",
            detail: format!(
                "the store at {} keeps its packs in a bucket ({}): cannot {what} from the local cache; a worker started without an index rebuilds it from the bucket (docs/object-storage.md)",
                root.display(),
                cut(s.trim_start_matches("s3 ").trim())
            ),
        }),
        _ => Ok(()),
    }
}

/// At most 200 characters of an outside value, for an error message.
pub(crate) fn cut(s: &str) -> String {
    const MAX: usize = 200;
    let s = &s.replace(['\n', '\r'], " ");
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// What `pgsnap store stats` shows about the backend.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendInfo {
    /// `local` or `s3`.
    pub kind: String,
    /// The directory, or `<endpoint> bucket/prefix`.
    pub location: String,
    /// Bytes of sealed packs in the local cache (s3 only).
    pub cache_bytes: u64,
    /// The cache bound (s3 only).
    pub cache_limit: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoint: &str, allow_http: bool) -> S3Config {
        S3Config {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            bucket: "b".into(),
            prefix: "w1".into(),
            allow_http,
            ..S3Config::default()
        }
    }

    #[test]
    fn plain_http_only_to_loopback_and_only_when_allowed() {
        assert!(cfg("http://127.0.0.1:9000", true).validate().is_ok());
        assert!(cfg("http://[::1]:9000", true).validate().is_ok());
        assert!(cfg("http://localhost:9000", true).validate().is_ok());
        let e = cfg("http://127.0.0.1:9000", false).validate().unwrap_err();
        assert!(e.to_string().contains("allow_http"), "{e}");
        let e = cfg("http://10.0.0.1:9000", true).validate().unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(cfg("https://s3.example.com", false).validate().is_ok());
        assert!(cfg("ftp://x", false).validate().is_err());
    }

    #[test]
    fn prefix_and_credentials_are_checked_and_the_secret_never_printed() {
        let mut c = cfg("", false);
        c.prefix = "/x".into();
        assert!(c.validate().is_err());
        c.prefix = "a/b".into();
        c.access_key_id = "AKID".into();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        c.secret_access_key = "very-secret-value".into();
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("very-secret-value"));
        assert_eq!(c.location(), "aws b/a/b");
    }
}
