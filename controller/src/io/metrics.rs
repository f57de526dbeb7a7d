//! Prometheus counters and histograms, updated as things happen. The per-pod
//! gauges are computed at scrape time by the metrics face
//! (`face/gauges.rs`), so they can never go stale or leak series.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sessionguard_http::Declared;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    pub reason: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub writes: Family<OpLabels, Counter>,
    pub watcher_errors: Family<KindLabels, Counter>,
    pub report_errors: Family<KindLabels, Counter>,
    pub report_latency: Histogram,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub evictions: Family<EvictionLabels, Counter>,
    pub leader: Gauge,
    /// Admission policies of ours not in force (see `io/policies.rs`).
    pub policies_missing: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            writes: Family::default(),
            watcher_errors: Family::default(),
            report_errors: Family::default(),
            report_latency: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            reconcile_errors: Family::default(),
            evictions: Family::default(),
            leader: Gauge::default(),
            policies_missing: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Registers everything under the `sessionguard_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("sessionguard");
        r.register(
            "writes",
            "Writes to the API server by operation and outcome (ok, error, timeout)",
            Declared(self.writes.clone()),
        );
        r.register(
            "watcher_errors",
            "Errors from watches on the API server, by resource",
            Declared(self.watcher_errors.clone()),
        );
        r.register(
            "report_errors",
            "Session reports or sessions refused, by reason",
            Declared(self.report_errors.clone()),
        );
        r.register(
            "report_latency_seconds",
            "Time from an agent's scan (generated_at) to the controller processing the report",
            self.report_latency.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile, by controller",
            Declared(self.reconcile_duration.clone()),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by controller and error kind",
            Declared(self.reconcile_errors.clone()),
        );
        r.register(
            "evictions",
            "Eviction attempts by reason (drift, rollout) and outcome",
            Declared(self.evictions.clone()),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader Lease",
            self.leader.clone(),
        );
        r.register(
            "admission_policies_missing",
            "Admission policies narrowing this controller that are missing, unbound or not as this version ships them; while above 0 the controller does not act (unless --require-admission-policies=false)",
            self.policies_missing.clone(),
        );
    }

    pub fn write(&self, op: &'static str, outcome: &'static str) {
        self.writes.get_or_create(&OpLabels { op, outcome }).inc();
    }

    pub fn eviction(&self, reason: &'static str, outcome: &'static str) {
        self.evictions
            .get_or_create(&EvictionLabels { reason, outcome })
            .inc();
    }

    pub fn timer(&self, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self
                .reconcile_duration
                .get_or_create(&ControllerLabels { controller })
                .clone(),
            start: Instant::now(),
        }
    }
}

/// Observes a reconcile's duration when dropped, whichever way it returns.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
