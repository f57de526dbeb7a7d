//! The `SessionReport` resource as the API server stores it: one cluster-scoped
//! object per node, named after the node, whose spec is that node's
//! [`Report`]. The agent writes it, the controller watches it, the plugin reads
//! it, and the chart's CRD is generated from it (`crdgen`, `make manifests`),
//! so the schema's bounds are the constants in `sessionguard_core::report` and
//! `sessionguard_core::session`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sessionguard_core::Report;
pub use sessionguard_core::notice::{Notice, ReportStatus};

mod cached_pod;
mod console;
mod pod;
pub use cached_pod::{CachedContainer, CachedPod, ContainerKind, PodView};
pub use console::{container_of, logins};
pub use pod::{config_hash, container_name, name_sessions, reported_uid};

/// The path of the generated CRD in the chart, from the repository root.
pub const CHART_CRD_PATH: &str = "charts/sessionguard/crds/sessionreports.yaml";

/// The node's full session snapshot, as its agent's last scan saw it.
// The agent's `Report` itself, unchanged on the wire: the newtype exists only
// because the derive needs a local type to hang the resource on, and core must
// not depend on kube.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sessionguard.io",
    version = "v1alpha1",
    kind = "SessionReport",
    plural = "sessionreports",
    shortname = "sgr",
    derive = "PartialEq",
    status = "ReportStatus",
    doc = "One node's terminal sessions, written by that node's sessionguard agent and named after the node. The spec is the full snapshot (level-triggered): each write replaces the last. The status (a subresource: only the controller may write it) holds the notices the agent writes into its sessions' terminals when notify.terminal is on.",
    printcolumn(name = "Generated", type_ = "date", json_path = ".spec.generated_at"),
    printcolumn(name = "Sequence", type_ = "integer", json_path = ".spec.sequence")
)]
#[serde(transparent)]
pub struct SessionReportSpec(pub Report);

// === impl SessionReport ===

impl SessionReport {
    /// The object a node's agent writes: named after the node it speaks for.
    pub fn of(report: Report) -> Self {
        let name = report.node.clone();
        Self::new(&name, SessionReportSpec(report))
    }

    /// The report as written, not yet checked against the object's name or
    /// the limits (the controller does that before trusting it).
    pub fn into_report(self) -> Report {
        self.spec.0
    }

    /// The notices the controller published for this node's sessions
    /// (none without a status).
    pub fn notices(&self) -> &[Notice] {
        self.status.as_ref().map_or(&[], |s| s.notices.as_slice())
    }
}

/// The chart's CRD file: a header for the reader, then the definition the
/// derive generates.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    Ok(format!("{HEADER}{}", serde_yaml::to_string(&crd())?))
}

pub fn crd() -> CustomResourceDefinition {
    let mut crd = SessionReport::crd();
    // The derive makes the optional status nullable; it is absent or an
    // object, never null (the schema allows no nulls anywhere).
    for v in &mut crd.spec.versions {
        let status = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            status.nullable = None;
        }
    }
    crd
}

const HEADER: &str = "\
# Generated from the SessionReport type in api/src/lib.rs (spec: core's Report) by
# `make manifests`; do not edit. A test fails while this file differs from it.
#
# One SessionReport per node, named after the node, written by that node's
# sessionguard agent. spec is the agent's full session snapshot (level-triggered);
# status (a subresource, written by the controller only) carries the notices the
# agent writes into its sessions' terminals when notify.terminal is on.
# The schema bounds every field so an oversized or malformed report is refused
# by the API server with a 422 that names the field.
";

#[cfg(test)]
mod tests;
