//! The web dashboard (docs/dashboard.md): server-rendered HTML on its own
//! listener (`[dashboard]`), TLS with the coordinator's server certificate
//! unless the coordinator itself is plaintext, behind the AdminService's
//! tokens and roles. Reads the catalog; acts only through the Admin handlers.
mod actions;
mod pages;
mod session;
mod view;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use pgsnapman_proto::model::quoted;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::auth::AuthState;
use crate::catalog::Catalog;
use session::{Session, Sessions};

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one connection stays open (a browser simply opens another).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest form body accepted (a login or an action form is far smaller).
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// `[dashboard]` (docs/dashboard.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// `ip:port` of the dashboard; empty (the default): off.
    pub listen: String,
    /// With a plaintext coordinator (`server.plaintext`), serve the
    /// dashboard in plain HTTP on a non-loopback address too.
    pub allow_remote_plaintext: bool,
    /// Lifetime of a login session (1m to 7d).
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Sessions open at once (1 to 10000); one more login is refused.
    pub max_sessions: usize,
    /// Rows per page of the jobs, catalog and messages pages (10 to 500).
    pub page_size: u32,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: String::new(),
            allow_remote_plaintext: false,
            session_ttl: Duration::from_secs(8 * 3600),
            max_sessions: 256,
            page_size: 50,
        }
    }
}

impl DashboardConfig {
    /// The bound address (`None`: off). `plaintext` is the coordinator's
    /// `server.plaintext`.
    pub fn validate(&self, plaintext: bool) -> Result<Option<SocketAddr>> {
        if !(Duration::from_secs(60)..=Duration::from_secs(7 * 24 * 3600))
            .contains(&self.session_ttl)
        {
            bail!("dashboard.session_ttl must be between 1m and 7d");
        }
        if !(1..=10_000).contains(&self.max_sessions) {
            bail!("dashboard.max_sessions must be between 1 and 10000");
        }
        if !(10..=500).contains(&self.page_size) {
            bail!("dashboard.page_size must be between 10 and 500");
        }
        if self.listen.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = self.listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "dashboard.listen {} is not an ip:port (e.g. 127.0.0.1:7433; empty turns the dashboard off)",
                quoted(&self.listen)
            )
        })?;
        if plaintext && !addr.ip().is_loopback() && !self.allow_remote_plaintext {
            bail!(
                "dashboard.listen {addr}: the coordinator is plaintext (server.plaintext), so the dashboard would serve tokens in clear off loopback; use a loopback address, enable TLS, or set dashboard.allow_remote_plaintext"
            );
        }
        Ok(Some(addr))
    }
}

/// What every request shares.
pub struct Dashboard {
    catalog: Catalog,
    admin: Arc<Admin>,
    auth: Arc<AuthState>,
    sessions: Sessions,
    templates: minijinja::Environment<'static>,
    page_size: i64,
    tls: bool,
}

type Resp = Response<Full<Bytes>>;

/// Binds `[dashboard] listen` if set and serves it until `stop`; `tls`:
/// the server certificate and key (PEM), `None` for plain HTTP.
pub async fn start(
    cfg: &DashboardConfig,
    plaintext: bool,
    tls: Option<(&str, &str)>,
    catalog: Catalog,
    admin: Arc<Admin>,
    auth: Arc<AuthState>,
    stop: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = cfg.validate(plaintext)? else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("dashboard.listen {addr}: cannot listen"))?;
    let acceptor = tls.map(|(c, k)| acceptor(c, k)).transpose()?;
    let dashboard = Arc::new(Dashboard {
        sessions: Sessions::new(catalog.clone(), cfg.session_ttl, cfg.max_sessions),
        catalog,
        admin,
        auth,
        templates: view::templates()?,
        page_size: i64::from(cfg.page_size),
        tls: acceptor.is_some(),
    });
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, tls = acceptor.is_some(), "dashboard listening");
    Ok(Some(tokio::spawn(accept(
        listener, acceptor, dashboard, stop,
    ))))
}

