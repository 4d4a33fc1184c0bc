//! `AdminAuth`: the tower service in front of the AdminService. Per call, in
//! this order: authenticate the bearer token, or without one the client
//! certificate (refusing garbage and worker certificates before any catalog
//! lookup, and a peer that keeps failing before it costs one), take from the
//! caller's rate bucket, check the role (`super::rule`), hand the caller to
//! the handler, and audit mutating and refused calls.
use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use pgsnapman_proto::model::quoted;
use pgsnapman_proto::{MAX_MESSAGE_BYTES, reflect};
use serde_json::json;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tower::Service;

use super::rate::Limiter;
use super::{Caller, RateLimits, Role, audit, cert, method_name, rule, token};
use crate::catalog::{AuditEntry, Catalog};
use crate::error::ApiError;
use crate::rows::TokenRow;
use sha2::{Digest, Sha256};

/// What every call shares: the catalog (tokens, audit) and the limiter.
pub struct AuthState {
    catalog: Catalog,
    limiter: Limiter,
    /// gRPC paths of the AdminService and reflection methods this build serves.
    known: HashSet<String>,
}

impl AuthState {
    pub fn new(catalog: Catalog, limits: RateLimits) -> Arc<Self> {
        Arc::new(Self {
            catalog,
            limiter: Limiter::new(limits),
            known: reflect::admin_methods()
                .into_iter()
                .map(|m| m.path)
                .chain(crate::health::REFLECTION_PATHS.map(String::from))
                .collect(),
        })
    }
}

impl AuthState {
    /// The dashboard's login: checks `secret` exactly as a gRPC call's
    /// bearer token is checked (shape, the peer's failure allowance, the
    /// catalog row, revoked, expired, role). `Err` holds the reason, which
    /// never repeats the secret, and whether it is a rate limit (then not
    /// audited, as on the gRPC path: a flood must not fill the audit).
    pub async fn check_token(
        &self,
        secret: &str,
        ip: Option<IpAddr>,
    ) -> Result<Caller, (String, bool)> {
        let mut headers = http::HeaderMap::new();
        let value = http::HeaderValue::from_str(&format!("Bearer {}", secret.trim()))
            .map_err(|_| ("the token is not printable ASCII".to_string(), false))?;
        headers.insert(http::header::AUTHORIZATION, value);
        let ext = http::Extensions::new();
        match self.authenticate(&headers, &ext, ip, Instant::now()).await {
            Ok(c) => Ok(c),
            Err(Refusal::Unauthenticated(m)) => Err((m, false)),
            Err(Refusal::Limited(m)) => Err((m, true)),
            Err(Refusal::Internal(e)) => Err((e.to_string(), false)),
        }
    }

    /// Takes one request from `caller`'s rate bucket (the gRPC calls' limit).
    pub fn take(&self, caller: &Caller) -> Result<(), String> {
        self.limiter.take_token(&caller.name, Instant::now())
    }
}

/// The AdminService (`S`) behind authentication, roles, rate limits and
/// the audit.
#[derive(Clone)]
pub struct AdminAuth<S> {
    inner: S,
    state: Arc<AuthState>,
}

impl<S> AdminAuth<S> {
    pub fn new(inner: S, state: Arc<AuthState>) -> Self {
        Self { inner, state }
    }
}

impl<S: NamedService> NamedService for AdminAuth<S> {
    const NAME: &'static str = S::NAME;
}

type HttpRequest = http::Request<Body>;
type HttpResponse = http::Response<Body>;

impl<S> Service<HttpRequest> for AdminAuth<S>
where
    S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        // The clone is not necessarily ready; the instance polled ready is
        // the one that serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move { Ok(state.serve(req, inner).await) })
    }
}

/// Why a call was turned away before its handler ran.
enum Refusal {
    /// Audited.
    Unauthenticated(String),
    /// Over a rate limit: not audited (a flood must not fill the audit).
    Limited(String),
    Internal(ApiError),
}

