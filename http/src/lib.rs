//! The one HTTP serving stack behind every sessionguard endpoint: the agent's
//! `/metrics`, `/healthz`, `/readyz` and `/sessions`, the controller's
//! metrics and health, and the admission webhooks over TLS.
//!
//! One accept loop, one connection builder, one set of limits: a slow or
//! hostile client gets the same treatment on every port (headers must arrive
//! within [`HEADER_TIMEOUT`], a TLS handshake within [`HANDSHAKE_TIMEOUT`]),
//! and a handler only maps a request to a response.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use hyper;

mod declared;
pub use declared::Declared;

/// A client that opens a connection and never finishes its request headers
/// holds a task and a socket; past this it is dropped.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The same bound for a TLS client that never completes its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub type Body = Full<Bytes>;

/// Set on every request that came over TLS: whether the client presented a
/// certificate the server's client verifier accepted. (A client with a
/// certificate the verifier refuses fails the handshake: no request at all.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCertificate(pub bool);

/// The address a request came from, in every request's extensions: a
/// handler may answer some paths to loopback callers only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Peer {
    /// A caller on this host's (or, in a pod, this pod's) loopback, which is
    /// where `kubectl port-forward` arrives from.
    pub fn is_loopback(&self) -> bool {
        match self.0.ip() {
            std::net::IpAddr::V4(ip) => ip.is_loopback(),
            std::net::IpAddr::V6(ip) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        }
    }
}

/// Maps one request to one response. Handlers never fail: an error is a
/// response with a status and a message that says what to do.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// Binds `addr`, saying which address could not be bound and why.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves `handler` on `listener` until the task is dropped, over TLS when
/// `tls` is given. `name` labels the log lines of this port.
pub async fn serve<H: Handler>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Arc<H>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                tracing::warn!(server = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(name, peer, stream, None, handler).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let certified = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|c| !c.is_empty());
                            let cert = Some(ClientCertificate(certified));
                            connection(name, peer, stream, cert, handler).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(server = name, %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(server = name, %peer, "TLS handshake timed out")
                        }
                    }
                }
            }
        });
    }
}

async fn connection<S, H>(
    name: &'static str,
    peer: SocketAddr,
    stream: S,
    cert: Option<ClientCertificate>,
    handler: Arc<H>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let handler = handler.clone();
        req.extensions_mut().insert(Peer(peer));
        if let Some(cert) = cert {
            req.extensions_mut().insert(cert);
        }
        async move { Ok::<_, Infallible>(handler.handle(req).await) }
    });
    if let Err(e) = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc)
        .await
    {
        tracing::debug!(server = name, %peer, error = %e, "connection ended with an error");
    }
}

// === responses ===

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, "text/plain; charset=utf-8", body)
}

/// A JSON response (the body is already encoded).
pub fn json(body: impl Into<Bytes>) -> Response<Body> {
    with_type(StatusCode::OK, "application/json", body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .expect("status and a static header always build")
}

/// The routes every plain-HTTP port shares: GET only, `/metrics` from
/// `registry`, `/healthz`. `None` leaves the request to the handler's own
/// routes (`/readyz`, `/sessions`, ...).
pub fn shared_routes<B>(req: &Request<B>, registry: &Registry) -> Option<Response<Body>> {
    if req.method() != hyper::Method::GET {
        return Some(text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n"));
    }
    match req.uri().path() {
        "/metrics" => Some(metrics(registry)),
        "/healthz" => Some(text(StatusCode::OK, "ok\n")),
        _ => None,
    }
}

/// The registry in OpenMetrics text, as Prometheus scrapes it.
pub fn metrics(registry: &Registry) -> Response<Body> {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Echo;

    impl Handler for Echo {
        async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
            if req.method() != Method::GET {
                return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
            }
            text(StatusCode::OK, format!("path {}\n", req.uri().path()))
        }
    }

    async fn start() -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve("test", listener, None, Arc::new(Echo)));
        addr
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn routes_a_request_to_the_handler() {
        let addr = start().await;
        let out = exchange(
            addr,
            b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("text/plain; charset=utf-8"), "{out}");
        assert!(out.ends_with("path /x\n"), "{out}");
        let out = exchange(
            addr,
            b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_sends_its_headers_is_dropped() {
        let addr = start().await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
        // The paused clock jumps past the timeout once every task is idle;
        // the server then closes the connection (EOF or a 408 before it).
        let mut out = Vec::new();
        let read = tokio::time::timeout(HEADER_TIMEOUT * 2, s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the server kept a half-sent request open");
        let out = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 408"), "{out}");
    }

    #[test]
    fn metrics_are_openmetrics_text() {
        let mut r = Registry::default();
        let c: prometheus_client::metrics::counter::Counter = Default::default();
        c.inc();
        r.register("hits", "Hits", c);
        let resp = metrics(&r);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }
}
