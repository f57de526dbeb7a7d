//! What the pod cache keeps of a Pod: the fields some decision, face or
//! event reads, and nothing else. A pod of a real workload is mostly its
//! spec (env, volumes, probes, resources) and managedFields, none of which
//! the controller looks at; at 30,000 pods the full objects alone would
//! outgrow the controller's memory limit.
//!
//! Kept, and who reads it:
//! - metadata name, namespace, uid, resourceVersion (every write's
//!   precondition), labels and annotations (opt-in, the interaction record,
//!   protection), ownerReferences (opt-in through the workload, the
//!   StatefulSet's pods), creationTimestamp (the record's bounds),
//!   deletionTimestamp (a going pod, rollouts);
//! - spec.nodeName (the pod's report, cordons), the names of the containers
//!   and init containers with `tty: true` (`sessionguard_api::container_of`:
//!   is a terminal a console; a container the status names and the spec
//!   does not list has no tty);
//! - status: each container status's name and containerID (regular, init
//!   and ephemeral: which container a session runs in), and the Ready
//!   condition's status (a rollout waits for it).
//!
//! A new reader of another field must add it here (the test below lists
//! what is kept).
//!
//! A StatefulSet is trimmed the same way ([`trim_statefulset`]): its pod
//! template is most of it, and the rollout reads only the update strategy,
//! replicas and the revisions.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Replaces `pod` with the part of it the controller reads.
pub fn trim_pod(pod: &mut Pod) {
    let m = &mut pod.metadata;
    let metadata = ObjectMeta {
        owner_references: m.owner_references.take(),
        creation_timestamp: m.creation_timestamp.take(),
        deletion_timestamp: m.deletion_timestamp.take(),
        ..identity(m)
    };
    let spec = pod.spec.take().map(|s| PodSpec {
        node_name: s.node_name,
        containers: consoles(s.containers),
        init_containers: s.init_containers.map(consoles),
        ..Default::default()
    });
    let status = pod.status.take().map(|s| PodStatus {
        container_statuses: s.container_statuses.map(statuses),
        init_container_statuses: s.init_container_statuses.map(statuses),
        ephemeral_container_statuses: s.ephemeral_container_statuses.map(statuses),
        // Only Ready is read (a rollout waits for it).
        conditions: s.conditions.map(|c| {
            c.into_iter()
                .filter(|c| c.type_ == "Ready")
                .map(|c| PodCondition {
                    type_: c.type_,
                    status: c.status,
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    });
    *pod = Pod {
        metadata,
        spec,
        status,
    };
}

/// Replaces `sts` with what the rollout, opt-in and events read: metadata
/// (name, namespace, uid, resourceVersion, labels, annotations),
/// `spec.replicas` and `spec.updateStrategy`, and `status`'s revisions and
/// replica counts.
pub fn trim_statefulset(sts: &mut StatefulSet) {
    let metadata = identity(&mut sts.metadata);
    let spec = sts.spec.take().map(|s| StatefulSetSpec {
        replicas: s.replicas,
        update_strategy: s.update_strategy,
        ..Default::default()
    });
    let status = sts.status.take().map(|s| StatefulSetStatus {
        current_revision: s.current_revision,
        update_revision: s.update_revision,
        updated_replicas: s.updated_replicas,
        current_replicas: s.current_replicas,
        replicas: s.replicas,
        ..Default::default()
    });
    *sts = StatefulSet {
        metadata,
        spec,
        status,
    };
}

/// What every trimmed object keeps of its metadata: who it is (name,
/// namespace, uid), the version a write's precondition names, and the labels
/// and annotations opt-in and our records live in.
fn identity(m: &mut ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name.take(),
        namespace: m.namespace.take(),
        uid: m.uid.take(),
        resource_version: m.resource_version.take(),
        labels: m.labels.take(),
        annotations: m.annotations.take(),
        ..Default::default()
    }
}

/// The `tty: true` containers, by name: all `container_of` asks a spec.
/// A `Container` is a few kilobytes even empty (every field inline), and
/// most pods have none of these.
fn consoles(containers: Vec<Container>) -> Vec<Container> {
    containers
        .into_iter()
        .filter(|c| c.tty == Some(true))
        .map(|c| Container {
            name: c.name,
            tty: c.tty,
            ..Default::default()
        })
        .collect()
}

fn statuses(v: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
    v.into_iter()
        .map(|s| ContainerStatus {
            name: s.name,
            container_id: s.container_id,
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionguard_core::console::Container as Kind;
    use sessionguard_core::{ContainerId, keys};

    #[test]
    fn a_statefulset_keeps_what_the_rollout_reads_and_drops_its_template() {
        let mut sts: StatefulSet = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7",
                         "labels": {keys::PROTECT: "true"}, "annotations": {keys::NO_PDB: "true"},
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"replicas": 3, "serviceName": "db",
                     "updateStrategy": {"type": "OnDelete"},
                     "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}},
                                  "spec": {"containers": [{"name": "db", "image": "postgres",
                                           "env": [{"name": "A", "value": "x".repeat(4096)}]}]}}},
            "status": {"replicas": 3, "currentRevision": "db-1", "updateRevision": "db-2",
                       "updatedReplicas": 1, "currentReplicas": 2, "readyReplicas": 3}
        }))
        .unwrap();
        trim_statefulset(&mut sts);
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.update_strategy
                .as_ref()
                .and_then(|u| u.type_.as_deref()),
            Some("OnDelete")
        );
        assert!(spec.template.spec.is_none(), "the template is dropped");
        let status = sts.status.as_ref().unwrap();
        assert_eq!(status.current_revision.as_deref(), Some("db-1"));
        assert_eq!(status.update_revision.as_deref(), Some("db-2"));
        assert_eq!(status.updated_replicas, Some(1));
        assert_eq!(sts.metadata.labels.as_ref().unwrap()[keys::PROTECT], "true");
        assert_eq!(
            sts.metadata.annotations.as_ref().unwrap()[keys::NO_PDB],
            "true"
        );
        assert!(sts.metadata.managed_fields.is_none());
        assert!(serde_json::to_string(&sts).unwrap().len() < 600);
    }

    /// A pod as the API server sends it: managedFields, a full spec, status.
    fn full_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-0", "namespace": "team-a", "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                "resourceVersion": "1234", "generation": 3,
                "creationTimestamp": "2026-11-24T00:00:00Z",
                "deletionTimestamp": "2026-11-24T01:00:00Z",
                "labels": {"app": "web", keys::REVISION_HASH: "web-abc"},
                "annotations": {keys::FIRST_INTERACTION: "2026-11-24T00:10:00Z"},
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
                "volumes": [{"name": "data", "emptyDir": {}}],
                "shareProcessNamespace": true
            },
            "status": {
                "phase": "Running", "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-24T00:00:05Z"}],
                "containerStatuses": [
                    {"name": "console", "containerID": cid('a'), "image": "busybox",
                     "imageID": "sha256:1", "ready": true, "restartCount": 2,
                     "state": {"running": {"startedAt": "2026-11-24T00:00:02Z"}}},
                    {"name": "app", "containerID": cid('b'), "image": "nginx",
                     "imageID": "sha256:2", "ready": true, "restartCount": 0}
                ],
                "initContainerStatuses": [{"name": "init", "containerID": cid('c'),
                    "image": "busybox", "imageID": "sha256:1", "ready": false, "restartCount": 0}],
                "ephemeralContainerStatuses": [{"name": "debugger", "containerID": cid('d'),
                    "image": "busybox", "imageID": "sha256:1", "ready": false, "restartCount": 0}]
            }
        }))
        .expect("a pod")
    }

    /// A CRI container ID as the status shows it: 64 hex digits.
    fn cid(c: char) -> String {
        format!("containerd://{}", c.to_string().repeat(64))
    }

    fn id(s: &str) -> ContainerId {
        ContainerId::from_status(s).expect("container id")
    }

    #[test]
    fn trimming_keeps_what_decisions_read() {
        let full = full_pod();
        let mut trimmed = full.clone();
        trim_pod(&mut trimmed);
        let (f, t) = (&full.metadata, &trimmed.metadata);
        assert_eq!(t.name, f.name);
        assert_eq!(t.namespace, f.namespace);
        assert_eq!(t.uid, f.uid);
        assert_eq!(t.resource_version, f.resource_version);
        assert_eq!(t.labels, f.labels);
        assert_eq!(t.annotations, f.annotations);
        assert_eq!(t.owner_references, f.owner_references);
        assert_eq!(t.creation_timestamp, f.creation_timestamp);
        assert_eq!(t.deletion_timestamp, f.deletion_timestamp);
        let spec = trimmed.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        // The console decision gives the same answer for every container.
        for c in [cid('a'), cid('b'), cid('c'), cid('d'), cid('e')] {
            assert_eq!(
                sessionguard_api::container_of(&trimmed, &id(&c)),
                sessionguard_api::container_of(&full, &id(&c)),
                "{c}"
            );
        }
        assert_eq!(
            sessionguard_api::container_of(&trimmed, &id(&cid('a'))),
            Kind::Regular { tty: true }
        );
        assert_eq!(
            sessionguard_api::container_of(&trimmed, &id(&cid('d'))),
            Kind::Ephemeral
        );
        let ready = trimmed
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap();
        assert_eq!(
            (ready[0].type_.as_str(), ready[0].status.as_str()),
            ("Ready", "True")
        );
    }

    #[test]
    fn trimming_drops_what_no_decision_reads() {
        let mut p = full_pod();
        trim_pod(&mut p);
        assert!(p.metadata.managed_fields.is_none());
        assert!(p.metadata.finalizers.is_none() && p.metadata.generation.is_none());
        let spec = p.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none() && spec.share_process_namespace.is_none());
        // Only the tty container stays, by name.
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["console"]);
        let c = &spec.containers[0];
        assert!(c.image.is_none() && c.env.is_none() && c.volume_mounts.is_none());
        assert!(c.stdin.is_none());
        let status = p.status.as_ref().unwrap();
        assert!(status.phase.is_none() && status.pod_ip.is_none());
        let s = &status.container_statuses.as_ref().unwrap()[0];
        assert!(s.state.is_none() && s.image.is_empty() && s.restart_count == 0);
        assert!(
            status.conditions.as_ref().unwrap()[0]
                .last_transition_time
                .is_none()
        );
        let size = |p: &Pod| serde_json::to_vec(p).unwrap().len();
        assert!(
            size(&p) < size(&full_pod()),
            "{} vs {}",
            size(&p),
            size(&full_pod())
        );
    }
}
