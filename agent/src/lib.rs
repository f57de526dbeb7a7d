//! sessionguard's node agent: finds every terminal session in the node's pods
//! by reading /proc, and reports them.
//!
//! Data path: `proc` (pure parsers) → `scan` (reads /proc, groups terminals
//! into sessions) → `snapshot` (the node's current report) → `server`
//! (/sessions, /metrics) and `report` (to the API server), which hands the
//! controller's notices to `notify` (the sessions' terminals, when on).

pub mod config;
pub mod daemon;
pub mod error;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod proc;
pub mod report;
pub mod scan;
pub mod server;
pub mod snapshot;
/// The fake proc tree and fixtures: for this crate's tests and benches and for
/// other crates' tests (feature `testing`), never in a build that ships.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::Error;
