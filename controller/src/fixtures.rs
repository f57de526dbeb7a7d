//! Test fixtures that read like prose: `pod("web-0").protected().on_node("a")`.
// Shared by the reconcile tests; not every helper is used by every build of them.
#![allow(dead_code)]

use std::collections::BTreeMap;

use clap::Parser;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sessionguard_core::{Session, keys};

use crate::config::Config;

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("RFC3339 literal")
}

pub fn config() -> Config {
    Config::try_parse_from(["sessionguard-controller"]).expect("defaults parse")
}

pub struct PodBuilder(Pod);

pub fn pod(name: &str) -> PodBuilder {
    let n = name.len() as u32;
    PodBuilder(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ops".into()),
            uid: Some(format!("0f1e2d3c-4b5a-6978-8796-{n:012x}")),
            labels: Some(BTreeMap::new()),
            annotations: Some(BTreeMap::new()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-a".into()),
            ..Default::default()
        }),
        status: None,
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
    pub fn no_pdb(self) -> Self {
        self.annotated(keys::LP_NO_PDB, "true")
    }
    /// As left by an earlier protect pass.
    pub fn was_protected(self) -> Self {
        let uid = self.0.metadata.uid.clone().unwrap();
        self.labelled(keys::POD_UID_LABEL, &uid)
            .annotated(keys::CA_SAFE_TO_EVICT, "false")
            .annotated(keys::KARPENTER_DO_NOT_DISRUPT, "true")
            .annotated(
                keys::SAVED_ANNOTATIONS,
                r#"{"cluster-autoscaler.kubernetes.io/safe-to-evict":null,"karpenter.sh/do-not-disrupt":null}"#,
            )
            .annotated(keys::PROTECTED_SINCE, "2026-11-24T00:58:00Z")
    }
    pub fn on_node(mut self, node: &str) -> Self {
        self.0.spec.get_or_insert_default().node_name = Some(node.into());
        self
    }
    pub fn build(self) -> Pod {
        self.0
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
    pub fn uid(mut self, uid: u32) -> Self {
        self.0.uid = uid;
        self
    }
    pub fn at(mut self, t: &str) -> Self {
        self.0.started_at = ts(t);
        self
    }
    pub fn build(self) -> Session {
        self.0
    }
}
