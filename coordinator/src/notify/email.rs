//! E-mail delivery over SMTP (lettre): STARTTLS or implicit TLS through
//! rustls to a relay, optional login; plain SMTP only to a loopback relay.
//! Errors name the relay and the reason, never the password.
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

/// Most recipients of one e-mail channel.
pub const MAX_RECIPIENTS: usize = 50;

/// The settings of an EMAIL channel (stored as JSON in the catalog).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmailSettings {
    pub relay: String,
    pub port: u16,
    /// "starttls", "tls" or "none".
    pub tls: String,
    pub from: String,
    pub to: Vec<String>,
    /// Empty: no login.
    #[serde(default)]
    pub username: String,
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl EmailSettings {
    /// Fills the default port of the TLS mode and checks every field.
    pub fn checked(mut self) -> Result<Self, String> {
        let r = &self.relay;
        if r.is_empty() || r.len() > 253 || r.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!("SMTP relay {r:?} is not a host name or IP address"));
        }
        let default_port = match self.tls.as_str() {
            "" | "starttls" => {
                self.tls = "starttls".into();
                587
            }
            "tls" => 465,
            "none" if is_loopback(r) => 25,
            "none" => {
                return Err(format!(
                    "SMTP without TLS is accepted to a loopback relay only, not {r}: use --smtp-tls starttls or tls"
                ));
            }
            other => {
                return Err(format!(
                    "SMTP TLS mode {other:?} is not one of starttls, tls, none"
                ));
            }
        };
        if self.port == 0 {
            self.port = default_port;
        }
        self.from
            .parse::<Mailbox>()
            .map_err(|e| format!("sender {:?} is not an e-mail address: {e}", self.from))?;
        if self.to.is_empty() || self.to.len() > MAX_RECIPIENTS {
            return Err(format!(
                "an e-mail channel needs 1 to {MAX_RECIPIENTS} recipients, not {}",
                self.to.len()
            ));
        }
        for to in &self.to {
            to.parse::<Mailbox>()
                .map_err(|e| format!("recipient {to:?} is not an e-mail address: {e}"))?;
        }
        if self.username.len() > 256 {
            return Err("the SMTP user name is longer than 256 bytes".into());
        }
        Ok(self)
    }
}

/// Sends one plain-text mail; `Ok` with the relay's answer code.
pub async fn send(
    s: &EmailSettings,
    password: Option<&[u8]>,
    subject: &str,
    text: String,
    timeout: Duration,
    ca_pem: Option<&[u8]>,
) -> Result<String, String> {
    let relay = format!("{}:{}", s.relay, s.port);
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("SMTP {relay}: {what}: {e}");
    // The web PKI roots, plus notify.ca_file's certificates.
    let params = || {
        let mut b = TlsParameters::builder(s.relay.clone());
        if let Some(pem) = ca_pem {
            let certs = Certificate::from_pem(pem).map_err(|e| fail("notify.ca_file", &e))?;
            b = b.add_root_certificate(certs);
        }
        b.build_rustls().map_err(|e| fail("TLS set-up", &e))
    };
    // "Dangerous" only means no TLS unless set, which the match does.
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.relay);
    let builder = match s.tls.as_str() {
        "tls" => builder.tls(Tls::Wrapper(params()?)),
        "starttls" => builder.tls(Tls::Required(params()?)),
        _ => builder,
    };
    let mut builder = builder.port(s.port).timeout(Some(timeout));
    if !s.username.is_empty() {
        let password = password.ok_or_else(|| {
            format!(
                "SMTP {relay}: user {:?} is set but the channel has no password",
                s.username
            )
        })?;
        let password = String::from_utf8(password.to_vec())
            .map_err(|_| format!("SMTP {relay}: the password is not UTF-8"))?;
        builder = builder.credentials(Credentials::new(s.username.clone(), password));
    }
    let mailer = builder.build();
    let mut msg = Message::builder()
        .from(s.from.parse().map_err(|e| fail("sender", &e))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &s.to {
        msg = msg.to(to.parse().map_err(|e| fail("recipient", &e))?);
    }
    let msg = msg.body(text).map_err(|e| fail("build the mail", &e))?;
    let resp = tokio::time::timeout(timeout, mailer.send(msg))
        .await
        .map_err(|_| format!("SMTP {relay}: no answer within {}s", timeout.as_secs()))?
        .map_err(|e| fail("send", &e))?;
    Ok(format!("SMTP {}", resp.code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(relay: &str, tls: &str) -> EmailSettings {
        EmailSettings {
            relay: relay.into(),
            port: 0,
            tls: tls.into(),
            from: "pgsnapman@example.com".into(),
            to: vec!["dba@example.com".into()],
            username: String::new(),
        }
    }

    #[test]
    fn defaults_and_refusals() {
        let s = settings("smtp.example.com", "").checked().unwrap();
        assert_eq!((s.tls.as_str(), s.port), ("starttls", 587));
        assert_eq!(
            settings("smtp.example.com", "tls").checked().unwrap().port,
            465
        );
        assert_eq!(settings("127.0.0.1", "none").checked().unwrap().port, 25);
        let e = settings("smtp.example.com", "none").checked().unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        let mut bad = settings("smtp.example.com", "");
        bad.to = vec!["not an address".into()];
        assert!(bad.checked().unwrap_err().contains("not an address"));
    }
}
