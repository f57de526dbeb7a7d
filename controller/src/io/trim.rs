//! What the StatefulSet cache keeps: its pod template is most of it, and the
//! rollout, opt-in and events read only the update strategy, replicas and
//! the revisions. (Pods are not trimmed here: they are decoded straight into
//! `sessionguard_api::CachedPod`, which keeps only what is read.)

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

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

#[cfg(test)]
mod tests {
    use super::*;
    use sessionguard_core::keys;

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
}
