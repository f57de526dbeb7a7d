//! sessionguard controller: agent reports in, PodDisruptionBudgets,
//! interaction records, rollouts and evictions out.
//!
//! Layers, arrows pointing down only (see ARCHITECTURE.md):
//! - `face`: what the outside sees: metrics/health, the admission webhooks.
//! - `reconcile`: gather from the cache → decide in `sessionguard_core` →
//!   hand the writes to the writer (`pod`, `evict`, `rollout`).
//! - `io`: watch caches and indexes (`cache`, `reports`), the one `writer`
//!   (leader gate, timeout, counters), the `lease`, `events`.
//!
//! `run` wires them together; `cleanup` is the uninstall path (the
//! `cleanup` subcommand); `config` is the command line.

pub mod cleanup;
pub mod cleanup_reports;
pub mod config;
pub mod error;
pub mod face;
pub mod io;
pub mod reconcile;
pub mod run;

#[cfg(test)]
mod fixtures;

pub use config::{CleanupArgs, Command, Config, DeleteReportsArgs, LogFormat};
pub use error::Error;
