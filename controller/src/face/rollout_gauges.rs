//! `sessionguard_rollout_stuck`, computed at scrape time for every StatefulSet
//! whose rollout we drive, from the stall the rollout reconcile keeps: a set
//! deleted while stuck leaves no series behind.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use sessionguard_core::rollout_stall::is_stuck;

use crate::io::cache::Cache;
use crate::reconcile::memory::Memory;
use crate::reconcile::rollout::manages;

pub struct RolloutGauges {
    pub cache: Arc<Cache>,
    pub memory: Arc<Memory>,
    /// `--rollout-stuck-after`.
    pub after: Duration,
}

impl std::fmt::Debug for RolloutGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RolloutGauges")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SetLabels {
    namespace: String,
    statefulset: String,
}

impl Collector for RolloutGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Timestamp::now();
        let mut m = encoder.encode_descriptor(
            "rollout_stuck",
            "1 while the rollout of a StatefulSet we drive has been blocked on the same pod for --rollout-stuck-after",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for sts in self.cache.stores.statefulsets.state() {
            if !manages(&sts, &self.cache.set_opt_in(&sts)) {
                continue;
            }
            let stuck = self
                .memory
                .stall_of(&sts.uid().unwrap_or_default())
                .is_some_and(|s| is_stuck(&s, now, self.after));
            let labels = SetLabels {
                namespace: sts.namespace().unwrap_or_default(),
                statefulset: sts.name_any(),
            };
            ConstGauge::new(stuck as u8 as f64).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
