//! One row per pod: the interaction record from its annotations, live
//! terminal sessions from its node's SessionReport.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use sessionguard_core::interaction::{Interaction, login_user};
use sessionguard_core::readback::off_reason;
use sessionguard_core::{Report, keys};

/// The plugin does not know the cluster's `--webhook-max-extension`; the
/// webhook refused anything larger when the extension was written, so the
/// uncapped sum is what the controller computes too (only an extension
/// written past the webhook differs, and the controller reports that one).
pub const UNCAPPED: std::time::Duration = std::time::Duration::MAX;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub pod: String,
    pub node: Option<String>,
    /// Containers with live sessions, or else the last one entered through the API.
    pub containers: Vec<String>,
    /// Who interacted first, or else the users of the live sessions.
    pub user: Option<String>,
    /// Live login sessions; `None` when the node has no readable report.
    pub sessions: Option<usize>,
    /// Idle time of the most recently active live login, as its node's
    /// report states it (rounded down to the agent's steps, so: at least
    /// this long; see `sessionguard_core::idle`).
    pub idle_seconds: Option<u32>,
    pub first_interaction: Option<Timestamp>,
    pub last_interaction: Option<Timestamp>,
    pub protected: bool,
    pub ttl: Option<String>,
    pub extension: Option<String>,
    pub extended_by: Option<String>,
    /// The controller's `evict-at`: set only where drift eviction applies.
    pub eviction_time: Option<Timestamp>,
    /// Why drift eviction does not apply (flag, allowlist, namespace label),
    /// from the controller's `sessionguard.io/eviction` annotation.
    pub eviction_off: Option<String>,
    /// Set when the pod's record is unreadable (says which annotation).
    pub record_error: Option<String>,
    /// A drain (or other eviction) waiting on this pod now; filled in from
    /// its events by the caller ([`crate::blocking`]).
    pub blocking: Option<crate::blocking::Blocking>,
}

