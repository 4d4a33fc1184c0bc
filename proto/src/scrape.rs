//! The `/metrics` HTTP listener that the coordinator and the worker share
//! (`[metrics] listen`, docs/metrics.md): HTTP/1.1, `GET /metrics` only, a
//! bounded number of connections each with a deadline, no authentication.
//! What is served comes from the caller's render function.
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::model::quoted;

/// The text format served: OpenMetrics 1.0 (Prometheus 2.x and later, and
/// every Prometheus text-format parser, read it).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Connections served at once; one more is answered 503 and closed (a
/// Prometheus server keeps one connection per target).
pub const MAX_CONNECTIONS: usize = 8;
/// Longest a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one connection stays open, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The only path served.
pub const PATH: &str = "/metrics";

/// Produces the exposition text of one scrape.
pub type Render = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// Checks a `metrics.listen` value: empty is off (`None`); otherwise an
/// `ip:port` (a name would be resolved to who knows what).
pub fn parse_listen(listen: &str) -> Result<Option<SocketAddr>, String> {
    if listen.is_empty() {
        return Ok(None);
    }
    listen.parse().map(Some).map_err(|_| {
        format!(
            "metrics.listen {} is not an ip:port (e.g. 127.0.0.1:9431; empty turns the listener off)",
            quoted(listen)
        )
    })
}

/// Binds `addr`; the error names the address and the reason.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics.listen {addr}: cannot listen: {e}"))
}

/// Binds a `metrics.listen` value if it is set (`None`: off) and logs the
/// bound address.
pub async fn listen(value: &str) -> Result<Option<TcpListener>, String> {
    let Some(addr) = parse_listen(value)? else {
        return Ok(None);
    };
    let listener = bind(addr).await?;
    if let Ok(bound) = listener.local_addr() {
        tracing::info!(addr = %bound, "metrics listening on /metrics");
    }
    Ok(Some(listener))
}

/// Serves `listener` until `stop` resolves. Connections still open then
/// end by themselves within [`CONNECTION_TIMEOUT`].
pub async fn serve(listener: TcpListener, render: Render, stop: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut stop = std::pin::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: try again soon.
                    tracing::warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Fresh socket: the answer fits its send buffer, never blocks.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let render = render.clone();
                async move { Ok::<_, Infallible>(respond(&req, &render).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

/// The whole answer to a connection over [`MAX_CONNECTIONS`].
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 28\r\nconnection: close\r\n\r\ntoo many concurrent scrapes\n";

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn respond(req: &Request<Incoming>, render: &Render) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH {
        return text(
            StatusCode::NOT_FOUND,
            "not found: only /metrics is served\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: /metrics answers GET and HEAD\n",
        );
        resp.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let body = render().await;
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
    );
    resp
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn ask(addr: SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[test]
    fn listen_values() {
        assert_eq!(parse_listen(""), Ok(None));
        assert_eq!(
            parse_listen("127.0.0.1:9431"),
            Ok(Some("127.0.0.1:9431".parse().expect("an address")))
        );
        let err = parse_listen("localhost:9431").unwrap_err();
        assert!(
            err.contains("\"localhost:9431\"") && err.contains("ip:port"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn only_get_metrics_is_served_and_connections_are_bounded() {
        let listener = bind("127.0.0.1:0".parse().expect("an address"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let render: Render = Arc::new(|| Box::pin(async { "up 1\n# EOF\n".to_string() }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, render, async {
            let _ = rx.await;
        }));
        let close = "Connection: close\r\n\r\n";
        let ok = ask(
            addr,
            &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains(CONTENT_TYPE_OPENMETRICS) && ok.ends_with("up 1\n# EOF\n"),
            "{ok}"
        );
        let head = ask(
            addr,
            &format!("HEAD /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let other = ask(addr, &format!("GET / HTTP/1.1\r\nHost: x\r\n{close}")).await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let post = ask(
            addr,
            &format!("POST /metrics HTTP/1.1\r\nHost: x\r\n{close}"),
        )
        .await;
        assert!(
            post.starts_with("HTTP/1.1 405") && post.contains("allow: GET, HEAD"),
            "{post}"
        );

        // Idle connections hold every slot: the next one is turned away.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        // Accepting is asynchronous: the busy answer comes once all are taken.
        let mut busy = String::new();
        for _ in 0..50 {
            busy = ask(addr, "").await;
            if busy.starts_with("HTTP/1.1 503") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            busy.starts_with("HTTP/1.1 503") && busy.ends_with("scrapes\n"),
            "{busy}"
        );
        drop(idle);
        let _ = tx.send(());
        server.await.expect("the listener stops");
    }
}
