//! The worker's certificate identity under `<data_dir>/identity/` (0700):
//! `worker.key` (0600, made here and never sent anywhere), `worker.crt` and
//! `ca.crt` from the coordinator. Replaced as a set so that a crash never
//! leaves a key beside another key's certificate. No network here.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use pgsnapman_proto::secret_file;

pub const KEY_FILE: &str = "worker.key";
pub const CERT_FILE: &str = "worker.crt";
pub const CA_FILE: &str = "ca.crt";
/// Suffix of the files of a new identity while it is being put in place.
const NEXT: &str = ".next";

/// The enrollment token from the config or env; never printed.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct EnrollToken(pub String);

impl std::fmt::Debug for EnrollToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<none>"
        } else {
            "<redacted>"
        })
    }
}

/// A certificate identity read from disk.
#[derive(Clone)]
pub struct Identity {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    /// From the certificate.
    pub not_before: chrono::DateTime<chrono::Utc>,
    pub not_after: chrono::DateTime<chrono::Utc>,
    pub serial: String,
    /// When this worker stored it (the certificate file's mtime): the CA
    /// backdates not_before, so the validity counts from here.
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("identity")
}

fn next(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(NEXT);
    PathBuf::from(s)
}

/// A new key pair (ECDSA P-256) and a CSR naming the worker; the key stays
/// with the caller.
pub fn new_key_and_csr(worker_name: &str) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("generate a key pair")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, worker_name);
    let csr = params
        .serialize_request(&key)
        .context("make the certificate signing request")?;
    Ok((
        key.serialize_pem(),
        csr.pem()
            .context("encode the certificate signing request")?,
    ))
}

type Validity = (
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    String,
);

/// Validity and serial (lower-case hex) of a PEM certificate: the first
/// fields of its TBSCertificate (RFC 5280 4.1), read with a minimal DER
/// reader so that the worker needs no X.509 library.
fn describe(cert_pem: &str) -> Result<Validity> {
    let body: String = cert_pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body.trim())
        .map_err(|_| anyhow!("not a PEM certificate"))?;
    read_validity(&der).ok_or_else(|| anyhow!("not an X.509 certificate"))
}

/// One DER element: (tag, contents, the bytes after it).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn read_validity(der: &[u8]) -> Option<Validity> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let (mut tag, mut value, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        // [0] version
        (tag, value, rest) = tlv(rest)?;
    }
    if tag != 0x02 {
        return None;
    }
    let serial = value.iter().map(|b| format!("{b:02x}")).collect();
    let (_signature, _, rest) = tlv(rest)?;
    let (_issuer, _, rest) = tlv(rest)?;
    let (SEQUENCE, validity, _) = tlv(rest)? else {
        return None;
    };
    let (t1, v1, rest) = tlv(validity)?;
    let (t2, v2, _) = tlv(rest)?;
    Some((asn1_time(t1, v1)?, asn1_time(t2, v2)?, serial))
}

