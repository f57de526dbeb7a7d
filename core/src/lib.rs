//! sessionguard's domain: what a terminal session is, what an agent reports, the
//! label and annotation keys we own, and the pure decisions built on them.
//!
//! Nothing here does I/O or knows about the Kubernetes client, so every rule can
//! be tested on literal values.

pub mod backoff;
pub mod bounds;
pub mod cap;
pub mod certs;
pub mod console;
pub mod drain;
pub mod duration;
pub mod error;
pub mod eviction;
pub mod guard;
pub mod idle;
pub mod interaction;
pub mod keys;
pub mod node_clock;
pub mod notice;
pub mod pod_plan;
pub mod policy_check;
pub mod printable;
pub mod protection;
pub mod readback;
pub mod report;
pub mod rollout;
pub mod rollout_stall;
pub mod scope;
pub mod session;
pub mod session_key;
pub mod uninstall;

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
#[cfg(any(test, feature = "fixtures"))]
pub mod flag_docs;
#[cfg(any(test, feature = "fixtures"))]
pub mod metric_docs;

pub use bounds::{CUT_MARKER, Cuts};
pub use error::Error;
pub use report::{Report, ReportLimits};
pub use session::{ContainerId, PodUid, Session};
pub use session_key::SessionKey;
