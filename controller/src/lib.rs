//! sessionguard controller: agent reports in, PodDisruptionBudgets,
//! interaction records, rollouts and evictions out.
//!
//! Data path: `reports` (SessionReport watch → index) → `protect` (pod
//! reconcile: PDB, annotations, events) → `evict` (drift eviction) and
//! `rollout` (OnDelete StatefulSets). `leader` gates every write; `metrics`
//! and `server` expose the state.

pub mod admission;
pub mod config;
pub mod error;
pub mod events;
pub mod evict;
pub mod leader;
pub mod metrics;
pub mod protect;
pub mod reports;
pub mod rollout;
pub mod run;
pub mod server;
pub mod state;

#[cfg(test)]
mod fixtures;

pub use config::{Config, LogFormat};
pub use error::Error;
