//! /metrics, /healthz and /readyz over plain HTTP (hyper 1).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::state::State;

pub struct Server {
    listener: TcpListener,
    registry: Arc<Registry>,
    state: Arc<State>,
}

impl Server {
    pub async fn bind(
        addr: SocketAddr,
        registry: Registry,
        state: Arc<State>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            registry: Arc::new(registry),
            state,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run(self) {
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let registry = self.registry.clone();
            let state = self.state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let registry = registry.clone();
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(req, &registry, &state)) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    tracing::debug!(error = %e, "http connection error");
                }
            });
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response")
}

fn handle(req: Request<Incoming>, registry: &Registry, state: &State) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut buf = String::new();
            if let Err(e) = prometheus_client::encoding::text::encode(&mut buf, registry) {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding metrics failed: {e}\n"),
                );
            }
            Response::builder()
                .header(
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Full::new(Bytes::from(buf)))
                .expect("static response")
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // A standby is ready (it can take over); the leader once its stores
        // have listed, so a rolling update waits for a working replacement.
        "/readyz" => {
            if state.is_leader() && !state.synced() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "leader, caches not yet synced\n",
                )
            } else if state.is_leader() {
                text(StatusCode::OK, "leader\n")
            } else {
                text(StatusCode::OK, "standby\n")
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz or /readyz\n",
        ),
    }
}
