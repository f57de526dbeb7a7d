//! `make scale`: sessionguard on the real control plane at cluster size. kwok
//! simulates the nodes and their pods' lifecycle in one process; this module plays one
//! agent per kwok node (the agent's own report writer, with a token bound to that
//! node's agent pod, so the SessionReport admission policy applies for real), runs the
//! real controller, opens and closes sessions at a rate, and measures what the scale
//! issue asks for (see [`figures::Figures`]).
//!
//! Phases: kwok nodes → workloads (StatefulSets opted in, Deployments, bare pods over
//! up to 100 namespaces) → agents → controller → churn (logins at a rate, with one
//! window of webhook load) → quiet (no churn, heartbeats only: writes counted) →
//! kill -9 and restart of the controller.

pub mod agents;
pub mod controller;
pub mod figures;
pub mod kwok;
pub mod measure;
pub mod run;
pub mod webhook;
pub mod workload;
pub mod writes;

use std::time::Duration;

pub use figures::Figures;
pub use run::run;

/// What a run builds and how long it measures.
#[derive(Clone, Debug)]
pub struct Config {
    pub nodes: usize,
    pub pods: usize,
    /// Churn phase: logins at `login_rate` per second, cluster-wide.
    pub churn: Duration,
    pub login_rate: f64,
    /// No churn, heartbeats only: the window the steady write rate is counted over.
    /// At least one heartbeat interval, so every agent writes in it.
    pub quiet: Duration,
    /// Admission reviews per second, and for how long (inside the churn phase).
    pub webhook_rate: u32,
    pub webhook_for: Duration,
    /// The agents' heartbeat (`--report-interval`; the agent's default is 30 s).
    pub heartbeat: Duration,
}

impl Config {
    /// The defaults: 1,000 nodes, 30,000 pods, 10 minutes, 1 login/s.
    pub fn full() -> Self {
        Self {
            nodes: 1000,
            pods: 30_000,
            churn: Duration::from_secs(600),
            login_rate: 1.0,
            quiet: Duration::from_secs(60),
            webhook_rate: 200,
            webhook_for: Duration::from_secs(60),
            heartbeat: Duration::from_secs(30),
        }
    }
}

/// Prints one progress line (stderr: stdout carries the table and the JSON line).
pub fn progress(msg: impl AsRef<str>) {
    eprintln!("scale: {}", msg.as_ref());
}
