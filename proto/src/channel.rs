//! The client side of the link, shared by `pgsnap` and the worker: a tonic
//! endpoint for a coordinator URL with TLS (the operator's CA file or the
//! system roots, an optional client certificate), and the translation of
//! connection failures into one line naming the URL and the reason.
use std::net::IpAddr;
use std::path::PathBuf;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

/// How a client authenticates the coordinator (and itself) over TLS.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// PEM CA bundle the server certificate must chain to; `None`: the
    /// system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and its key, PEM (both or neither).
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_file", &self.ca_file)
            .field("client_certificate", &self.cert_pem.is_some())
            .finish()
    }
}

/// A connection that could not be set up: `coordinator at URL: reason`.
#[derive(Debug, thiserror::Error)]
#[error("coordinator at {url}: {reason}")]
pub struct ChannelError {
    pub url: String,
    pub reason: String,
}

fn fail(url: &str, reason: impl Into<String>) -> ChannelError {
    ChannelError {
        url: crate::model::excerpt(url).replace(['\n', '\r'], " "),
        reason: reason.into(),
    }
}

/// Checks that `url` is an `http(s)://host:port` URL and refuses `http://`
/// to a host that is not loopback: a token or a worker's tasks would cross
/// the network in clear.
pub fn check_url(url: &str) -> Result<Uri, ChannelError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| fail(url, format!("not a valid URL ({e})")))?;
    let host = uri
        .host()
        .ok_or_else(|| fail(url, "the URL names no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(fail(
            url,
            format!(
                "refusing http:// to {host}, which is not a loopback address: credentials and tasks would cross the network in clear; use https://"
            ),
        )),
        _ => Err(fail(
            url,
            "the URL must start with https:// (or http:// on loopback)",
        )),
    }
}

/// Most coordinator URLs a client takes: a longer list is a mistake (a
/// fleet's coordinators go behind DNS or a load balancer instead).
pub const MAX_COORDINATOR_URLS: usize = 16;

/// A list of coordinator URLs from config or flags: entries separated by
/// commas (and blanks) are split, each is checked with `check_url`, and the
/// list must be non-empty, without duplicates and at most
/// `MAX_COORDINATOR_URLS` long. The order is kept: clients try them in turn.
pub fn url_list<S: AsRef<str>>(entries: &[S]) -> Result<Vec<String>, ChannelError> {
    let mut urls: Vec<String> = Vec::new();
    for entry in entries {
        for url in entry
            .as_ref()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|u| !u.is_empty())
        {
            check_url(url)?;
            if urls.iter().any(|u| u == url) {
                return Err(fail(url, "listed twice among the coordinator URLs"));
            }
            urls.push(url.to_string());
            if urls.len() > MAX_COORDINATOR_URLS {
                return Err(fail(
                    url,
                    format!(
                        "more than {MAX_COORDINATOR_URLS} coordinator URLs; put them behind one DNS name instead"
                    ),
                ));
            }
        }
    }
    if urls.is_empty() {
        return Err(fail("", "no coordinator URL given"));
    }
    Ok(urls)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// An endpoint for `url` with TLS set up for `https://`; the caller adds
/// its timeouts and keepalives, then calls `connect`.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, ChannelError> {
    let uri = check_url(url)?;
    let endpoint = Endpoint::from(uri.clone());
    if uri.scheme_str() != Some("https") {
        return Ok(endpoint);
    }
    let host = uri.host().unwrap_or_default();
    let mut config =
        ClientTlsConfig::new().domain_name(host.trim_start_matches('[').trim_end_matches(']'));
    config = match &tls.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                fail(
                    url,
                    format!("cannot read the CA file {}: {e}", path.display()),
                )
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(fail(
                    url,
                    format!("the CA file {} holds no PEM certificate", path.display()),
                ));
            }
            config.ca_certificate(Certificate::from_pem(pem))
        }
        None => config.with_native_roots(),
    };
    match (&tls.cert_pem, &tls.key_pem) {
        (Some(cert), Some(key)) => config = config.identity(Identity::from_pem(cert, key)),
        (None, None) => {}
        _ => {
            return Err(fail(
                url,
                "a client certificate needs both the certificate and its key",
            ));
        }
    }
    endpoint
        .tls_config(config)
        .map_err(|e| fail(url, format!("TLS set-up: {}", reason_of(&e))))
}

/// Connects `endpoint` (built by `endpoint` for `url`) now, so that a
/// failure is reported once, up front, in one line.
pub async fn connect(url: &str, endpoint: Endpoint) -> Result<Channel, ChannelError> {
    if endpoint.uri().scheme_str() == Some("http") && speaks_tls(endpoint.uri()).await {
        return Err(fail(
            url,
            format!(
                "the coordinator speaks TLS: use https://{}",
                endpoint
                    .uri()
                    .authority()
                    .map(|a| a.as_str())
                    .unwrap_or_default()
            ),
        ));
    }
    endpoint
        .connect()
        .await
        .map_err(|e| fail(url, reason_of(&e)))
}