/// TLS with the coordinator's server certificate (no client certificates:
/// the dashboard's credential is the token typed into the login form).
fn acceptor(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("dashboard: read the server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .context("dashboard: read the server key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("dashboard: TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("dashboard: TLS certificate")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

async fn accept(
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    dashboard: Arc<Dashboard>,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Waiting for a free slot must not hold up a shutdown.
        let permit = tokio::select! {
            () = stop.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("dashboard listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let dashboard = dashboard.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(stream, peer, dashboard).await,
                Some(tls) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(s)) => connection(s, peer, dashboard).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "dashboard TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%peer, "dashboard TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn connection<I>(io: I, peer: SocketAddr, dashboard: Arc<Dashboard>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let dashboard = dashboard.clone();
        async move { Ok::<_, Infallible>(dashboard.handle(req, peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
        tracing::debug!(%peer, "dashboard connection: {e}");
    }
}

/// One request as the handlers see it.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
    pub peer: SocketAddr,
    pub session_id: Option<String>,
}

impl Req {
    fn param<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
        list.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        Self::param(&self.query, name).filter(|v| !v.is_empty())
    }

    pub fn form(&self, name: &str) -> Option<&str> {
        Self::param(&self.form, name)
    }

    pub fn ip(&self) -> Option<IpAddr> {
        Some(self.peer.ip())
    }
}

impl Dashboard {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Resp {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let session_id = req
            .headers()
            .get(COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| session::cookie_value(Some(v)))
            .map(str::to_string);
        if method == Method::POST && !same_origin(req.headers()) {
            return self.error(
                StatusCode::FORBIDDEN,
                "refused: the form was sent from another site (Origin does not match Host)",
            );
        }
        let form = if method == Method::POST {
            match Limited::new(req.into_body(), MAX_FORM_BYTES)
                .collect()
                .await
            {
                Ok(b) => form_urlencoded::parse(&b.to_bytes()).into_owned().collect(),
                Err(_) => {
                    return self.error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("form refused: more than {MAX_FORM_BYTES} bytes"),
                    );
                }
            }
        } else {
            Vec::new()
        };
        let r = Req {
            method,
            path,
            query,
            form,
            peer,
            session_id,
        };
        self.route(&r).await
    }

    async fn route(&self, r: &Req) -> Resp {
        let segments: Vec<&str> = r.path.trim_matches('/').split('/').collect();
        match (&r.method, segments.as_slice()) {
            (&Method::GET, ["assets", "style.css"]) => view::stylesheet(),
            (&Method::GET, ["login"]) => self.render("login.html", minijinja::context! {}),
            (&Method::POST, ["login"]) => self.login(r).await,
            (&Method::GET | &Method::POST, _) => {
                let Some(session) = self.session(r).await else {
                    return if r.method == Method::GET {
                        redirect("/login")
                    } else {
                        self.error(
                            StatusCode::FORBIDDEN,
                            "not logged in (or the session expired)",
                        )
                    };
                };
                if let Err(m) = self.auth.take(&session.caller) {
                    return self.error(StatusCode::TOO_MANY_REQUESTS, &m);
                }
                if r.method == Method::POST {
                    self.act(r, &session, &segments).await
                } else {
                    self.page(r, &session, &segments).await
                }
            }
            _ => self.error(
                StatusCode::METHOD_NOT_ALLOWED,
                "the dashboard answers GET and POST only",
            ),
        }
    }

    /// POST /login: a token in, a session cookie out.
    async fn login(&self, r: &Req) -> Resp {
        let token = r.form("token").unwrap_or_default();
        let caller = match self.auth.check_token(token, r.ip()).await {
            Ok(c) => c,
            Err((m, limited)) => {
                if !limited {
                    self.audit("", "DashboardLogin", serde_json::json!({}), r, Some(&m))
                        .await;
                }
                let status = if limited {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::UNAUTHORIZED
                };
                let ctx = minijinja::context! { error => format!("login refused: {m}") };
                return self.render_status(status, "login.html", ctx);
            }
        };
        let id = match self
            .sessions
            .open(crate::auth::token::sha256(token.trim()))
            .await
        {
            Ok(id) => id,
            Err((status, m)) => return self.error(status, &m),
        };
        let role = caller.role.label();
        self.audit(
            &caller.name,
            "DashboardLogin",
            serde_json::json!({ "role": role }),
            r,
            None,
        )
        .await;
        let mut resp = redirect("/");
        let secure = if self.tls { "; Secure" } else { "" };
        let cookie = format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            session::COOKIE,
            self.sessions.ttl_seconds()
        );
        if let Ok(v) = cookie.parse() {
            resp.headers_mut().insert(SET_COOKIE, v);
        }
        resp
    }

    /// The request's session, if it is open and its token still valid
    /// (not revoked, not expired since the login).
    async fn session(&self, r: &Req) -> Option<Session> {
        self.sessions.get(r.session_id.as_deref()?).await
    }

    /// An audit row like the gRPC path's (actor, method, arguments, peer,
    /// outcome).
    async fn audit(
        &self,
        actor: &str,
        method: &str,
        args: serde_json::Value,
        r: &Req,
        error: Option<&str>,
    ) {
        let mut args = args;
        if let Some(o) = args.as_object_mut() {
            o.insert("via".into(), "dashboard".into());
        }
        self.catalog
            .audit(crate::catalog::AuditEntry {
                actor: actor.to_string(),
                method: method.to_string(),
                args_json: args,
                peer: Some(r.peer.to_string()),
                ok: error.is_none(),
                detail: error.unwrap_or_default().to_string(),
            })
            .await;
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Resp {
        self.render_status(StatusCode::OK, name, ctx)
    }

    fn render_status(&self, status: StatusCode, name: &str, ctx: minijinja::Value) -> Resp {
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
        {
            Ok(html) => html_response(status, html),
            Err(e) => {
                tracing::error!(template = name, "dashboard: render: {e:#}");
                html_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>error</title><p>internal error (see the coordinator's log)</p>"
                        .into(),
                )
            }
        }
    }

    fn error(&self, status: StatusCode, message: &str) -> Resp {
        let ctx = minijinja::context! { status => status.as_u16(), message => view::cut(message) };
        self.render_status(status, "error.html", ctx)
    }
}

/// False when the request names an `Origin` (browsers send one with every
/// POST) whose host and port are not the request's `Host`: a form posted
/// from another site, the login form included. No Origin (curl): true;
/// the CSRF token still guards every action.
fn same_origin(h: &hyper::HeaderMap) -> bool {
    let Some(origin) = h.get(hyper::header::ORIGIN) else {
        return true;
    };
    let host = h.get(hyper::header::HOST).and_then(|v| v.to_str().ok());
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, a)| a);
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

fn html_response(status: StatusCode, html: String) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(html)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(h);
    resp
}

/// No script runs but our own (there is none), no framing, no caching of
/// pages that show the catalog.
fn security_headers(h: &mut hyper::HeaderMap) {
    use hyper::header::HeaderValue;
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // Not no-referrer: with it, browsers send `Origin: null` on our own POSTs.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn redirect(to: &str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = to.parse() {
        resp.headers_mut().insert(LOCATION, v);
    }
    security_headers(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_from_another_origin_are_told_apart() {
        let headers = |origin: Option<&str>| {
            let mut h = hyper::HeaderMap::new();
            h.insert(
                hyper::header::HOST,
                "127.0.0.1:7433".parse().expect("a value"),
            );
            if let Some(o) = origin {
                h.insert(hyper::header::ORIGIN, o.parse().expect("a value"));
            }
            h
        };
        assert!(same_origin(&headers(None)));
        assert!(same_origin(&headers(Some("https://127.0.0.1:7433"))));
        assert!(!same_origin(&headers(Some("https://evil.example"))));
        assert!(!same_origin(&headers(Some("https://127.0.0.1:7434"))));
        assert!(!same_origin(&headers(Some("null"))));
    }

    #[test]
    fn listen_and_limits_are_checked() {
        let ok = DashboardConfig::default();
        assert_eq!(ok.validate(false).expect("off by default"), None);
        let on = |listen: &str| DashboardConfig {
            listen: listen.into(),
            ..DashboardConfig::default()
        };
        assert!(on("0.0.0.0:7433").validate(false).expect("TLS").is_some());
        assert!(
            on("127.0.0.1:7433")
                .validate(true)
                .expect("loopback")
                .is_some()
        );
        let err = on("0.0.0.0:7433").validate(true).unwrap_err().to_string();
        assert!(err.contains("allow_remote_plaintext"), "{err}");
        let allowed = DashboardConfig {
            allow_remote_plaintext: true,
            ..on("0.0.0.0:7433")
        };
        assert!(allowed.validate(true).expect("allowed").is_some());
        let err = on("localhost:7433")
            .validate(false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"localhost:7433\"") && err.contains("ip:port"),
            "{err}"
        );
        for (bad, key) in [
            (
                DashboardConfig {
                    session_ttl: Duration::from_secs(1),
                    ..ok.clone()
                },
                "session_ttl",
            ),
            (
                DashboardConfig {
                    max_sessions: 0,
                    ..ok.clone()
                },
                "max_sessions",
            ),
            (
                DashboardConfig {
                    page_size: 5000,
                    ..ok.clone()
                },
                "page_size",
            ),
        ] {
            let err = bad.validate(false).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
