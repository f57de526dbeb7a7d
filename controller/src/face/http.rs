//! /metrics, /healthz and /readyz on the shared HTTP stack.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use sessionguard_http::{Body, Handler, shared_routes, text};

use crate::io::cache::Cache;
use crate::io::policies::NotInForce;
use crate::io::writer::Writer;

pub struct Health {
    pub registry: Registry,
    pub cache: Arc<Cache>,
    /// Only asked whether this replica leads.
    pub writer: Writer,
    /// Set while the admission policies are not in force: not ready, and why.
    pub not_in_force: Arc<NotInForce>,
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
    /// Ready once every cache has listed, leader or standby, so a rolling
    /// update waits for a replacement that can take over at once.
    /// Before the first Lease attempt has answered the role is unknown, and a
    /// 200 "standby" would flip to 503 a moment later when the replica wins.
    fn readiness(&self) -> Response<Body> {
        if let Some(why) = self.not_in_force.why() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not acting: admission policies not in force: {why} \
                     (or accept running without them: --require-admission-policies=false)\n"
                ),
            );
        }
        if !self.writer.is_role_known() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: the Lease has not been tried yet\n",
            );
        }
        // Standbys watch too (warm caches; their webhooks answer from them),
        // so either role is ready only once every cache has listed.
        let role = if self.writer.is_leader() {
            "leader"
        } else {
            "standby"
        };
        let waiting = self.cache.waiting_for();
        if waiting.is_empty() {
            text(StatusCode::OK, format!("{role}\n"))
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{role}, caches not yet synced: waiting for {}\n",
                    waiting.join(", ")
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use http_body_util::BodyExt;
    use kube::Client;

    use super::*;
    use crate::fixtures::api;
    use crate::io::metrics::Metrics;
    use crate::io::watches;
    use crate::io::writer::WriteGate;

    async fn answer(h: &Health) -> (u16, String) {
        let r = h.readiness();
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readiness_waits_for_the_role_then_for_the_caches() {
        let (service, _api) = api::pair();
        let gate = Arc::new(WriteGate::default());
        let writer = Writer::new(
            Client::new(service, "default"),
            gate.clone(),
            Duration::from_secs(1),
            Metrics::default(),
        );
        let (stores, _writers) = watches::stores();
        let health = Health {
            registry: Registry::default(),
            cache: Arc::new(Cache::new(stores, Duration::from_secs(120))),
            writer,
            not_in_force: Arc::new(NotInForce::default()),
        };
        assert_eq!(
            answer(&health).await,
            (503, "starting: the Lease has not been tried yet\n".into())
        );
        gate.role_known();
        let (code, body) = answer(&health).await;
        assert_eq!(code, 503, "a cold standby cannot take over at once");
        assert!(
            body.starts_with("standby, caches not yet synced: waiting for pods"),
            "{body}"
        );
        gate.open_until(Instant::now() + Duration::from_secs(60));
        let (code, body) = answer(&health).await;
        assert_eq!(code, 503);
        assert!(
            body.contains("waiting for pods, poddisruptionbudgets")
                && body.contains("sessionreports"),
            "names the caches: {body}"
        );
        health.not_in_force.set(Some(
            "ValidatingAdmissionPolicy sg-controller-pods does not exist".into(),
        ));
        let (code, body) = answer(&health).await;
        assert_eq!(code, 503);
        assert!(
            body.starts_with("not acting: admission policies not in force: ValidatingAdmissionPolicy sg-controller-pods does not exist")
                && body.contains("--require-admission-policies=false"),
            "{body}"
        );
    }
}
