//! The per-pod gauges, computed from the cache at scrape time so they can
//! never go stale or leak series.

use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use sessionguard_core::{Session, keys};

use crate::io::cache::Cache;
use crate::io::report_index::Liveness;
use crate::reconcile::rollout::manages;

/// Name, help and series of one scrape-time gauge family.
type Family4 = (&'static str, &'static str, Vec<(PodLabels, f64)>);

/// Per-pod gauges computed on each scrape.
pub struct PodGauges(pub Arc<Cache>);

impl std::fmt::Debug for PodGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodGauges")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    pod: String,
}

impl Collector for PodGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let view = pod_view(&self.0);
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
        // Not per pod, but computed the same way: from the cache, at scrape.
        let heard = ConstGauge::new(self.0.path_is_up() as u8 as f64);
        heard.encode(encoder.encode_descriptor(
            "agents_hearable",
            "1 while agents can be heard (the report watch streams and the API server answers); 0 means no node turns silent",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?)?;
        let mut m = encoder.encode_descriptor(
            "cordoned_node_protected_pods",
            "Protected pods on each cordoned node: a drain of that node waits for their logins",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (node, pods) in cordoned_view(&self.0) {
            let g = ConstGauge::new(pods as f64);
            g.encode(m.encode_family(&NodeLabels { node })?)?;
        }
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// Cordoned nodes holding protected pods, with how many.
pub fn cordoned_view(cache: &Cache) -> Vec<(String, usize)> {
    let mut per_node: std::collections::BTreeMap<String, usize> = Default::default();
    for pod in cache.stores.pods.state() {
        let Some(node) = pod.node_name.as_deref() else {
            continue;
        };
        if cache.our_pdb(&pod).is_some() && cache.cordoned(node) {
            *per_node.entry(node.to_string()).or_default() += 1;
        }
    }
    per_node.into_iter().collect()
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

/// Figures for the per-pod gauges, computed from current state.
pub fn pod_view(cache: &Cache) -> Vec<PodFigures> {
    let now = Timestamp::now();
    let mut out = Vec::new();
    for pod in cache.stores.pods.state() {
        let opt = cache.opt_in(&pod);
        let (sessions, oldest) = match cache.liveness(&pod, now) {
            Liveness::Fresh { sessions, .. } => {
                let logins: Vec<&Session> = sessions.iter().filter(|s| s.is_login()).collect();
                let oldest = logins
                    .iter()
                    .map(|s| s.started_at)
                    .min()
                    .map(|t| now.duration_since(t).as_secs_f64().max(0.0));
                (logins.len(), oldest)
            }
            _ => (0, None),
        };
        let protecting = cache.our_pdb(&pod).is_some();
        let pending_update = cache.owner_statefulset(&pod).and_then(|sts| {
            manages(&sts, &cache.set_opt_in(&sts)).then(|| {
                let update = sts
                    .status
                    .as_ref()
                    .and_then(|s| s.update_revision.as_deref());
                update.is_some()
                    && pod.labels().get(keys::REVISION_HASH).map(String::as_str) != update
            })
        });
        if !opt.protect && sessions == 0 && !protecting {
            continue;
        }
        out.push(PodFigures {
            namespace: pod.namespace().unwrap_or_default(),
            pod: pod.name_any(),
            opted_in: opt.protect,
            protecting,
            pending_update,
            sessions,
            oldest_session_age: oldest,
        });
    }
    out
}
