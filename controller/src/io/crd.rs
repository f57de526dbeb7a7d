//! The `SessionReport` custom resource (cluster-scoped, one per node, named
//! after the node), whose spec is the agent's [`Report`] JSON.
//!
//! The spec is kept as raw JSON and parsed per object: one malformed report
//! must cost that node its sessions, not break the watch for every node.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ClusterResourceScope, Resource};
use serde::{Deserialize, Serialize};
use sessionguard_core::{Report, ReportLimits, keys};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SessionReport {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: serde_json::Value,
}

impl SessionReport {
    /// The validated report, or why it is unusable. The name must be the node
    /// the spec speaks for: the admission policy enforces it for agents, and
    /// we check again so an object written by anyone else cannot redirect a
    /// node's sessions.
    pub fn report(&self) -> Result<Report, sessionguard_core::Error> {
        let report: Report = serde_json::from_value(self.spec.clone())
            .map_err(|e| sessionguard_core::Error::Report(format!("malformed spec: {e}")))?;
        report.validate(ReportLimits::default())?;
        let name = self.metadata.name.as_deref().unwrap_or_default();
        if report.node != name {
            return Err(sessionguard_core::Error::Report(format!(
                "object {name:?} carries spec.node {:?}; a report must be named after its node",
                report.node
            )));
        }
        Ok(report)
    }
}

impl Resource for SessionReport {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        keys::REPORT_KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        keys::REPORT_GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        keys::REPORT_VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        keys::REPORT_PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, spec: serde_json::Value) -> SessionReport {
        SessionReport {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec,
        }
    }

    #[test]
    fn name_must_match_node() {
        let spec = serde_json::json!({
            "node": "node-b", "generated_at": "2026-11-24T01:00:00Z", "sequence": 1, "sessions": []
        });
        assert!(object("node-b", spec.clone()).report().is_ok());
        let e = object("node-a", spec).report().unwrap_err().to_string();
        assert!(e.contains("named after its node"), "{e}");
        let e = object("node-a", serde_json::json!({"node": 3}))
            .report()
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed spec"), "{e}");
    }
}
