//! What a pod says about the sessions reported for it: the UID an agent sees
//! in the pod's cgroup, and the names to show. Agents read no pods (their
//! identity has no pod read), so reports carry UIDs and container IDs only;
//! the controller and the plugin, which read pods anyway, name them here.

use sessionguard_core::{ContainerId, PodUid, Session, keys};

use crate::cached_pod::PodView;

/// The UID under which an agent reports this pod's sessions: the API UID,
/// or for a mirror pod its static pod's config hash (the kubelet runs the
/// static pod, whose cgroup carries the hash; the API server only holds the
/// mirror). A pod is a mirror pod when it has `kubernetes.io/config.mirror`,
/// which the API server lets nobody add or remove after creation; its value
/// is the hash, and `kubernetes.io/config.hash` repeats it.
pub fn reported_uid(pod: &impl PodView) -> Option<String> {
    config_hash(pod).or_else(|| pod.meta().uid.as_deref().map(str::to_ascii_lowercase))
}

/// A mirror pod's config hash, lowercase; `None` for any other pod.
pub fn config_hash(pod: &impl PodView) -> Option<String> {
    let ann = pod.meta().annotations.as_ref()?;
    let mirror = ann.get(keys::CONFIG_MIRROR)?;
    [Some(mirror), ann.get(keys::CONFIG_HASH)]
        .into_iter()
        .flatten()
        .find_map(|v| PodUid::parse(&v.to_ascii_lowercase()).ok())
        .map(|u| u.as_str().to_string())
}

/// The name of the container with this ID, from the pod's status.
pub fn container_name(pod: &impl PodView, id: &ContainerId) -> Option<String> {
    pod.container(id).map(|c| c.name.clone())
}

/// Fills namespace, pod and container names from the pod into sessions
/// reported for it; a container the status does not show yet keeps what the
/// report said (nothing, from an agent without `--pod-names`).
pub fn name_sessions(pod: &impl PodView, sessions: &mut [Session]) {
    for s in sessions {
        s.namespace = pod.meta().namespace.clone();
        s.pod_name = pod.meta().name.clone();
        if let Some(c) = container_name(pod, &s.container_id) {
            s.container_name = Some(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    const HASH: &str = "5b2d8bd2d9a4f2e8e7c5a3a0f9b7e6d1";

    fn pod(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "etcd-n1", "namespace": "kube-system",
                "uid": "99999999-2222-3333-4444-555555555555", "annotations": annotations},
            "status": {"containerStatuses": [{"name": "etcd", "image": "x", "imageID": "",
                "ready": true, "restartCount": 0,
                "containerID": format!("containerd://{}", "c".repeat(64))}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_mirror_pod_is_reported_under_its_config_hash() {
        let mirror = pod(serde_json::json!({
            keys::CONFIG_MIRROR: HASH.to_uppercase(), keys::CONFIG_HASH: HASH
        }));
        assert_eq!(reported_uid(&mirror).as_deref(), Some(HASH));
        // A mirror annotation that is no hash: the kubelet's config.hash says it.
        let odd = pod(serde_json::json!({keys::CONFIG_MIRROR: "mirror", keys::CONFIG_HASH: HASH}));
        assert_eq!(reported_uid(&odd).as_deref(), Some(HASH));
    }

    #[test]
    fn any_other_pod_by_its_api_uid_even_with_a_config_hash() {
        // config.hash alone does not make a mirror pod: anyone may set it on
        // their own pod, and it must not claim a static pod's sessions.
        let p = pod(serde_json::json!({keys::CONFIG_HASH: HASH}));
        assert_eq!(
            reported_uid(&p).as_deref(),
            Some("99999999-2222-3333-4444-555555555555")
        );
        assert_eq!(config_hash(&p), None);
    }

    #[test]
    fn sessions_get_the_pod_s_names() {
        let p = pod(serde_json::json!({}));
        let mut s: Vec<Session> = serde_json::from_value(serde_json::json!([{
            "pod_uid": HASH, "container_id": "c".repeat(64), "tty": "pts/0", "pid": 42,
            "command": "sh", "uid": 0, "started_at": "2026-11-24T00:59:30Z", "processes": 1
        }]))
        .unwrap();
        name_sessions(&p, &mut s);
        assert_eq!(s[0].namespace.as_deref(), Some("kube-system"));
        assert_eq!(s[0].pod_name.as_deref(), Some("etcd-n1"));
        assert_eq!(s[0].container_name.as_deref(), Some("etcd"));
    }
}
