//! Test fixtures that read like prose: `pod("web-0").protected().was_protected()`.

use std::time::Duration;

use jiff::Timestamp;

use crate::pod_plan::{PodFacts, Settings};
use crate::protection::Map;
use crate::{Session, keys};

/// A label or annotation map from literal pairs.
pub fn map(pairs: &[(&str, &str)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The labels and annotations an earlier protect pass left on the pod with
/// this UID (protected since 00:58, nothing of the user's saved).
pub fn protect_pass(uid: &str) -> (Map, Map) {
    (
        map(&[(keys::POD_UID_LABEL, uid)]),
        map(&[
            (keys::CA_SAFE_TO_EVICT, "false"),
            (keys::KARPENTER_DO_NOT_DISRUPT, "true"),
            (
                keys::SAVED_ANNOTATIONS,
                r#"{"cluster-autoscaler.kubernetes.io/safe-to-evict":null,"karpenter.sh/do-not-disrupt":null}"#,
            ),
            (keys::PROTECTED_SINCE, "2026-11-24T00:58:00Z"),
        ]),
    )
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("RFC3339 literal")
}

/// The controller's defaults: no release grace, no cap, 10m TTL, 7d extension cap.
pub fn settings() -> Settings {
    Settings {
        release_grace: Duration::ZERO,
        max_protection: None,
        max_protection_warn: 80,
        idle_release: None,
        record_interactions: true,
        ttl: Duration::from_secs(600),
        max_extension: Duration::from_secs(7 * 86_400),
    }
}

/// A pod's UID (derived from its name), labels and annotations.
#[derive(Clone, Debug)]
pub struct PodFixture {
    pub uid: String,
    pub labels: Map,
    pub annotations: Map,
    pub created: Option<Timestamp>,
}

pub fn pod(name: &str) -> PodFixture {
    PodFixture {
        uid: format!("0f1e2d3c-4b5a-6978-8796-{:012x}", name.len()),
        labels: Map::new(),
        annotations: Map::new(),
        created: None,
    }
}

impl PodFixture {
    pub fn labelled(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    pub fn annotated(mut self, k: &str, v: &str) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }
    pub fn protected(self) -> Self {
        self.labelled(keys::PROTECT, "true")
    }
    pub fn no_pdb(self) -> Self {
        self.annotated(keys::LP_NO_PDB, "true")
    }
    /// As left by an earlier protect pass.
    pub fn was_protected(mut self) -> Self {
        let (labels, annotations) = protect_pass(&self.uid);
        self.labels.extend(labels);
        self.annotations.extend(annotations);
        self
    }
    /// The pod's creationTimestamp.
    pub fn created(mut self, t: &str) -> Self {
        self.created = Some(ts(t));
        self
    }
    pub fn build(self) -> Self {
        self
    }
    pub fn facts(&self) -> PodFacts<'_> {
        PodFacts {
            uid: &self.uid,
            labels: &self.labels,
            annotations: &self.annotations,
            created: self.created,
        }
    }
}

pub struct SessionBuilder(Session);

pub fn session() -> SessionBuilder {
    SessionBuilder(
        serde_json::from_value(serde_json::json!({
            "pod_uid": "0f1e2d3c-4b5a-6978-8796-000000000005",
            "container_id": "ab".repeat(32),
            "tty": "pts/0", "pid": 42, "command": "bash", "uid": 1000,
            "started_at": "2026-11-24T00:59:30Z", "processes": 1,
            "container_name": "main"
        }))
        .expect("valid session"),
    )
}

impl SessionBuilder {
    /// The session runs in the pod with this UID.
    pub fn in_pod(mut self, pod_uid: &str) -> Self {
        self.0.pod_uid = crate::PodUid::parse(pod_uid).expect("fixture pod UID");
        self
    }
    pub fn uid(mut self, uid: u32) -> Self {
        self.0.uid = uid;
        self
    }
    pub fn at(mut self, t: &str) -> Self {
        self.0.started_at = ts(t);
        self
    }
    pub fn tty(mut self, tty: &str) -> Self {
        self.0.tty = tty.into();
        self
    }
    pub fn command(mut self, command: &str) -> Self {
        self.0.command = command.into();
        self
    }
    /// Idle this long (as the controller estimates it at the plan's `now`).
    pub fn idle(mut self, seconds: u32) -> Self {
        self.0.idle_seconds = seconds;
        self
    }
    /// The container's own console, not a login.
    pub fn console(mut self) -> Self {
        self.0.console = true;
        self
    }
    /// The leader is its container's first process, as the agent saw it.
    pub fn init(mut self) -> Self {
        self.0.init = true;
        self
    }
    pub fn build(self) -> Session {
        self.0
    }
}
