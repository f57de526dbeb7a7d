//! Drains waiting on a login, as this replica's eviction webhook refused
//! them: a bounded map that forgets on its own (`core::drain::Refusals`), and
//! the `sessionguard_drain_blocked{namespace,pod,node,user}` gauge computed
//! from it at scrape time, so an alert can name the person without a series
//! per refusal or a series that never ends.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use sessionguard_core::drain::{Refusal, Refusals};

use crate::io::cache::Cache;
use crate::reconcile::Context;
use crate::reconcile::notices::Waiting;

/// The refusals of this replica's eviction webhook.
#[derive(Debug, Default)]
pub struct BlockedDrains(Mutex<Refusals>);

impl BlockedDrains {
    pub fn record(&self, namespace: &str, pod: &str, refusal: Refusal, now: Timestamp) {
        self.0
            .lock()
            .expect("blocked drains lock")
            .record(namespace, pod, refusal, now);
    }

    /// Refusals still inside the window, of pods that are still the same
    /// pod and still protected: a logout ends the wait at once.
    pub fn current(&self, cache: &Cache, now: Timestamp) -> Vec<(String, String, Refusal)> {
        let all = self.0.lock().expect("blocked drains lock").current(now);
        all.into_iter()
            .filter(|(ns, pod, r)| {
                cache
                    .stores
                    .pods
                    .get(&ObjectRef::new(pod).within(ns))
                    .is_some_and(|p| {
                        p.uid().as_deref() == Some(r.uid.as_str()) && cache.our_pdb(&p).is_some()
                    })
            })
            .collect()
    }
}

/// The terminal notices tell the drains this replica refused.
impl Waiting for BlockedDrains {
    fn waiting(&self, ctx: &Context, now: Timestamp) -> Vec<(String, String, Refusal)> {
        self.current(&ctx.cache, now)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BlockedLabels {
    namespace: String,
    pod: String,
    node: String,
    user: String,
}

/// `sessionguard_drain_blocked`: 1 per pod whose eviction was refused in
/// the last `core::drain::BLOCKED_WINDOW` and is still protected.
pub struct BlockedGauge {
    pub blocked: Arc<BlockedDrains>,
    pub cache: Arc<Cache>,
}

impl std::fmt::Debug for BlockedGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlockedGauge")
    }
}

impl Collector for BlockedGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = encoder.encode_descriptor(
            "drain_blocked",
            "1 for each protected pod whose eviction this replica refused in the last 3 minutes (a drain or autoscaler waiting on a login); user is who holds it",
            None,
            MetricType::Gauge,
        )?;
        for (namespace, pod, r) in self.blocked.current(&self.cache, Timestamp::now()) {
            let labels = BlockedLabels {
                namespace,
                pod,
                node: r.node,
                user: r.user,
            };
            ConstGauge::new(1.0).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