impl AuthState {
    async fn serve<S>(&self, mut req: HttpRequest, mut inner: S) -> HttpResponse
    where
        S: Service<HttpRequest, Response = HttpResponse, Error = Infallible>,
    {
        let path = req.uri().path().to_string();
        let method = method_name(&path).to_string();
        let peer = peer_addr(req.extensions());
        let now = Instant::now();
        let caller = match self
            .authenticate(req.headers(), req.extensions(), peer.map(|p| p.ip()), now)
            .await
        {
            Ok(c) => c,
            Err(Refusal::Limited(m)) => return Status::resource_exhausted(m).into_http(),
            Err(Refusal::Internal(e)) => return Status::from(e).into_http(),
            Err(Refusal::Unauthenticated(m)) => {
                let status = Status::unauthenticated(m);
                return self.refuse("", &method, json!({}), peer, status).await;
            }
        };
        if let Err(m) = self.limiter.take_token(&caller.name, now) {
            return Status::resource_exhausted(m).into_http();
        }
        let rule = rule(&path);
        let allowed = caller.role >= rule.role;
        if allowed && !self.known.contains(&path) {
            // tonic answers an unknown method with an empty message.
            let status = Status::unimplemented(format!(
                "the coordinator has no AdminService method {}",
                quoted(&method)
            ));
            return self
                .refuse(&caller.name, &method, json!({}), peer, status)
                .await;
        }
        if !rule.mutating && allowed {
            req.extensions_mut().insert(caller);
            return call(&mut inner, req).await;
        }
        // Mutating or refused: the arguments go into the audit row.
        let (mut parts, body) = req.into_parts();
        let bytes = match Limited::new(body, MAX_MESSAGE_BYTES + 5).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                let status = if e.is::<http_body_util::LengthLimitError>() {
                    Status::out_of_range(format!(
                        "request of more than {MAX_MESSAGE_BYTES} bytes refused"
                    ))
                } else {
                    Status::cancelled(format!("request body not received: {e}"))
                };
                let args = json!({ "undecoded": "body not received" });
                return self.refuse(&caller.name, &method, args, peer, status).await;
            }
        };
        let args = match audit::args(&path, &bytes) {
            Ok(a) => a,
            Err(reason) if allowed => {
                let args = json!({ "undecoded": reason });
                let status = Status::invalid_argument(reason);
                return self.refuse(&caller.name, &method, args, peer, status).await;
            }
            Err(reason) => json!({ "undecoded": reason }),
        };
        if !allowed {
            let m = format!(
                "{} has the {} role; {method} needs {}",
                caller.describe(),
                caller.role.label(),
                rule.role.label()
            );
            let status = Status::permission_denied(m);
            return self.refuse(&caller.name, &method, args, peer, status).await;
        }
        let actor = caller.name.clone();
        parts.extensions.insert(caller);
        let req = http::Request::from_parts(parts, Body::new(Full::new(bytes)));
        let resp = call(&mut inner, req).await;
        // A unary handler's error is in the headers (trailers-only reply);
        // success leaves grpc-status to the trailers.
        let error = match Status::from_header_map(resp.headers()) {
            Some(s) if s.code() != Code::Ok => Some(status_line(&s)),
            _ => None,
        };
        self.catalog
            .audit(entry(&actor, &method, args, peer, error.as_deref()))
            .await;
        resp
    }

    /// Audits a call turned away with `status` and answers it.
    async fn refuse(
        &self,
        actor: &str,
        method: &str,
        args: serde_json::Value,
        peer: Option<SocketAddr>,
        status: Status,
    ) -> HttpResponse {
        let detail = status_line(&status);
        self.catalog
            .audit(entry(actor, method, args, peer, Some(&detail)))
            .await;
        status.into_http()
    }

    /// The caller: the bearer token when one is sent (it wins over a
    /// client certificate), else the client certificate TLS verified.
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        ext: &http::Extensions,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<Caller, Refusal> {
        let row = if headers.contains_key(http::header::AUTHORIZATION) {
            self.token_row(headers, ip, now).await?
        } else if let Some(der) = leaf_certificate(ext) {
            self.certificate_row(&der, ip, now).await?
        } else {
            return Err(self.failed(ip, now, NO_CREDENTIAL.to_string()));
        };
        let what = row.describe();
        if let Some(at) = row.revoked_at {
            let m = format!("{what} was revoked at {}", at.to_rfc3339());
            return Err(self.failed(ip, now, m));
        }
        if let Some(at) = row.expires_at
            && at <= chrono::Utc::now()
        {
            let m = format!("{what} expired at {}", at.to_rfc3339());
            return Err(self.failed(ip, now, m));
        }
        let role = Role::from_label(&row.role).ok_or_else(|| {
            Refusal::Internal(ApiError::Internal(anyhow::anyhow!(
                "{what} has the unknown role {:?}",
                row.role
            )))
        })?;
        let stale = row
            .last_used_at
            .is_none_or(|t| chrono::Utc::now() - t > chrono::Duration::minutes(1));
        if stale && let Err(e) = self.catalog.touch_token(row.id).await {
            tracing::warn!(token = %row.name, "noting the token's use: {e}");
        }
        Ok(Caller {
            name: match row.cert_source {
                None => row.name,
                Some(_) => cert::caller_name(&row),
            },
            role,
        })
    }

    /// The row of the bearer token in `headers`.
    async fn token_row(
        &self,
        headers: &http::HeaderMap,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<TokenRow, Refusal> {
        let secret = match bearer(headers) {
            Ok(t) => t,
            Err(m) => return Err(self.failed(ip, now, m.to_string())),
        };
        // A peer that has spent its allowance of failures costs no lookup.
        self.limiter.check_peer(ip, now).map_err(Refusal::Limited)?;
        let row = self
            .catalog
            .token_by_sha256(&token::sha256(secret))
            .await
            .map_err(Refusal::Internal)?;
        row.ok_or_else(|| self.failed(ip, now, "unknown token".into()))
    }

    /// The row of the operator certificate `der` (DER of the verified leaf).
    async fn certificate_row(
        &self,
        der: &[u8],
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<TokenRow, Refusal> {
        cert::refuse_worker(der).map_err(|m| self.failed(ip, now, m))?;
        self.limiter.check_peer(ip, now).map_err(Refusal::Limited)?;
        let sha256: [u8; 32] = Sha256::digest(der).into();
        let row = self
            .catalog
            .token_by_cert_sha256(&sha256)
            .await
            .map_err(Refusal::Internal)?;
        row.ok_or_else(|| self.failed(ip, now, cert::unknown(&sha256)))
    }

    /// A failed authentication: refused, and over the peer's limit limited.
    fn failed(&self, ip: Option<IpAddr>, now: Instant, reason: String) -> Refusal {
        match self.limiter.take_peer(ip, now) {
            Ok(()) => Refusal::Unauthenticated(reason),
            Err(m) => Refusal::Limited(m),
        }
    }
}

async fn call<S>(inner: &mut S, req: HttpRequest) -> HttpResponse
where
    S: Service<HttpRequest, Response = HttpResponse, Error = Infallible>,
{
    match inner.call(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// What a caller with neither a token nor a client certificate is told.
const NO_CREDENTIAL: &str = "no credential: send `authorization: Bearer <token>` \
     (pgsnap: PGSNAPMAN_TOKEN or a token file) or an operator client certificate \
     (pgsnap --cert-file/--key-file)";

/// The DER of the client certificate TLS verified, if one was presented.
fn leaf_certificate(ext: &http::Extensions) -> Option<Vec<u8>> {
    let certs = ext
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)?;
    certs.first().map(|c| c.as_ref().to_vec())
}

/// The token of `authorization: Bearer <token>`, or why there is none. The
/// reasons never repeat what was sent.
fn bearer(headers: &http::HeaderMap) -> Result<&str, &'static str> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(NO_CREDENTIAL)?;
    let value = value
        .to_str()
        .map_err(|_| "the authorization header is not printable ASCII")?;
    // The scheme is case-insensitive (RFC 6750 and RFC 9110).
    let t = value
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
        .and_then(|_| value.get(7..))
        .ok_or("the authorization header is not `Bearer <token>`")?
        .trim();
    if token::well_formed(t) {
        Ok(t)
    } else {
        Err("the bearer token is not a pgsnapman token (psm_ and 43 base64url characters)")
    }
}

fn peer_addr(ext: &http::Extensions) -> Option<SocketAddr> {
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
}

/// `PermissionDenied: token … needs admin`: what the audit keeps of an error.
fn status_line(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn entry(
    actor: &str,
    method: &str,
    args: serde_json::Value,
    peer: Option<SocketAddr>,
    error: Option<&str>,
) -> AuditEntry {
    AuditEntry {
        actor: actor.to_string(),
        method: method.to_string(),
        args_json: args,
        peer: peer.map(|p| p.to_string()),
        ok: error.is_none(),
        detail: error.unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = value {
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_headers_are_checked_without_echoing_them() {
        let t = token::generate();
        assert_eq!(
            bearer(&headers(Some(&format!("Bearer {t}")))),
            Ok(t.as_str())
        );
        for bad in [
            None,
            Some("Basic dXNlcjpwYXNz"),
            Some("Bearer"),
            Some("Bearer psm_short"),
            Some(&*format!("Bearer {}", "x".repeat(10_000))),
        ] {
            let err = bearer(&headers(bad)).unwrap_err();
            assert!(err.len() < 200 && !err.contains("xxxx"), "{bad:?}: {err}");
        }
    }
}
