//! Webhook metrics, registered next to the controller's under `sessionguard_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sessionguard_http::Declared;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub webhook: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    /// Requests refused for want of the path token or of a client
    /// certificate (404, nothing recorded).
    pub unauthenticated: Family<ReasonLabels, Counter>,
    pub duration: Family<WebhookLabels, Histogram>,
    /// The whole request as this server saw it: from the handler's first
    /// look at it (headers read) through the body, routing, the decision
    /// and encoding, to the response handed to the connection for writing.
    pub served: Family<WebhookLabels, Histogram>,
    pub records: Family<OutcomeLabels, Counter>,
    pub queue_depth: Gauge,
    pub cert_not_after: Gauge,
    pub cert_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            unauthenticated: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 14))
            }),
            served: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
            }),
            records: Family::default(),
            queue_depth: Gauge::default(),
            cert_not_after: Gauge::default(),
            cert_errors: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("sessionguard_webhook");
        r.register(
            "requests",
            "Admission requests by webhook (connect, guard, mutate) and outcome (allowed, denied, dry_run, invalid)",
            Declared(self.requests.clone()),
        );
        r.register(
            "unauthenticated_requests",
            "Requests answered 404 because their path lacks a token this replica accepts, or (with --webhook-client-ca) they came without a client certificate (reason: no_token, wrong_token, no_client_cert); nothing is recorded for them",
            Declared(self.unauthenticated.clone()),
        );
        r.register(
            "request_duration_seconds",
            "Time to answer one admission request, by webhook",
            Declared(self.duration.clone()),
        );
        r.register(
            "duration_seconds",
            "Time from a request's arrival (headers read) to its response ready to write, body read and decision included, by webhook (none: refused before routing)",
            Declared(self.served.clone()),
        );
        r.register(
            "records",
            "Interaction records from the webhook by outcome (recorded, corrected: recorded after bounding or restoring the record read back, shed, closed, pod_gone, out_of_scope: a namespace not in --namespaces, failed)",
            Declared(self.records.clone()),
        );
        r.register(
            "queue_depth",
            "Interaction records waiting to be written",
            self.queue_depth.clone(),
        );
        r.register(
            "cert_not_after_seconds",
            "Expiry (Unix time) of the serving certificate in use",
            self.cert_not_after.clone(),
        );
        r.register(
            "cert_errors",
            "Failures to load, generate, store or publish (caBundle) the certificate",
            self.cert_errors.clone(),
        );
    }

    pub fn request(&self, webhook: &'static str, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { webhook, outcome })
            .inc();
    }

    pub fn unauthenticated(&self, reason: &'static str) {
        self.unauthenticated
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn record(&self, outcome: &'static str) {
        self.records.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
