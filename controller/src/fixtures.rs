//! Test fixtures that read like prose: `pod("web-0").protected().on_node("a")`.
//!
//! The objects live here; [`world`] puts them in a controller's caches and
//! [`api`] plays the API server the reconciles write to.

pub mod api;
pub mod world;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetSpec, StatefulSetStatus, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use sessionguard_api::CachedPod;
use sessionguard_core::fixtures::{SessionBuilder, protect_pass, session as core_session};
use sessionguard_core::interaction::{Interaction, login_user, rfc3339};
use sessionguard_core::keys;

use crate::reconcile::pdb;

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("RFC3339 literal")
}

/// A UID that differs for every name (and stays the same across runs).
fn uid_for(name: &str) -> String {
    let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    format!("0f1e2d3c-4b5a-6978-8796-{:012x}", h & 0xffff_ffff_ffff)
}

// === impl PodBuilder ===

pub struct PodBuilder(CachedPod);

pub fn pod(name: &str) -> PodBuilder {
    PodBuilder(CachedPod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ops".into()),
            uid: Some(uid_for(name)),
            resource_version: Some("41".into()),
            labels: Some(BTreeMap::new()),
            annotations: Some(BTreeMap::new()),
            ..Default::default()
        },
        node_name: Some("node-a".into()),
        ..CachedPod::default()
    })
}

impl PodBuilder {
    pub fn labelled(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_default()
            .insert(k.into(), v.into());
        self
    }
    pub fn annotated(mut self, k: &str, v: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(k.into(), v.into());
        self
    }
    pub fn protected(self) -> Self {
        self.labelled(keys::PROTECT, "true")
    }
    /// As left by an earlier protect pass.
    pub fn was_protected(mut self) -> Self {
        let (labels, annotations) = protect_pass(self.0.metadata.uid.as_deref().unwrap());
        let meta = &mut self.0.metadata;
        meta.labels.get_or_insert_default().extend(labels);
        meta.annotations.get_or_insert_default().extend(annotations);
        self
    }
    pub fn on_node(mut self, node: &str) -> Self {
        self.0.node_name = Some(node.into());
        self
    }
    /// The interaction record of one login by `uid` at `at`, as the
    /// controller writes it where drift eviction applies (TTL as given, no
    /// extension).
    pub fn interacted(mut self, at: &str, uid: u32, ttl: Duration) -> Self {
        let record = Interaction::record(None, ts(at), &login_user(uid), ttl);
        for (k, v) in record.to_annotations() {
            self = self.annotated(&k, &v);
        }
        // Without an extension evict-at does not depend on the cap.
        let evict_at = rfc3339(record.evict_at(Duration::ZERO));
        self.annotated(keys::EVICT_AT, &evict_at)
            .labelled(keys::INTERACTED, "true")
    }
    /// A pod of `sts` (controller reference) at `revision`.
    pub fn of(mut self, sts: &StatefulSet, revision: &str) -> Self {
        self.0.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: sts.name_any(),
            uid: sts.uid().expect("fixture sets have a UID"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        self.labelled(keys::REVISION_HASH, revision)
    }
    pub fn ready(mut self) -> Self {
        self.0.ready = true;
        self
    }
    pub fn build(self) -> CachedPod {
        self.0
    }
}

// === PodDisruptionBudgets ===

/// The PDB an earlier reconcile created for `pod`, as the API server holds it.
pub fn our_pdb(pod: &CachedPod) -> PodDisruptionBudget {
    let mut pdb = pdb::desired(pod);
    pdb.metadata.uid = Some(uid_for(&format!("pdb/{}", pod.name_any())));
    pdb.metadata.resource_version = Some("7".into());
    pdb
}

/// Someone else's PDB that happens to carry our name for `pod`.
pub fn foreign_pdb(pod: &CachedPod) -> PodDisruptionBudget {
    let mut pdb = our_pdb(pod);
    pdb.metadata.labels = Some(BTreeMap::from([("team".into(), "dba".into())]));
    pdb.metadata.owner_references = None;
    pdb
}

// === impl StatefulSetBuilder ===

pub struct StatefulSetBuilder(StatefulSet);

/// An OnDelete set of three in `ops`, rolling from `web-old` to `web-new`.
pub fn statefulset(name: &str) -> StatefulSetBuilder {
    StatefulSetBuilder(StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ops".into()),
            uid: Some(uid_for(&format!("sts/{name}"))),
            labels: Some(BTreeMap::new()),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(3),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".into()),
                rolling_update: None,
            }),
            ..Default::default()
        }),
        status: Some(StatefulSetStatus {
            replicas: 3,
            current_revision: Some(format!("{name}-old")),
            update_revision: Some(format!("{name}-new")),
            ..Default::default()
        }),
    })
}

impl StatefulSetBuilder {
    pub fn protected(mut self) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_default()
            .insert(keys::PROTECT.into(), "true".into());
        self
    }
    pub fn updated_replicas(mut self, n: i32) -> Self {
        self.0.status.get_or_insert_default().updated_replicas = Some(n);
        self
    }
    pub fn build(self) -> StatefulSet {
        self.0
    }
}

// === sessions ===

/// A login on `pod`: `bash` on pts/0 in container `main`, by uid 1000 (core's
/// session fixture, placed in the pod).
pub fn session(pod: &CachedPod) -> SessionBuilder {
    core_session().in_pod(&pod.uid().expect("fixture pods have a UID"))
}
