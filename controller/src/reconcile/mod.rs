//! The reconciles: gather from the cache, ask a decision in core, hand the
//! result to the writer. `pod` (protection, interaction record, session
//! events, drift eviction through `evict`) and `rollout` (OnDelete
//! StatefulSets).

pub mod evict;
pub mod memory;
pub mod node;
pub mod notices;
pub mod pdb;
pub mod pod;
pub mod rollout;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::core::Status;
use kube::runtime::reflector::ObjectRef;
use sessionguard_api::CachedPod;
use sessionguard_core::pod_plan;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::Result;
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
    /// A rollout blocked on the same pod this long is stuck (event, gauge, alert).
    pub rollout_stuck_after: Duration,
}

/// What every reconcile is handed.
pub struct Context {
    pub cache: Arc<Cache>,
    pub writer: Writer,
    pub events: Recorder,
    pub metrics: Metrics,
    pub settings: Settings,
    pub memory: Arc<Memory>,
    /// Wakes a StatefulSet's rollout when one of its pods changed.
    pub statefulsets: UnboundedSender<ObjectRef<StatefulSet>>,
    /// Asks the node check ([`node`]) to look at a pod's node again.
    pub nodes: UnboundedSender<String>,
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

/// Evicts `pod` through the eviction API (so every PDB is honoured), never a
/// newer pod that took its name meanwhile (UID precondition).
///
/// Built here rather than with kube's `Api::evict`, whose body names the field
/// `delete_options`: the API server knows only `deleteOptions` and drops the
/// unknown field, and the UID precondition with it.
async fn evict_pod(ctx: &Context, pod: &CachedPod) -> Result<()> {
    let api: Api<CachedPod> = Api::namespaced(
        ctx.writer.client().clone(),
        &pod.namespace().unwrap_or_default(),
    );
    let eviction = Eviction {
        metadata: ObjectMeta {
            name: Some(pod.name_any()),
            namespace: pod.namespace(),
            ..Default::default()
        },
        delete_options: Some(DeleteOptions {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        }),
    };
    let (name, pp) = (pod.name_any(), PostParams::default());
    let post = api.create_subresource("eviction", &name, &pp, &eviction);
    let _: Status = ctx.writer.write("evict_pod", post).await?;
    Ok(())
}