/// Whether the server at a plaintext URL answers an HTTP/2 preface with a
/// TLS alert record (type 21, version 3.x). An HTTP/2 client would only see
/// its first call fail with an opaque protocol error, so `connect` asks
/// first. Any other answer (or none within `PROBE_TIMEOUT`) is left to the
/// real connection to report.
async fn speaks_tls(uri: &Uri) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let probe = async {
        let mut s = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        s.write_all(PREFACE).await.ok()?;
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await.ok()?;
        Some(head[0] == 21 && head[1] == 3)
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// How long the plaintext probe waits for the server's first bytes.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The one-line reason for a failed call's status when the connection
/// itself was the problem (a TLS alert after the handshake, e.g. a client
/// certificate refused under TLS 1.3); `None` for an ordinary status.
pub fn status_reason(status: &tonic::Status) -> Option<String> {
    use std::error::Error;
    let mut cause: Option<&(dyn Error + 'static)> = status.source();
    while let Some(e) = cause {
        if let Some(r) = known_reason(e) {
            return Some(r);
        }
        cause = e.source();
    }
    None
}

/// Whether a call failed in the transport (the connection broke) rather
/// than with a status the server sent.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error;
    status
        .source()
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
}

/// Walks an error's chain (including errors wrapped in `io::Error`) for a
/// cause we can explain; else the chain on one line.
fn reason_of(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(r) = known_reason(e) {
            return r;
        }
        let text = e.to_string().replace('\n', " ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

fn known_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(tls_reason(r));
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>()
        && let Some(inner) = io.get_ref()
        && let Some(r) = inner.downcast_ref::<rustls::Error>()
    {
        return Some(tls_reason(r));
    }
    None
}

const ASK_FOR_CA: &str = "give the coordinator's CA (<data_dir>/pki/ca.crt on the coordinator) with --ca-file, PGSNAPMAN_CA_FILE or coordinator.ca_file";

fn tls_reason(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "the server's certificate is not signed by a CA we trust (self-signed or another CA); {ASK_FOR_CA}"
        ),
        E::InvalidCertificate(C::NotValidForName) => {
            "the server's certificate is not valid for this host name; use a name from the coordinator's server.names".into()
        }
        E::InvalidCertificate(C::NotValidForNameContext { expected, presented }) => format!(
            "the server's certificate is not valid for {expected:?} (it names {}); use one of those or add the name to the coordinator's server.names",
            presented.join(", ")
        ),
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the server's certificate has expired".into()
        }
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet (check the clocks)".into()
        }
        E::InvalidCertificate(other) => format!("the server's certificate is invalid: {other:?}"),
        E::InvalidMessage(_) => {
            "the server does not speak TLS (a plaintext port?): use http:// for a coordinator started with server.plaintext, on loopback only".into()
        }
        E::AlertReceived(A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::CertificateRevoked | A::CertificateExpired | A::AccessDenied) => {
            "the coordinator refused our client certificate".into()
        }
        E::AlertReceived(A::CertificateRequired) => {
            "the coordinator requires a client certificate".into()
        }
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_lists_split_check_and_refuse_duplicates() {
        let urls = url_list(&["https://a:7431, https://b:7431", "https://c:1"]).unwrap();
        assert_eq!(urls, ["https://a:7431", "https://b:7431", "https://c:1"]);
        let err = url_list(&["https://a:1,https://a:1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("https://a:1") && err.contains("twice"),
            "{err}"
        );
        let err = url_list(&["https://a:1,http://db.example:1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("http://db.example:1"), "{err}");
        assert!(url_list::<&str>(&[]).is_err());
        assert!(url_list(&[" , "]).is_err());
        let many: Vec<String> = (0..=MAX_COORDINATOR_URLS)
            .map(|i| format!("https://h{i}:1"))
            .collect();
        let err = url_list(&many).unwrap_err().to_string();
        assert!(err.contains("more than 16"), "{err}");
    }

    #[test]
    fn http_is_refused_off_loopback_only() {
        for ok in [
            "https://coord.example:7431",
            "http://127.0.0.1:7431",
            "http://localhost:7431",
            "http://[::1]:7431",
            "http://127.8.0.1:1",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        let err = check_url("http://10.0.0.5:7431").unwrap_err().to_string();
        assert!(
            err.starts_with("coordinator at http://10.0.0.5:7431: refusing http:// to 10.0.0.5"),
            "{err}"
        );
        for bad in [
            "ftp://x:1",
            "127.0.0.1:7431",
            "https://",
            "not a url at all",
        ] {
            let err = check_url(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let tls = ClientTls {
            cert_pem: Some("x".into()),
            ..ClientTls::default()
        };
        let err = endpoint("https://127.0.0.1:1", &tls)
            .unwrap_err()
            .to_string();
        assert!(err.contains("both the certificate and its key"), "{err}");
        assert!(!format!("{tls:?}").contains('x'), "no PEM in Debug");
    }
}
