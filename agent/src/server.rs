//! The agent's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, and
//! `GET /sessions` (the current snapshot as JSON, the same document the
//! controller receives). Plain HTTP/1 over hyper: it only ever serves
//! Prometheus, the kubelet's probes, and operators with curl.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::Error;
use crate::snapshot::SnapshotRx;

pub struct Server {
    registry: Registry,
    snapshot: SnapshotRx,
}

impl Server {
    pub fn new(registry: Registry, snapshot: SnapshotRx) -> Arc<Self> {
        Arc::new(Self { registry, snapshot })
    }

    pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
        TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Http(format!("cannot listen on {addr}: {e}")))
    }

    /// Serves until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let this = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.route(req)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(error = %e, "connection ended");
                }
            });
        }
    }

    fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
        }
        match req.uri().path() {
            "/metrics" => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => Response::builder()
                        .header(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(Full::new(Bytes::from(body)))
                        .expect("static response"),
                    Err(_) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics encoding failed\n",
                    ),
                }
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.snapshot.borrow().ready {
                    text(StatusCode::OK, "ok\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "first scan not finished\n")
                }
            }
            "/sessions" => {
                let report = self.snapshot.borrow().report();
                let body = serde_json::to_vec_pretty(&report).expect("reports always serialise");
                Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .expect("static response")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "try /sessions, /metrics, /healthz or /readyz\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response")
}
