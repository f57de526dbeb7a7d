//! The HTTPS listener for the webhooks (hyper 1 over tokio-rustls).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::review::{self, Context};

/// An AdmissionReview carries the old and the new object; pods stay far
/// below etcd's 1.5 MiB each, so this leaves room without inviting abuse.
const MAX_BODY: usize = 8 << 20;

pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ctx: Arc<Context>,
}

impl Server {
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<ServerConfig>,
        ctx: Arc<Context>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            acceptor: TlsAcceptor::from(tls),
            ctx,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let ctx = self.ctx.clone();
            tokio::spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let svc = service_fn(move |req| {
                    let ctx = ctx.clone();
                    async move { Ok::<_, Infallible>(serve(req, &ctx).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
                }
            });
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

pub async fn serve(req: Request<Incoming>, ctx: &Context) -> Response<Full<Bytes>> {
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        return text(StatusCode::OK, "ok\n".into());
    }
    if req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "POST an AdmissionReview\n".into(),
        );
    }
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading the body: {e} (limit {MAX_BODY} bytes)\n"),
            );
        }
    };
    match review::handle(ctx, &path, &body) {
        Ok(out) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(out)))
            .expect("static response parts"),
        Err(review::BadRequest(why)) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    }
}
