//! The `SessionReport` resource (`sessionguard_api`), and the check a report
//! passes before the controller trusts it.
//!
//! The watch lists raw objects and parses each spec on its own: a typed list
//! fails whole on one undecodable object, and the schema cannot rule one out.
//! Stored objects are not revalidated when the CRD changes, Helm never
//! upgrades a chart's `crds/`, and during a rollout agents and controller may
//! run different versions of the type. One malformed report must cost that
//! node its sessions, not break the watch for every node.

use kube::api::{Api, ApiResource, DynamicObject};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use sessionguard_core::{Error, Report, ReportLimits};

pub use sessionguard_api::{SessionReport, SessionReportSpec};
use sessionguard_core::notice::{Notice, ReportStatus};

/// A SessionReport as the watch lists it, spec not yet parsed.
pub type StoredReport = DynamicObject;

/// Every node's report, as raw objects (see the module comment).
pub fn stored_api(client: Client) -> Api<StoredReport> {
    Api::all_with(client, &ApiResource::erase::<SessionReport>(&()))
}

/// The validated report of a stored object, or why it is unusable.
pub trait ReportObject {
    fn report(&self) -> Result<Report, Error>;
}

impl ReportObject for StoredReport {
    fn report(&self) -> Result<Report, Error> {
        let spec = self.data.get("spec").unwrap_or(&serde_json::Value::Null);
        let SessionReportSpec(report) = SessionReportSpec::deserialize(spec)
            .map_err(|e| Error::Report(format!("malformed spec: {e}")))?;
        checked(&self.name_any(), report)
    }
}

/// The notices in a stored report's status (none when absent or unreadable:
/// the next status write replaces an unreadable one).
pub fn notices(obj: &StoredReport) -> Vec<Notice> {
    obj.data
        .get("status")
        .and_then(|s| ReportStatus::deserialize(s).ok())
        .map(|s| s.notices)
        .unwrap_or_default()
}

/// The name must be the node the spec speaks for: the admission policy
/// enforces it for agents, and we check again so an object written by anyone
/// else cannot redirect a node's sessions.
fn checked(name: &str, report: Report) -> Result<Report, Error> {
    report.validate(ReportLimits::default())?;
    if report.node != name {
        return Err(Error::Report(format!(
            "object {name:?} carries spec.node {:?}; a report must be named after its node",
            report.node
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, spec: serde_json::Value) -> StoredReport {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sessionguard.io/v1alpha1", "kind": "SessionReport",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap()
    }

    fn spec(node: &str) -> serde_json::Value {
        serde_json::json!({
            "node": node, "generated_at": "2026-11-24T01:00:00Z", "sequence": 1, "sessions": []
        })
    }

    #[test]
    fn name_must_match_node() {
        assert_eq!(
            object("node-b", spec("node-b")).report().unwrap().node,
            "node-b"
        );
        let e = object("node-a", spec("node-b"))
            .report()
            .unwrap_err()
            .to_string();
        assert!(e.contains("named after its node"), "{e}");
    }

    #[test]
    fn a_malformed_spec_is_refused_alone() {
        for (spec, want) in [
            (serde_json::json!({"node": 3}), "malformed spec"),
            (serde_json::Value::Null, "malformed spec"),
            (spec("Node_A"), "not a valid node name"),
        ] {
            let e = object("node-a", spec).report().unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }
}
