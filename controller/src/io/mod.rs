//! The controller's contact with the API server: watch caches and indexes,
//! the one writer (leader gate, timeout, counters, error map), the Lease,
//! and event recording. Nothing here decides; reconciles and faces above
//! read the cache and hand their writes to the writer.

pub mod cache;
pub mod crd;
pub mod events;
pub mod lease;
pub mod metrics;
pub mod pod_index;
pub mod policies;
pub mod report_index;
pub mod reports;
pub mod trim;
pub mod watches;
pub mod writer;
