//! The agent's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, and
//! `GET /sessions` (the current snapshot as JSON, the document the
//! controller receives, argv left out unless `--sessions-argv`), on the
//! shared HTTP stack: it only ever serves Prometheus, the kubelet's probes,
//! and operators with curl. `/sessions` shares the metrics port, and so its
//! NetworkPolicy (only `networkPolicy.metricsFrom` may reach either).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use sessionguard_http::{Body, Handler, json, shared_routes, text};
use tokio::net::TcpListener;

use crate::Error;
use crate::snapshot::SnapshotRx;

pub struct Server {
    registry: Registry,
    snapshot: SnapshotRx,
    /// Serve argv on `/sessions` (opt-in: command lines can hold secrets).
    argv: bool,
}

impl Server {
    pub fn new(registry: Registry, snapshot: SnapshotRx, argv: bool) -> Arc<Self> {
        Arc::new(Self {
            registry,
            snapshot,
            argv,
        })
    }

    pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
        sessionguard_http::bind(addr)
            .await
            .map_err(|e| Error::Http(e.to_string()))
    }

    /// Serves until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        sessionguard_http::serve("agent", listener, None, self).await
    }
}

impl Handler for Server {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(shared) = shared_routes(&req, &self.registry) {
            return shared;
        }
        match req.uri().path() {
            "/readyz" => {
                let snap = self.snapshot.borrow();
                match &snap.filtered {
                    Some(f) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("proc filtered ({}): {f}\n", f.reason.label()),
                    ),
                    None if !snap.ready => {
                        text(StatusCode::SERVICE_UNAVAILABLE, "first scan not finished\n")
                    }
                    None => text(StatusCode::OK, "ok\n"),
                }
            }
            "/sessions" => {
                let mut report = self.snapshot.borrow().report();
                if !self.argv {
                    report.sessions.iter_mut().for_each(|s| s.argv.clear());
                }
                json(serde_json::to_vec_pretty(&report).expect("reports always serialise"))
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "try /sessions, /metrics, /healthz or /readyz\n",
            ),
        }
    }
}