pub fn row(pod: &Pod, report: Option<&Report>) -> Row {
    let empty = BTreeMap::new();
    let ann = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let (record, record_error) = match Interaction::from_annotations(ann) {
        Ok(r) => (r, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let live = report
        .map(|r| sessionguard_api::logins(pod, r))
        .unwrap_or_default();
    let mut containers: Vec<String> = live
        .iter()
        .map(|s| {
            s.container_name
                .clone()
                .unwrap_or_else(|| s.container_id.short().to_string())
        })
        .collect();
    containers.sort();
    containers.dedup();
    if containers.is_empty()
        && let Some(c) = ann.get(keys::LAST_CONTAINER)
    {
        containers.push(c.clone());
    }
    let mut users: Vec<String> = live.iter().map(|s| login_user(s.uid)).collect();
    users.sort();
    users.dedup();
    let user = record
        .as_ref()
        .map(|r| r.interactor.clone())
        .filter(|u| !u.is_empty())
        .or_else(|| (!users.is_empty()).then(|| users.join(",")));
    Row {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        containers,
        user,
        sessions: report.map(|_| live.len()),
        idle_seconds: live.iter().map(|s| s.idle_seconds).min(),
        first_interaction: record.as_ref().map(|r| r.first),
        last_interaction: record.as_ref().map(|r| r.last),
        // protected-since outlives a release by --max-protection or
        // --idle-release while the login lasts (it keeps the cap armed); the
        // saved autoscaler annotations exist only while protection holds.
        protected: ann.contains_key(keys::PROTECTED_SINCE)
            && ann.contains_key(keys::SAVED_ANNOTATIONS),
        ttl: ann.get(keys::TTL).cloned(),
        extension: ann.get(keys::EXTENSION).cloned(),
        extended_by: ann.get(keys::EXTENDED_BY).cloned(),
        // The controller's values, not a computation of ours: it alone knows
        // whether eviction applies, the cap, and the bounds of the record.
        eviction_time: ann.get(keys::EVICT_AT).and_then(|v| v.parse().ok()),
        eviction_off: ann
            .get(keys::EVICTION)
            .and_then(|v| off_reason(v))
            .map(str::to_string),
        record_error,
        blocking: None,
    }
}

/// `in 9m30s` / `5s ago`: the two largest units, like kubectl's ages.
pub fn relative(now: Timestamp, t: Timestamp) -> String {
    let secs = t.as_second() - now.as_second();
    let a = secs.unsigned_abs();
    let (d, h, m, s) = (a / 86_400, a / 3600 % 24, a / 60 % 60, a % 60);
    let text = if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    };
    if secs >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    fn pod(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "ops", "uid": UID, "annotations": annotations},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "tty": true}]},
            "status": {"containerStatuses": [{"name": "app", "image": "x", "imageID": "",
                "ready": true, "restartCount": 0,
                "containerID": format!("containerd://{}", "a".repeat(64))}]}
        }))
        .unwrap()
    }

    /// `init`: the session leader is the `tty: true` container's first process.
    fn report(init: bool) -> Report {
        serde_json::from_value(json!({
            "node": "node-a", "generated_at": "2026-11-24T01:00:00Z", "sequence": 1,
            "sessions": [{
                "pod_uid": UID, "container_id": "a".repeat(64), "tty": "pts/0", "pid": 42,
                "command": "bash", "uid": 1000, "started_at": "2026-11-24T00:59:00Z",
                "processes": 1, "init": init, "container_name": "app",
                "idle_seconds": 240
            }]
        }))
        .unwrap()
    }

    #[test]
    fn a_recorded_pod_with_a_live_login() {
        let p = pod(json!({
            "sessionguard.io/first-interaction": "2026-11-24T01:00:00Z",
            "sessionguard.io/last-interaction": "2026-11-24T01:05:00Z",
            "sessionguard.io/interactor": "alice@example.com",
            "sessionguard.io/ttl": "10m0s",
            "sessionguard.io/extension": "30m0s",
            "sessionguard.io/extended-by": "bob",
            "sessionguard.io/evict-at": "2026-11-24T01:40:00Z",
            "sessionguard.io/protected-since": "2026-11-24T01:00:00Z",
            "sessionguard.io/saved-annotations": "{}",
            "sessionguard.io/last-container": "sidecar",
        }));
        let r = row(&p, Some(&report(false)));
        assert_eq!(
            r.containers,
            ["app"],
            "live sessions win over last-container"
        );
        assert_eq!(r.user.as_deref(), Some("alice@example.com"));
        assert_eq!(r.sessions, Some(1));
        assert_eq!(r.idle_seconds, Some(240));
        assert!(r.protected);
        assert_eq!(r.eviction_time, Some(ts("2026-11-24T01:40:00Z")));
        assert_eq!(r.eviction_off, None);
    }

    #[test]
    fn a_login_released_as_idle_or_capped_is_not_shown_protected() {
        // What the controller leaves while the login lasts: protected-since
        // stays (the cap stays armed), the saved annotations are restored.
        let p = pod(json!({"sessionguard.io/protected-since": "2026-11-24T01:00:00Z"}));
        let r = row(&p, Some(&report(false)));
        assert!(!r.protected);
        assert_eq!(r.idle_seconds, Some(240));
    }

    #[test]
    fn with_eviction_off_there_is_no_time_but_the_reason() {
        let p = pod(json!({
            "sessionguard.io/first-interaction": "2026-11-24T01:00:00Z",
            "sessionguard.io/ttl": "10m0s",
            "sessionguard.io/eviction": "off: namespace allowlisted",
        }));
        let r = row(&p, None);
        assert_eq!(r.eviction_time, None);
        assert_eq!(r.eviction_off.as_deref(), Some("namespace allowlisted"));
    }

    #[test]
    fn consoles_do_not_count_and_missing_reports_are_unknown() {
        let p = pod(json!({"sessionguard.io/last-container": "app"}));
        let r = row(&p, Some(&report(true)));
        assert_eq!((r.sessions, r.user.clone()), (Some(0), None));
        assert_eq!(
            r.idle_seconds, None,
            "a console's idle time is not a login's"
        );
        // The agent's own guess is not trusted: the spec decides.
        let mut guessed = report(false);
        guessed.sessions[0].console = true;
        assert_eq!(row(&p, Some(&guessed)).sessions, Some(1));
        assert_eq!(r.containers, ["app"]);
        assert_eq!(row(&p, None).sessions, None);
        let bad = row(
            &pod(json!({"sessionguard.io/first-interaction": "soon"})),
            None,
        );
        assert!(bad.record_error.unwrap().contains("first-interaction"));
    }

    #[test]
    fn relative_times() {
        let now = ts("2026-11-24T01:00:00Z");
        assert_eq!(relative(now, ts("2026-11-24T01:09:30Z")), "in 9m30s");
        assert_eq!(relative(now, ts("2026-11-24T00:59:55Z")), "5s ago");
        assert_eq!(relative(now, ts("2026-11-26T03:00:00Z")), "in 2d2h");
    }
}
