//! `pgsnap cert …`: operator client certificates. `issue` makes the key pair
//! here (it never leaves this machine; written 0600 atomically) and sends a
//! CSR; `register` sends an existing certificate. Listing and revoking are
//! `token list` / `token revoke` (one name space).
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use pgsnapman_proto::model::validate_token_name;
use pgsnapman_proto::secret_file;
use pgsnapman_proto::v1;

use super::Ctx;
use crate::args::CertCommand;
use crate::client::rpc;
use crate::output::auth;

/// Largest certificate file `register` reads (the coordinator's limit).
const MAX_CERT_FILE_BYTES: u64 = 16 * 1024;

pub async fn run(ctx: &Ctx, cmd: CertCommand) -> Result<()> {
    match cmd {
        CertCommand::Issue {
            name,
            role,
            out,
            expires,
        } => {
            validate_token_name(&name)?;
            let expires_in_seconds = seconds(expires, Duration::from_secs(60))?;
            let files = Files::new(&out, &name)?;
            let (key_pem, csr_pem) = key_and_csr(&name)?;
            let mut admin = ctx.admin().await?;
            let issued = rpc(admin
                .issue_operator_certificate(v1::IssueOperatorCertificateRequest {
                    name,
                    role: role.to_proto() as i32,
                    csr_pem,
                    expires_in_seconds,
                })
                .await)?;
            let t = issued.token.clone().unwrap_or_default();
            files.write(&key_pem, &issued).with_context(|| {
                format!(
                    "certificate {} was issued but not saved: revoke it with `pgsnap token revoke {}`",
                    t.name, t.name
                )
            })?;
            let mut json = auth::token_json(&t);
            json["key_file"] = files.key.display().to_string().into();
            json["cert_file"] = files.cert.display().to_string().into();
            json["ca_file"] = files.ca.display().to_string().into();
            if ctx.out.is_json() {
                return ctx.out.object(json, Vec::new());
            }
            ctx.out.note(&format!(
                "issued certificate {} (role {}, SHA-256 {})\n  key  {} (0600, never sent)\n  cert {}\n  CA   {}\nuse it with: pgsnap --ca-file {} --cert-file {} --key-file {} …",
                t.name,
                auth::role_text(t.role),
                t.certificate_fingerprint,
                files.key.display(),
                files.cert.display(),
                files.ca.display(),
                files.ca.display(),
                files.cert.display(),
                files.key.display(),
            ))
        }
        CertCommand::Register {
            name,
            role,
            cert,
            expires,
        } => {
            validate_token_name(&name)?;
            let expires_in_seconds = seconds(expires, Duration::from_secs(1))?;
            let certificate_pem = read_cert(&cert)?;
            let mut admin = ctx.admin().await?;
            let t = rpc(admin
                .register_operator_certificate(v1::RegisterOperatorCertificateRequest {
                    name,
                    role: role.to_proto() as i32,
                    certificate_pem,
                    expires_in_seconds,
                })
                .await)?;
            ctx.out.changed(
                &format!(
                    "registered certificate {} (role {}, SHA-256 {})",
                    t.name,
                    auth::role_text(t.role),
                    t.certificate_fingerprint
                ),
                auth::token_json(&t),
                auth::tokens(std::slice::from_ref(&t)),
            )
        }
    }
}

/// `--expires` in seconds (0: the default), at least `min`.
fn seconds(expires: Option<Duration>, min: Duration) -> Result<u64> {
    match expires {
        None => Ok(0),
        Some(d) if d < min => Err(anyhow!(
            "--expires must be at least {}",
            humantime::format_duration(min)
        )),
        Some(d) => Ok(d.as_secs()),
    }
}

/// A new P-256 key (PEM) and a CSR for it naming `name`.
fn key_and_csr(name: &str) -> Result<(zeroize::Zeroizing<String>, String)> {
    let key = rcgen::KeyPair::generate().context("generate a key pair")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .context("make the certificate signing request")?
        .pem()
        .context("encode the certificate signing request")?;
    Ok((zeroize::Zeroizing::new(key.serialize_pem()), csr))
}

/// Where `issue` writes: OUT/NAME.key, OUT/NAME.crt, OUT/ca.crt.
struct Files {
    key: PathBuf,
    cert: PathBuf,
    ca: PathBuf,
}

impl Files {
    /// Makes OUT (0700) if missing; refuses to replace a key or certificate
    /// of that name (checked before anything is issued).
    fn new(out: &Path, name: &str) -> Result<Files> {
        secret_file::create_private_dir(out)?;
        let files = Files {
            key: out.join(format!("{name}.key")),
            cert: out.join(format!("{name}.crt")),
            ca: out.join("ca.crt"),
        };
        for f in [&files.key, &files.cert] {
            if f.exists() {
                bail!(
                    "{} exists already: choose another --out or name, or move it away",
                    f.display()
                );
            }
        }
        Ok(files)
    }

    /// Key 0600, certificates 0644, each atomically (tmp + rename).
    fn write(&self, key_pem: &str, issued: &v1::OperatorCertificate) -> Result<()> {
        secret_file::write_private(&self.key, key_pem.as_bytes())?;
        secret_file::write_atomic(&self.cert, issued.certificate_pem.as_bytes(), 0o644)?;
        secret_file::write_atomic(&self.ca, issued.ca_pem.as_bytes(), 0o644)?;
        Ok(())
    }
}

/// The certificate file for `register`, at most 16 KiB.
fn read_cert(path: &Path) -> Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("read --cert {}", path.display()))?;
    if meta.len() > MAX_CERT_FILE_BYTES {
        bail!(
            "--cert {} is {} bytes; a PEM certificate is at most {MAX_CERT_FILE_BYTES}",
            path.display(),
            meta.len()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("read --cert {}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| anyhow!("--cert {} is not PEM text", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keys_are_written_0600_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        let files = Files::new(&out, "alice").unwrap();
        let (key, csr) = key_and_csr("alice").unwrap();
        assert!(csr.contains("BEGIN CERTIFICATE REQUEST"));
        let issued = v1::OperatorCertificate {
            certificate_pem: "cert".into(),
            ca_pem: "ca".into(),
            ..Default::default()
        };
        files.write(&key, &issued).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(&files.cert), 0o644);
        let err = Files::new(&out, "alice").err().unwrap().to_string();
        assert!(err.contains("exists already"), "{err}");
        assert!(seconds(Some(Duration::from_secs(5)), Duration::from_secs(60)).is_err());
        assert_eq!(seconds(None, Duration::from_secs(60)).unwrap(), 0);
    }
}
