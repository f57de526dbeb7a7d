//! Prometheus metrics. Counters and histograms are updated as things happen;
//! per-pod gauges are computed at scrape time from the stores and the report
//! index (see [`PodGauges`]), so they can never go stale or leak series.

use std::sync::{Arc, Weak};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::State;

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
        }
    }
}

impl Metrics {
    /// Registers everything under the `sessionguard_` prefix. `state` is held
    /// weakly so the registry (owned by the HTTP server) does not keep the
    /// controller's state alive.
    pub fn register(&self, registry: &mut Registry, state: Weak<State>) {
        let r = registry.sub_registry_with_prefix("sessionguard");
        r.register(
            "writes",
            "Writes to the API server by operation and outcome (ok, error, timeout)",
            self.writes.clone(),
        );
        r.register(
            "watcher_errors",
            "Errors from watches on the API server, by resource",
            self.watcher_errors.clone(),
        );
        r.register(
            "report_errors",
            "Session reports or sessions refused, by reason",
            self.report_errors.clone(),
        );
        r.register(
            "report_latency_seconds",
            "Time from an agent's scan (generated_at) to the controller processing the report",
            self.report_latency.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile, by controller",
            self.reconcile_duration.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by controller and error kind",
            self.reconcile_errors.clone(),
        );
        r.register(
            "evictions",
            "Eviction attempts by reason (drift, rollout) and outcome",
            self.evictions.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the leader Lease",
            self.leader.clone(),
        );
        r.register_collector(Box::new(PodGauges(state)));
    }

    pub fn write(&self, op: &'static str, outcome: &'static str) {
        self.writes.get_or_create(&OpLabels { op, outcome }).inc();
    }

    /// Runs one API write under `timeout`, counting ok/error/timeout by op.
    pub async fn timed_write<T>(
        &self,
        op: &'static str,
        timeout: std::time::Duration,
        fut: impl std::future::Future<Output = kube::Result<T>>,
    ) -> crate::error::Result<T> {
        use crate::error::Error;
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(v)) => {
                self.write(op, "ok");
                Ok(v)
            }
            Ok(Err(source)) => {
                self.write(op, "error");
                Err(Error::Kube { op, source })
            }
            Err(_) => {
                self.write(op, "timeout");
                Err(Error::Timeout {
                    op,
                    secs: timeout.as_secs(),
                })
            }
        }
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

/// Name, help and series of one scrape-time gauge family.
type Family4 = (&'static str, &'static str, Vec<(PodLabels, f64)>);

/// Per-pod gauges computed on each scrape.
#[derive(Debug)]
struct PodGauges(Weak<State>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    pod: String,
}

impl Collector for PodGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(state) = self.0.upgrade() else {
            return Ok(());
        };
        let view = state.pod_view();
        let families: [Family4; 4] = [
            (
                "pod_protecting",
                "1 while sessionguard holds a PodDisruptionBudget for the pod, 0 for opted-in pods without one",
                view.iter()
                    .filter(|p| p.opted_in)
                    .map(|p| (p.labels(), p.protecting as u8 as f64))
                    .collect(),
            ),
            (
                "pod_pending_updates",
                "1 while a pod of a protected OnDelete StatefulSet runs an outdated revision",
                view.iter()
                    .filter_map(|p| p.pending_update.map(|u| (p.labels(), u as u8 as f64)))
                    .collect(),
            ),
            (
                "pod_sessions",
                "Live login sessions (consoles excluded) per pod, from fresh agent reports",
                view.iter()
                    .filter(|p| p.sessions > 0)
                    .map(|p| (p.labels(), p.sessions as f64))
                    .collect(),
            ),
            (
                "pod_oldest_session_age_seconds",
                "Age of the oldest live login session per pod",
                view.iter()
                    .filter_map(|p| p.oldest_session_age.map(|a| (p.labels(), a)))
                    .collect(),
            ),
        ];
        for (name, help, series) in families {
            let mut m = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (labels, value) in series {
                let g = ConstGauge::new(value);
                g.encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// One pod's numbers for the per-pod gauges.
#[derive(Debug)]
pub struct PodFigures {
    pub namespace: String,
    pub pod: String,
    pub opted_in: bool,
    pub protecting: bool,
    pub pending_update: Option<bool>,
    pub sessions: usize,
    pub oldest_session_age: Option<f64>,
}

impl PodFigures {
    fn labels(&self) -> PodLabels {
        PodLabels {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
        }
    }
}

pub fn new_registry(metrics: &Metrics, state: &Arc<State>) -> Registry {
    let mut registry = Registry::default();
    metrics.register(&mut registry, Arc::downgrade(state));
    registry
}
