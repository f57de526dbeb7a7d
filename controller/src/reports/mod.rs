//! Agent reports: the `SessionReport` resource, the per-node index built from
//! it, and the watch that feeds the index and wakes the affected pods.

pub mod crd;
pub mod index;
pub mod watch;

pub use crd::SessionReport;
