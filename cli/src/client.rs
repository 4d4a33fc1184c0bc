//! The connection to the coordinator's AdminService and the translation of
//! gRPC errors into the one-line reasons `pgsnap` prints.
use std::time::Duration;

use anyhow::{Result, anyhow};
use pgsnapman_proto::channel::{self, ClientTls};
use pgsnapman_proto::v1::admin_service_client::AdminServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call (nothing without a
/// token: the coordinator then says how to give one).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Self> {
        let Some(t) = token else {
            return Ok(Self(None));
        };
        let mut v = MetadataValue::try_from(format!("Bearer {t}"))
            .map_err(|_| anyhow!("the token is not printable ASCII"))?;
        // Never stored in HPACK tables.
        v.set_sensitive(true);
        Ok(Self(Some(v)))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// How long to wait for the TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take; every AdminService call is short.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The URL `connect` last dialled, for errors that only show at a call (a
/// TLS alert after the handshake).
static COORDINATOR_URL: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
/// Whether `connect` presented a client certificate.
static CLIENT_CERTIFICATE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Connects now, so that an unreachable coordinator (or a TLS mismatch) is
/// reported once, up front, naming the URL. `urls` is one URL or several
/// separated by commas (coordinators on one catalog): they are tried in
/// order and the first that connects serves the whole run; a call that
/// fails later is not repeated elsewhere (not every call is idempotent).
/// Refuses `http://` to a host that is not loopback before connecting.
pub async fn connect(urls: &str, tls: &ClientTls, bearer: Bearer) -> Result<Admin> {
    let urls = channel::url_list(&[urls])?;
    let _ = CLIENT_CERTIFICATE.set(tls.cert_pem.is_some());
    let mut failures = Vec::new();
    for url in &urls {
        match connect_one(url, tls).await {
            Ok(channel) => {
                *COORDINATOR_URL
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = url.clone();
                return Ok(AdminServiceClient::with_interceptor(channel, bearer)
                    .max_decoding_message_size(pgsnapman_proto::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(pgsnapman_proto::MAX_MESSAGE_BYTES));
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(match failures.as_slice() {
        [one] => anyhow!("cannot reach {one}"),
        all => anyhow!(
            "cannot reach any of the {} coordinators: {}",
            all.len(),
            all.join("; ")
        ),
    })
}

async fn connect_one(url: &str, tls: &ClientTls) -> Result<Channel, channel::ChannelError> {
    let endpoint = channel::endpoint(url, tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    channel::connect(url, endpoint).await
}

/// The message of a call's result, or its status as an error. The
/// coordinator puts the reason (naming the offending id or name) in the
/// status message, so that is what the operator sees.
pub fn rpc<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow!(status_reason(&s)))
}

fn status_reason(s: &tonic::Status) -> String {
    use tonic::Code;
    let url = COORDINATOR_URL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let url = if url.is_empty() { "?" } else { url.as_str() };
    if let Some(reason) = channel::status_reason(s) {
        return format!("coordinator at {url}: {reason}");
    }
    // Under TLS 1.3 the server judges a client certificate after the
    // handshake; a refusal only shows as the first call's broken stream.
    if CLIENT_CERTIFICATE.get() == Some(&true) && channel::is_transport_failure(s) {
        return format!(
            "coordinator at {url}: the connection closed at the first call; the coordinator probably refused the client certificate (--cert-file): is it issued by the coordinator's CA and unexpired?"
        );
    }
    let msg = s.message().trim();
    let prefix = match s.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::ResourceExhausted
            if !msg.is_empty() =>
        {
            return msg.to_string();
        }
        Code::Unavailable => "coordinator unavailable",
        Code::DeadlineExceeded => "coordinator did not answer in time",
        Code::Internal => "coordinator internal error",
        Code::Unimplemented => "the coordinator does not support this call",
        Code::PermissionDenied | Code::Unauthenticated => "refused by the coordinator",
        code => return format!("{}: {msg}", code.description()),
    };
    if msg.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}: {msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_are_shown_as_the_reason() {
        let s = tonic::Status::not_found("dump job 424242 not found");
        assert_eq!(status_reason(&s), "dump job 424242 not found");
        let s = tonic::Status::internal("request id 7f3a");
        assert_eq!(
            status_reason(&s),
            "coordinator internal error: request id 7f3a"
        );
        let s = tonic::Status::unavailable("");
        assert_eq!(status_reason(&s), "coordinator unavailable");
    }

    #[test]
    fn every_url_is_tried_and_each_failure_named() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let bearer = Bearer::new(None).unwrap();
        let tls = ClientTls::default();
        let err = rt
            .block_on(connect(
                "http://127.0.0.1:1,http://127.0.0.1:2",
                &tls,
                bearer.clone(),
            ))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("cannot reach any of the 2 coordinators: "),
            "{err}"
        );
        assert!(
            err.contains("127.0.0.1:1") && err.contains("127.0.0.1:2"),
            "{err}"
        );
        let err = rt
            .block_on(connect(
                "http://127.0.0.1:1,http://db.example:1",
                &tls,
                bearer,
            ))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("http://db.example:1"),
            "checked before dialling: {err}"
        );
    }
}
