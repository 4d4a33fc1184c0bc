//! Webhook delivery: one POST of the JSON payload, signed with HMAC-SHA256
//! over `<unix seconds>.<body>` in the `X-Pgsnapman-Signature` header
//! (docs/alerts.md). Errors name the URL without credentials, never the key.
use std::time::Duration;

use hmac::{Hmac, Mac};
use pgsnapman_proto::redact_url;
use sha2::Sha256;

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "X-Pgsnapman-Signature";
/// The delivery id, stable across retries (receivers dedupe on it).
pub const DELIVERY_HEADER: &str = "X-Pgsnapman-Delivery";
/// Longest response body read (for the error text only).
const MAX_ERROR_BODY: usize = 200;

/// `t=<timestamp>,v1=<hex of HMAC-SHA256(key, "<timestamp>.<body>")>`.
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length: new_from_slice cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={hex}")
}

/// Checks a webhook URL: https, or http to a loopback address only.
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("webhook URL {} is not a URL: {e}", redact_url(url)))?;
    let host = parsed.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "webhook URL {} is plain http to a remote host: use https (http is accepted for loopback receivers only)",
                redact_url(url)
            ));
        }
        s => {
            return Err(format!(
                "webhook URL {} has scheme {s:?}: use https",
                redact_url(url)
            ));
        }
    }
    if host.is_empty() {
        return Err(format!("webhook URL {} names no host", redact_url(url)));
    }
    Ok(parsed)
}

/// One HTTP client for every webhook (connection reuse), with the timeout,
/// trusting the web PKI roots and the certificates of `ca_pem`.
pub fn client(timeout: Duration, ca_pem: Option<&[u8]>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder();
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| anyhow::anyhow!("notify.ca_file: {e}"))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pgsnapman/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("build the webhook HTTP client: {e}"))
}

/// POSTs `body` to `url`; `Ok` with "HTTP <status>" on a 2xx answer.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    key: &[u8],
    delivery_id: i64,
    body: &[u8],
) -> Result<String, String> {
    let parsed = check_url(url)?;
    let now = chrono::Utc::now().timestamp();
    let resp = client
        .post(parsed)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(key, now, body))
        .header(DELIVERY_HEADER, delivery_id.to_string())
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| {
            // reqwest's error names the URL; it may carry user:password.
            let e = e.without_url();
            format!("POST {}: {}", redact_url(url), error_chain(&e))
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(format!("HTTP {}", status.as_u16()));
    }
    let text = resp.text().await.unwrap_or_default();
    let cut: String = text.chars().take(MAX_ERROR_BODY).collect();
    let ellipsis = if cut.len() < text.len() { "…" } else { "" };
    Err(format!(
        "POST {}: HTTP {}{}",
        redact_url(url),
        status.as_u16(),
        if cut.trim().is_empty() {
            String::new()
        } else {
            format!(": {}{ellipsis}", cut.trim())
        }
    ))
}

/// The error and its sources on one line (reqwest hides the cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of docs/alerts.md, computed independently with
    /// `printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac k3y`.
    #[test]
    fn signature_matches_the_documented_example() {
        let s = signature(b"k3y", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            s,
            "t=1700000000,v1=fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a"
        );
    }

    #[test]
    fn urls_must_be_https_unless_loopback() {
        assert!(check_url("https://hooks.example.com/x").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        let e = check_url("http://user:pw@hooks.example.com/x").unwrap_err();
        assert!(e.contains("https") && !e.contains("pw@"), "{e}");
        assert!(check_url("ftp://x/").unwrap_err().contains("ftp"));
        assert!(check_url("not a url").is_err());
    }
}
