//! Agent → controller. Sessions are reported through the API server as one
//! cluster-scoped `SessionReport` per node (`sessionguard_api`, also what
//! the controller and plugin read), whose spec is the node's full snapshot.
//! Its schema bounds every field with the constants in
//! `sessionguard_core::{report, session}`. The API server authenticates the
//! agent's pod-bound token and a ValidatingAdmissionPolicy lets it write only
//! the report named after its own node. The agent reads no pods unless told
//! to (`pods`): the report carries pod UIDs and container IDs, and the
//! controller names them.

mod pods;
mod writer;

pub use pods::{ForeignSessions, NodePods, list_with, name, resolve};
pub use writer::ReportWriter;

pub const FIELD_MANAGER: &str = "sessionguard-agent";
