//! The pod as the controller caches it: the fields some decision, face or
//! event reads, decoded straight from the API server's JSON, so no full
//! `Pod` is ever built for the cache.
//!
//! Why not a trimmed k8s-openapi `Pod`: its structs hold every optional field
//! inline (a `Pod` is 2.2 KB before any string, a `ContainerStatus` 752 B, a
//! `Container` 2.1 KB), and decoding one first materialises `managedFields`
//! and the whole spec. At 30,000 pods the trimmed `Pod` cost 11.7 KB a pod.
//!
//! Kept, and who reads it:
//! - metadata name, namespace, uid, resourceVersion (every write's
//!   precondition), the labels and annotations under the keys the controller
//!   reads (`keys::read_on_pods`: opt-in, the interaction record,
//!   protection, the mirror pod's hash, the revision), ownerReferences (opt-in through the workload, the
//!   StatefulSet's pods), creationTimestamp (the record's bounds),
//!   deletionTimestamp (a going pod, rollouts);
//! - spec.nodeName (the pod's report, cordons);
//! - per container the status names: its name, ID and kind, and whether the
//!   spec gives it a terminal (`tty: true`): which container a session runs
//!   in, and whether that terminal is a console;
//! - whether the Ready condition is True (a rollout waits for it).
//!
//! A new reader of another field must add it here (the tests below list what
//! is kept).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::core::{NamespaceResourceScope, Resource};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sessionguard_core::{ContainerId, keys};

/// Which list of the pod a container is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    Regular,
    Init,
    Ephemeral,
}

/// A container the pod's status names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedContainer {
    pub name: String,
    /// `None` until the runtime has started it.
    pub id: Option<ContainerId>,
    pub kind: ContainerKind,
    /// The spec gives it a terminal (`tty: true`); never for an ephemeral one
    /// (the console rule does not ask).
    pub tty: bool,
}

/// The cached pod (see the module's comment for what is kept, and why).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    pub node_name: Option<String>,
    pub containers: Vec<CachedContainer>,
    /// The Ready condition is True.
    pub ready: bool,
}

/// What the session rules read of a pod, from a full `Pod` (the plugin, the
/// agent) or a [`CachedPod`] (the controller), so both answer alike.
pub trait PodView {
    fn meta(&self) -> &ObjectMeta;
    /// The container the status names with this ID.
    fn container(&self, id: &ContainerId) -> Option<Cow<'_, CachedContainer>>;
}

impl PodView for CachedPod {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn container(&self, id: &ContainerId) -> Option<Cow<'_, CachedContainer>> {
        self.containers
            .iter()
            .find(|c| c.id.as_ref() == Some(id))
            .map(Cow::Borrowed)
    }
}

impl PodView for Pod {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn container(&self, id: &ContainerId) -> Option<Cow<'_, CachedContainer>> {
        containers_of(self)
            .into_iter()
            .find(|c| c.id.as_ref() == Some(id))
            .map(Cow::Owned)
    }
}

impl Resource for CachedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl From<&CachedPod> for Pod {
    /// A full pod with what the cached one keeps (container IDs under the
    /// `containerd://` scheme, which the decoder strips again); for test
    /// servers and dumps.
    fn from(p: &CachedPod) -> Self {
        let tty = |kind| -> Option<Vec<Container>> {
            let v: Vec<Container> = p
                .containers
                .iter()
                .filter(|c| c.kind == kind && c.tty)
                .map(|c| Container {
                    name: c.name.clone(),
                    tty: Some(true),
                    ..Container::default()
                })
                .collect();
            (!v.is_empty()).then_some(v)
        };
        let statuses = |kind| -> Option<Vec<ContainerStatus>> {
            let v: Vec<ContainerStatus> = p
                .containers
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    container_id: c
                        .id
                        .as_ref()
                        .map(|id| format!("containerd://{}", id.as_str())),
                    ..ContainerStatus::default()
                })
                .collect();
            (!v.is_empty()).then_some(v)
        };
        Pod {
            metadata: p.metadata.clone(),
            spec: Some(PodSpec {
                node_name: p.node_name.clone(),
                containers: tty(ContainerKind::Regular).unwrap_or_default(),
                init_containers: tty(ContainerKind::Init),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                container_statuses: statuses(ContainerKind::Regular),
                init_container_statuses: statuses(ContainerKind::Init),
                ephemeral_container_statuses: statuses(ContainerKind::Ephemeral),
                conditions: p.ready.then(|| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
        }
    }
}

/// Written in the Pod's shape (through `Pod`), so what is served or dumped
/// decodes back to the same cached pod.
impl Serialize for CachedPod {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Pod::from(self).serialize(s)
    }
}

