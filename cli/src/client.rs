//! The connection to the coordinator's AdminService and the translation of
//! gRPC errors into the one-line reasons `pgsnap` prints.
use std::time::Duration;

use anyhow::{Result, anyhow};
use pgsnapman_proto::channel::{self, ClientTls};
use pgsnapman_proto::v1::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

pub type Admin = AdminServiceClient<Channel>;

/// How long to wait for the TCP (and TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take; every AdminService call is short.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The URL `connect` dialled, for errors that only show at a call (a TLS
/// alert after the handshake): `pgsnap` talks to one coordinator per run.
static COORDINATOR_URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// Whether `connect` presented a client certificate.
static CLIENT_CERTIFICATE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Connects now, so that an unreachable coordinator (or a TLS mismatch) is
/// reported once, up front, naming the URL. Refuses `http://` to a host
/// that is not loopback before connecting.
pub async fn connect(url: &str, tls: &ClientTls) -> Result<Admin> {
    let _ = COORDINATOR_URL.set(url.to_string());
    let _ = CLIENT_CERTIFICATE.set(tls.cert_pem.is_some());
    let endpoint = channel::endpoint(url, tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    let channel = channel::connect(url, endpoint)
        .await
        .map_err(|e| anyhow!("cannot reach {e}"))?;
    Ok(AdminServiceClient::new(channel)
        .max_decoding_message_size(pgsnapman_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(pgsnapman_proto::MAX_MESSAGE_BYTES))
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
    let url = COORDINATOR_URL.get().map(String::as_str).unwrap_or("?");
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
}
