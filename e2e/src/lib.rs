//! A real Kubernetes for sessionguard's tests and demo.
//!
//! - [`controlplane`]: etcd, kube-apiserver, kube-controller-manager and kube-scheduler,
//!   built from pinned sources (`e2e/build-tools.sh`) and run as plain processes.
//! - [`simnode`]: a simulated node that plays kubelet against the real API server: it
//!   registers a Node, runs a real process per container inside the cgroup directory a
//!   systemd-driver kubelet with containerd would create, and opens real pty sessions.
//! - [`harness`]: what every e2e test uses: a shared control plane, a fresh labelled
//!   namespace with its own simulated node, awaits with timeouts, tokens and binaries.
//! - [`scale`]: `make scale`: kwok nodes, workloads, one played agent per node, the real
//!   controller, and the figures of the scale issue.

pub mod controlplane;
pub mod devcluster;
pub mod error;
pub mod harness;
pub mod paths;
pub mod scale;
pub mod simnode;
pub mod wait;

pub use error::{Error, Result, check};