/// The containers a full pod's status names, with their tty from the spec.
fn containers_of(pod: &Pod) -> Vec<CachedContainer> {
    let spec = pod.spec.as_ref();
    let tty = |kind| -> Vec<&str> {
        let list = match kind {
            ContainerKind::Regular => spec.map(|s| &s.containers),
            ContainerKind::Init => spec.and_then(|s| s.init_containers.as_ref()),
            ContainerKind::Ephemeral => None,
        };
        list.into_iter()
            .flatten()
            .filter(|c| c.tty == Some(true))
            .map(|c| c.name.as_str())
            .collect()
    };
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    [
        (ContainerKind::Regular, &status.container_statuses),
        (ContainerKind::Init, &status.init_container_statuses),
        (
            ContainerKind::Ephemeral,
            &status.ephemeral_container_statuses,
        ),
    ]
    .into_iter()
    .flat_map(|(kind, statuses)| {
        let ttys = tty(kind);
        statuses.iter().flatten().map(move |s| CachedContainer {
            name: s.name.clone(),
            id: s.container_id.as_deref().and_then(parse_id),
            kind,
            tty: ttys.contains(&s.name.as_str()),
        })
    })
    .collect()
}

fn parse_id(raw: &str) -> Option<ContainerId> {
    ContainerId::from_status(raw).ok()
}

