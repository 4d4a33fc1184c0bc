//! How a client reaches a coordinator: its URL, the CA file to trust and the
//! operator's token. Tests pass one `Access` to `pgsnap` and to workers, so
//! that every scenario runs the way a deployment does (TLS, authentication).
use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `https://…` (or `http://…` for a coordinator started in plaintext).
    pub url: String,
    /// PEM CA bundle that signed the coordinator's certificate.
    pub ca_file: Option<PathBuf>,
    /// Operator bearer token (admin role unless the test says otherwise).
    pub token: Option<String>,
}

impl Access {
    /// A URL only: no CA, no token (for unreachable or plaintext endpoints).
    pub fn plain(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            token: None,
        }
    }

    /// The same CA and token through another URL (a proxy in front of the
    /// coordinator).
    pub fn with_url(&self, url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..self.clone()
        }
    }

    /// The same URL and CA with another token (or none).
    pub fn with_token(&self, token: Option<String>) -> Self {
        Self {
            token,
            ..self.clone()
        }
    }
}

impl Access {
    /// A connected channel to the coordinator (TLS with `ca_file` for
    /// `https://`), for tests that call the gRPC services directly.
    pub async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        self.channel_as(None).await
    }

    /// `channel`, presenting a client certificate and key (PEM) when given:
    /// a worker's identity.
    pub async fn channel_as(
        &self,
        identity: Option<(&str, &str)>,
    ) -> anyhow::Result<tonic::transport::Channel> {
        use pgsnapman_proto::channel::{self, ClientTls};
        let tls = ClientTls {
            ca_file: self.ca_file.clone(),
            cert_pem: identity.map(|(c, _)| c.to_string()),
            key_pem: identity.map(|(_, k)| k.to_string()),
        };
        let endpoint =
            channel::endpoint(&self.url, &tls)?.connect_timeout(std::time::Duration::from_secs(5));
        Ok(channel::connect(&self.url, endpoint).await?)
    }
}
