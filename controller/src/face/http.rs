//! /metrics, /healthz and /readyz on the shared HTTP stack.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use sessionguard_http::{Body, Handler, shared_routes, text};

use crate::io::cache::Cache;
use crate::io::writer::Writer;

pub struct Health {
    pub registry: Registry,
    pub cache: Arc<Cache>,
    /// Only asked whether this replica leads.
    pub writer: Writer,
}

impl Handler for Health {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(shared) = shared_routes(&req, &self.registry) {
            return shared;
        }
        match req.uri().path() {
            "/readyz" => self.readiness(),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /metrics, /healthz or /readyz\n",
            ),
        }
    }
}

impl Health {
    /// A standby is ready (it can take over); the leader once its caches
    /// have listed, so a rolling update waits for a working replacement.
    fn readiness(&self) -> Response<Body> {
        if !self.writer.is_leader() {
            return text(StatusCode::OK, "standby\n");
        }
        let waiting = self.cache.waiting_for();
        if waiting.is_empty() {
            text(StatusCode::OK, "leader\n")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "leader, caches not yet synced: waiting for {}\n",
                    waiting.join(", ")
                ),
            )
        }
    }
}