// --- decoding: the Pod's JSON shape, reading only what is kept ---
//
// Every other field (managedFields, the spec's volumes and env, the status's
// states) is skipped by the decoder without being built.

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WirePod {
    metadata: WireMeta,
    spec: Option<WireSpec>,
    status: Option<WireStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireSpec {
    node_name: Option<String>,
    containers: Option<Vec<WireContainer>>,
    init_containers: Option<Vec<WireContainer>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireContainer {
    name: String,
    tty: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireStatus {
    container_statuses: Option<Vec<WireContainerStatus>>,
    init_container_statuses: Option<Vec<WireContainerStatus>>,
    ephemeral_container_statuses: Option<Vec<WireContainerStatus>>,
    conditions: Option<Vec<WireCondition>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireContainerStatus {
    name: String,
    #[serde(rename = "containerID")]
    container_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

impl<'de> Deserialize<'de> for CachedPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WirePod::deserialize(d)?;
        let m = w.metadata;
        let (node_name, ttys, init_ttys) = match w.spec {
            Some(s) => (
                s.node_name,
                tty_names(s.containers),
                tty_names(s.init_containers),
            ),
            None => (None, Vec::new(), Vec::new()),
        };
        let mut containers = Vec::new();
        let mut ready = false;
        if let Some(s) = w.status {
            for (kind, statuses, ttys) in [
                (ContainerKind::Regular, s.container_statuses, &ttys),
                (ContainerKind::Init, s.init_container_statuses, &init_ttys),
                (
                    ContainerKind::Ephemeral,
                    s.ephemeral_container_statuses,
                    &Vec::new(),
                ),
            ] {
                containers.extend(statuses.into_iter().flatten().map(|s| CachedContainer {
                    tty: ttys.contains(&s.name),
                    id: s.container_id.as_deref().and_then(parse_id),
                    name: s.name,
                    kind,
                }));
            }
            ready = s
                .conditions
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
        }
        containers.shrink_to_fit();
        Ok(Self {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                resource_version: m.resource_version,
                labels: ours(m.labels),
                annotations: ours(m.annotations),
                owner_references: m.owner_references,
                creation_timestamp: m.creation_timestamp,
                deletion_timestamp: m.deletion_timestamp,
                ..ObjectMeta::default()
            },
            node_name,
            containers,
            ready,
        })
    }
}

/// The keys the controller reads (`keys::read_on_pods`); `None` when that
/// leaves none, so most pods hold no map at all.
fn ours(map: Option<BTreeMap<String, String>>) -> Option<BTreeMap<String, String>> {
    let mut map = map?;
    map.retain(|k, _| keys::read_on_pods(k));
    (!map.is_empty()).then_some(map)
}

fn tty_names(containers: Option<Vec<WireContainer>>) -> Vec<String> {
    containers
        .into_iter()
        .flatten()
        .filter(|c| c.tty == Some(true))
        .map(|c| c.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container_of;
    use sessionguard_core::console::Container as Kind;

    /// A pod as the API server sends it: managedFields, a full spec, status.
    pub(crate) fn full_pod_json() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-0", "namespace": "team-a", "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                "resourceVersion": "1234", "generation": 3,
                "creationTimestamp": "2026-11-24T00:00:00Z",
                "deletionTimestamp": "2026-11-24T01:00:00Z",
                "labels": {"app": "web", "controller-revision-hash": "web-abc"},
                "annotations": {"sessionguard.io/first-interaction": "2026-11-24T00:10:00Z"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                    "uid": "11111111-2222-3333-4444-555555555555", "controller": true}],
                "finalizers": ["example.com/hold"],
                "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}]
            },
            "spec": {
                "nodeName": "node-a",
                "containers": [
                    {"name": "console", "image": "busybox", "tty": true, "stdin": true,
                     "env": [{"name": "A", "value": "1"}],
                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                    {"name": "app", "image": "nginx", "args": ["--port", "80"]}
                ],
                "initContainers": [{"name": "init", "image": "busybox", "tty": true}],
                "ephemeralContainers": [{"name": "debugger", "image": "busybox", "tty": true}],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "shareProcessNamespace": true
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.1",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-24T00:00:05Z"}
                ],
                "containerStatuses": [
                    {"name": "console", "containerID": cid('a'), "image": "busybox",
                     "imageID": "sha256:1", "ready": true, "restartCount": 2,
                     "state": {"running": {"startedAt": "2026-11-24T00:00:02Z"}}},
                    {"name": "app", "containerID": cid('b'), "image": "nginx",
                     "imageID": "sha256:2", "ready": true, "restartCount": 0},
                    {"name": "starting", "image": "nginx", "imageID": "", "ready": false, "restartCount": 0}
                ],
                "initContainerStatuses": [{"name": "init", "containerID": cid('c'),
                    "image": "busybox", "imageID": "sha256:1", "ready": false, "restartCount": 0}],
                "ephemeralContainerStatuses": [{"name": "debugger", "containerID": cid('d'),
                    "image": "busybox", "imageID": "sha256:1", "ready": false, "restartCount": 0}]
            }
        })
    }

    /// A CRI container ID as the status shows it: 64 hex digits.
    fn cid(c: char) -> String {
        format!("containerd://{}", c.to_string().repeat(64))
    }

    fn id(c: char) -> ContainerId {
        ContainerId::from_status(&cid(c)).unwrap()
    }

    fn both() -> (Pod, CachedPod) {
        let json = full_pod_json();
        (
            serde_json::from_value(json.clone()).unwrap(),
            serde_json::from_value(json).unwrap(),
        )
    }

    #[test]
    fn decoding_keeps_what_decisions_read_and_agrees_with_the_full_pod() {
        let (full, cached) = both();
        let (f, c) = (&full.metadata, &cached.metadata);
        assert_eq!(c.name, f.name);
        assert_eq!(c.namespace, f.namespace);
        assert_eq!(c.uid, f.uid);
        assert_eq!(c.resource_version, f.resource_version);
        assert_eq!(c.annotations, f.annotations);
        // Only the keys some decision reads.
        let labels: Vec<&String> = c.labels.iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(labels, ["controller-revision-hash"]);
        assert_eq!(c.owner_references, f.owner_references);
        assert_eq!(c.creation_timestamp, f.creation_timestamp);
        assert_eq!(c.deletion_timestamp, f.deletion_timestamp);
        assert_eq!(cached.node_name.as_deref(), Some("node-a"));
        assert!(cached.ready);
        // The console decision gives the same answer for every container.
        for c in ['a', 'b', 'c', 'd', 'e'] {
            assert_eq!(
                container_of(&cached, &id(c)),
                container_of(&full, &id(c)),
                "{c}"
            );
        }
        assert_eq!(container_of(&cached, &id('a')), Kind::Regular { tty: true });
        assert_eq!(
            container_of(&cached, &id('b')),
            Kind::Regular { tty: false }
        );
        assert_eq!(container_of(&cached, &id('c')), Kind::Regular { tty: true });
        assert_eq!(container_of(&cached, &id('d')), Kind::Ephemeral);
        assert_eq!(container_of(&cached, &id('e')), Kind::Unknown);
        // What is written decodes back to itself.
        let again: CachedPod =
            serde_json::from_value(serde_json::to_value(&cached).unwrap()).unwrap();
        assert_eq!(again, cached);
    }

    #[test]
    fn decoding_drops_what_no_decision_reads() {
        let (_, cached) = both();
        let m = &cached.metadata;
        assert!(m.managed_fields.is_none() && m.finalizers.is_none() && m.generation.is_none());
        assert!(!m.labels.as_ref().unwrap().contains_key("app"));
        let names: Vec<(&str, bool)> = cached
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.id.is_some()))
            .collect();
        assert_eq!(
            names,
            [
                ("console", true),
                ("app", true),
                ("starting", false),
                ("init", true),
                ("debugger", true)
            ]
        );
    }

    #[test]
    fn a_pod_without_spec_or_status_decodes_empty_and_unready() {
        let p: CachedPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": null},
            "status": {"conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": null}
        }))
        .unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("p"));
        assert!(p.node_name.is_none() && p.containers.is_empty() && !p.ready);
    }

    #[test]
    fn the_resource_is_the_core_v1_pod() {
        assert_eq!(
            CachedPod::url_path(&(), Some("ns")),
            Pod::url_path(&(), Some("ns"))
        );
        assert_eq!(CachedPod::api_version(&()), "v1");
        assert_eq!(CachedPod::kind(&()), "Pod");
    }
}
