//! Which container of a pod a session runs in, and what the pod's spec says
//! about it: the half of the console decision only the API server knows
//! (`sessionguard_core::console` holds the rule). The controller and the
//! plugin both ask it, so they agree on what is a login.

use sessionguard_core::{ContainerId, Report, Session, console};

use crate::cached_pod::{ContainerKind, PodView};

/// The container with this ID in the pod's status, and its kind from the
/// spec: what decides whether a terminal in it is a console. A container the
/// status does not name yet (just started) is unknown.
pub fn container_of(pod: &impl PodView, id: &ContainerId) -> console::Container {
    match pod.container(id) {
        Some(c) if c.kind == ContainerKind::Ephemeral => console::Container::Ephemeral,
        Some(c) => console::Container::Regular { tty: c.tty },
        None => console::Container::Unknown,
    }
}

/// The pod's sessions in `report` that are logins, consoles decided from the
/// pod's spec, named after the pod (reports carry UIDs only).
pub fn logins(pod: &impl PodView, report: &Report) -> Vec<Session> {
    let uid = crate::reported_uid(pod).unwrap_or_default();
    let mut sessions: Vec<Session> = report
        .sessions
        .iter()
        .filter(|s| s.pod_uid.as_str() == uid)
        .cloned()
        .collect();
    console::classify(&mut sessions, |id| container_of(pod, id));
    sessions.retain(Session::is_login);
    crate::name_sessions(pod, &mut sessions);
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn id(c: char) -> ContainerId {
        ContainerId::parse(&c.to_string().repeat(64)).unwrap()
    }

    /// A pod with a `tty: true` container `console`, a plain `main`, and a
    /// debug container, each running under its own ID.
    fn pod() -> Pod {
        let status = |name: &str, c: char| {
            serde_json::json!({"name": name, "image": "x", "imageID": "", "ready": true,
                "restartCount": 0, "containerID": format!("containerd://{}", c.to_string().repeat(64))})
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {
                "shareProcessNamespace": true,
                "containers": [{"name": "console", "tty": true, "stdin": true}, {"name": "main"}],
                "ephemeralContainers": [{"name": "debugger", "tty": true, "stdin": true}],
            },
            "status": {
                "containerStatuses": [status("console", 'a'), status("main", 'b')],
                "ephemeralContainerStatuses": [status("debugger", 'd')],
            },
        }))
        .unwrap()
    }

    #[test]
    fn containers_are_told_apart_by_their_status_ids() {
        let pod = pod();
        assert_eq!(
            container_of(&pod, &id('a')),
            console::Container::Regular { tty: true }
        );
        assert_eq!(
            container_of(&pod, &id('b')),
            console::Container::Regular { tty: false }
        );
        assert_eq!(container_of(&pod, &id('d')), console::Container::Ephemeral);
        // Not in the status yet (just started): a login until the kubelet says.
        assert_eq!(container_of(&pod, &id('e')), console::Container::Unknown);
    }
}