/// UTCTime (YYMMDDHHMMSSZ, 1950-2049) or GeneralizedTime (YYYYMMDDHHMMSSZ).
fn asn1_time(tag: u8, v: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let text = std::str::from_utf8(v).ok()?;
    let full = match tag {
        0x17 => {
            let yy: u32 = text.get(..2)?.parse().ok()?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        0x18 => text.to_string(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Finishes a replacement a crash interrupted: once the key was renamed,
/// the rest follow; before that, the half-written new set is dropped.
fn recover(dir: &Path) -> Result<()> {
    let key = dir.join(KEY_FILE);
    if next(&key).exists() {
        for f in [KEY_FILE, CERT_FILE, CA_FILE] {
            let _ = std::fs::remove_file(next(&dir.join(f)));
        }
        return Ok(());
    }
    for f in [CERT_FILE, CA_FILE] {
        let p = dir.join(f);
        if next(&p).exists() {
            std::fs::rename(next(&p), &p)
                .with_context(|| format!("finish replacing {}", p.display()))?;
        }
    }
    Ok(())
}

/// The identity on disk; `None` if the worker has not enrolled.
pub fn load(data_dir: &Path) -> Result<Option<Identity>> {
    let dir = dir(data_dir);
    recover(&dir)?;
    let key_path = dir.join(KEY_FILE);
    if !key_path.exists() {
        return Ok(None);
    }
    let key = secret_file::read_private(&key_path)?;
    let key_pem =
        String::from_utf8(key).map_err(|_| anyhow!("{} is not PEM", key_path.display()))?;
    let read = |f: &str| {
        let p = dir.join(f);
        std::fs::read_to_string(&p).with_context(|| format!("read {}", p.display()))
    };
    let cert_pem = read(CERT_FILE)?;
    let ca_pem = read(CA_FILE)?;
    let (not_before, not_after, serial) =
        describe(&cert_pem).with_context(|| format!("{}", dir.join(CERT_FILE).display()))?;
    let received_at = std::fs::metadata(dir.join(CERT_FILE))
        .and_then(|m| m.modified())
        .map(chrono::DateTime::<chrono::Utc>::from)
        .unwrap_or(not_before);
    Ok(Some(Identity {
        key_pem,
        cert_pem,
        ca_pem,
        not_before,
        not_after,
        serial,
        received_at,
    }))
}

/// Puts a new identity in place: each file is written beside its old one
/// (`.next`, fsynced), then renamed key first. `recover` completes or drops
/// an interrupted replacement.
pub fn save(data_dir: &Path, key_pem: &str, cert_pem: &str, ca_pem: &str) -> Result<Identity> {
    let (not_before, not_after, serial) =
        describe(cert_pem).context("the certificate the coordinator sent")?;
    describe(ca_pem).context("the CA certificate the coordinator sent")?;
    let dir = dir(data_dir);
    secret_file::create_private_dir(&dir)?;
    let key = dir.join(KEY_FILE);
    let cert = dir.join(CERT_FILE);
    let ca = dir.join(CA_FILE);
    secret_file::write_atomic(&next(&cert), cert_pem.as_bytes(), 0o644)?;
    secret_file::write_atomic(&next(&ca), ca_pem.as_bytes(), 0o644)?;
    // Written last: while it exists, nothing was renamed yet.
    secret_file::write_private(&next(&key), key_pem.as_bytes())?;
    std::fs::rename(next(&key), &key).with_context(|| format!("rename into {}", key.display()))?;
    for p in [&cert, &ca] {
        std::fs::rename(next(p), p).with_context(|| format!("rename into {}", p.display()))?;
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))?;
    Ok(Identity {
        key_pem: key_pem.to_string(),
        cert_pem: cert_pem.to_string(),
        ca_pem: ca_pem.to_string(),
        not_before,
        not_after,
        serial,
        received_at: chrono::Utc::now(),
    })
}

impl Identity {
    /// Time left before the certificate expires (zero once expired).
    pub fn remaining(&self, now: chrono::DateTime<chrono::Utc>) -> Duration {
        (self.not_after - now).to_std().unwrap_or_default()
    }

    /// The validity this worker got: from when it received the certificate
    /// (or its not_before, if later) to its not_after.
    fn validity(&self) -> Duration {
        let from = self.not_before.max(self.received_at);
        (self.not_after - from).to_std().unwrap_or_default()
    }

    /// Renew when less than a third of the validity remains.
    pub fn needs_renewal(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.remaining(now) < self.validity() / 3
    }

    /// How often to look at `needs_renewal`: a twentieth of the validity,
    /// between 1 s and 1 h.
    pub fn check_interval(&self) -> Duration {
        (self.validity() / 20).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }
}

/// The worker name a certificate names must be this worker's.
pub fn check_name(expected: &str, got: &str) -> Result<()> {
    if expected != got {
        bail!(
            "the coordinator issued a certificate for worker {got:?}, but this worker is {expected:?}: the enrollment token was issued for another worker"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str, days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(days);
        let c = p.self_signed(&key).unwrap();
        (key.serialize_pem(), c.pem())
    }

    #[test]
    fn a_csr_is_made_with_a_fresh_key() {
        let (k1, csr) = new_key_and_csr("w1").unwrap();
        let (k2, _) = new_key_and_csr("w1").unwrap();
        assert_ne!(k1, k2);
        assert!(csr.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(!csr.contains("PRIVATE KEY"));
    }

    #[test]
    fn save_then_load_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).unwrap().is_none());
        let (key, cert) = self_signed("w", 30);
        let (_, ca) = self_signed("ca", 300);
        let saved = save(d.path(), &key, &cert, &ca).unwrap();
        let loaded = load(d.path()).unwrap().unwrap();
        assert_eq!(loaded.serial, saved.serial);
        assert_eq!(loaded.key_pem, key);
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir(d.path()).join(KEY_FILE)), 0o600);
        assert_eq!(mode(dir(d.path())), 0o700);
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
    }

    #[test]
    fn an_interrupted_replacement_rolls_forward_or_back() {
        let d = tempfile::tempdir().unwrap();
        let (key, cert) = self_signed("w", 30);
        let (_, ca) = self_signed("ca", 300);
        save(d.path(), &key, &cert, &ca).unwrap();
        let dir = dir(d.path());
        // Crash before the key was renamed: the old identity stays.
        let (key2, cert2) = self_signed("w", 31);
        std::fs::write(next(&dir.join(CERT_FILE)), &cert2).unwrap();
        std::fs::write(next(&dir.join(KEY_FILE)), &key2).unwrap();
        assert_eq!(load(d.path()).unwrap().unwrap().key_pem, key);
        assert!(!next(&dir.join(CERT_FILE)).exists());
        // Crash after the key was renamed: the certificate follows.
        std::fs::write(next(&dir.join(CERT_FILE)), &cert2).unwrap();
        std::fs::write(dir.join(KEY_FILE), &key2).unwrap();
        let id = load(d.path()).unwrap().unwrap();
        assert_eq!((id.key_pem, id.cert_pem), (key2, cert2));
    }

    #[test]
    fn validity_and_serial_are_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["w".to_string()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2021, 3, 4);
        p.not_after = rcgen::date_time_ymd(2051, 5, 6);
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x12, 0x34]));
        let pem = p.self_signed(&key).unwrap().pem();
        let (from, to, serial) = describe(&pem).unwrap();
        assert_eq!(from.to_rfc3339(), "2021-03-04T00:00:00+00:00");
        assert_eq!(
            to.to_rfc3339(),
            "2051-05-06T00:00:00+00:00",
            "GeneralizedTime after 2049"
        );
        assert_eq!(serial, "1234");
        assert!(describe("garbage").is_err());
        let truncated: String = pem.lines().take(4).collect::<Vec<_>>().join("\n");
        assert!(describe(&truncated).is_err());
    }

    #[test]
    fn renewal_starts_with_a_third_left() {
        let (key, cert) = self_signed("w", 29);
        let (_, ca) = self_signed("ca", 300);
        let d = tempfile::tempdir().unwrap();
        let id = save(d.path(), &key, &cert, &ca).unwrap();
        let now = chrono::Utc::now();
        assert!(!id.needs_renewal(now));
        assert!(id.needs_renewal(now + chrono::Duration::days(20)));
        assert_eq!(id.check_interval(), Duration::from_secs(3600));
        assert!(check_name("a", "b").is_err());
        // A short certificate backdated by an hour (as the CA does) counts
        // from when it was received, not from its not_before.
        let short = Identity {
            not_before: now - chrono::Duration::hours(1),
            not_after: now + chrono::Duration::seconds(90),
            received_at: now,
            ..id
        };
        assert!(!short.needs_renewal(now));
        assert!(!short.needs_renewal(now + chrono::Duration::seconds(59)));
        assert!(short.needs_renewal(now + chrono::Duration::seconds(61)));
        assert_eq!(short.check_interval(), Duration::from_millis(4500));
    }
}
