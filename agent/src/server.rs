//! The agent's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, and
//! `GET /sessions` (the current snapshot as JSON, the document the
//! controller receives, argv left out unless `--sessions-argv`), on the
//! shared HTTP stack: it only ever serves Prometheus, the kubelet's probes,
//! and operators with curl. `/sessions` names users, commands and pods, so
//! it answers only callers on loopback (`kubectl port-forward` arrives
//! there) unless `--sessions-remote`; the metrics port's NetworkPolicy
//! (`networkPolicy.metricsFrom`) then bounds who else may ask.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use sessionguard_http::{Body, Handler, Peer, json, shared_routes, text};
use tokio::net::TcpListener;

use crate::Error;
use crate::snapshot::SnapshotRx;

pub struct Server {
    registry: Registry,
    snapshot: SnapshotRx,
    /// Serve argv on `/sessions` (opt-in: command lines can hold secrets).
    argv: bool,
    /// Serve `/sessions` to callers off loopback too.
    remote: bool,
}

impl Server {
    pub fn new(registry: Registry, snapshot: SnapshotRx, argv: bool, remote: bool) -> Arc<Self> {
        Arc::new(Self {
            registry,
            snapshot,
            argv,
            remote,
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
            "/sessions" if !sessions_allowed(self.remote, req.extensions().get::<Peer>()) => text(
                StatusCode::FORBIDDEN,
                "GET /sessions names users and commands: it is served on loopback only. \
                     Use `kubectl port-forward <agent pod> 9102` and ask 127.0.0.1, or \
                     `kubectl exec <agent pod> -- sessionguard-agent scan`; \
                     --sessions-remote=true serves it to every caller the NetworkPolicy admits\n",
            ),
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

/// Whether `/sessions` answers this caller: every caller with `remote`, else
/// only one on loopback (a request without a known peer is refused).
fn sessions_allowed(remote: bool, peer: Option<&Peer>) -> bool {
    remote || peer.is_some_and(Peer::is_loopback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Peer {
        Peer(s.parse().unwrap())
    }

    #[test]
    fn sessions_are_served_on_loopback_unless_remote_callers_are_allowed() {
        for local in [
            "127.0.0.1:5000",
            "127.3.2.1:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert!(sessions_allowed(false, Some(&peer(local))), "{local}");
        }
        for far in [
            "10.244.1.7:5000",
            "192.168.0.1:5000",
            "[fd00::1]:5000",
            "[::ffff:10.0.0.1]:5000",
        ] {
            assert!(!sessions_allowed(false, Some(&peer(far))), "{far}");
            assert!(sessions_allowed(true, Some(&peer(far))), "{far}");
        }
        assert!(!sessions_allowed(false, None));
    }
}
