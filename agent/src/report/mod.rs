//! Agent → controller. Sessions are reported through the API server as one
//! cluster-scoped `SessionReport` per node (`sessionguard.io/v1alpha1`),
//! whose spec is the node's full snapshot. The API server authenticates the
//! agent's pod-bound token and a ValidatingAdmissionPolicy lets it write only
//! the report named after its own node.

mod pods;
mod writer;

pub use pods::{ForeignSessions, NodePods, resolve};
pub use writer::{ReportWriter, report_api};

pub const GROUP: &str = "sessionguard.io";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "SessionReport";
pub const PLURAL: &str = "sessionreports";
pub const FIELD_MANAGER: &str = "sessionguard-agent";
