//! The reconciles: gather from the cache, ask a decision in core, hand the
//! result to the writer. `pod` (protection, interaction record, session
//! events, drift eviction through `evict`) and `rollout` (OnDelete
//! StatefulSets).

pub mod evict;
pub mod memory;
pub mod pdb;
pub mod pod;
pub mod rollout;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::reflector::ObjectRef;
use sessionguard_core::pod_plan;
use tokio::sync::mpsc::UnboundedSender;

use crate::io::cache::Cache;
use crate::io::events::Recorder;
use crate::io::metrics::{ErrorLabels, Metrics};
use crate::io::writer::Writer;
use memory::Memory;

/// The controller's settings the reconciles read (from its flags).
#[derive(Clone, Debug)]
pub struct Settings {
    pub plan: pod_plan::Settings,
    pub evict: evict::Settings,
    /// Replace outdated pods of protected OnDelete StatefulSets.
    pub rollout: bool,
}

/// What every reconcile is handed.
pub struct Context {
    pub cache: Arc<Cache>,
    pub writer: Writer,
    pub events: Recorder,
    pub metrics: Metrics,
    pub settings: Settings,
    pub memory: Memory,
    /// Wakes a StatefulSet's rollout when one of its pods changed.
    pub statefulsets: UnboundedSender<ObjectRef<StatefulSet>>,
}

impl Context {
    /// Counts a failed reconcile; the controller retries after `retry`.
    fn failed(
        &self,
        controller: &'static str,
        kind: &'static str,
        retry: Duration,
    ) -> kube::runtime::controller::Action {
        self.metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels { controller, kind })
            .inc();
        kube::runtime::controller::Action::requeue(retry)
    }
}
