//! What every e2e test uses (this crate's and the controller's):
//!
//! - [`cluster`]: one control plane per test binary, or a running one reused;
//! - [`env`]: [`TestEnv`], a fresh labelled namespace pinned to its own simulated node,
//!   dumped on failure and deleted after;
//! - [`await_`]: awaiting object conditions with timeouts;
//! - [`tokens`]: pod-bound ServiceAccount tokens and token kubeconfigs;
//! - [`spawn`]: workspace binaries (agent, controller) as children killed on Drop;
//! - [`http`]: GETs and metric lookups against those children;
//! - [`identity`]: the controller's ServiceAccount and RBAC exactly as the chart grants them;
//! - [`install`]: the SessionReport CRD and admission policy, from the chart's files.

pub mod await_;
pub mod cluster;
pub mod dump;
pub mod env;
pub mod freeze;
pub mod http;
pub mod identity;
pub mod install;
pub mod procfs;
pub mod spawn;
pub mod tokens;

pub use self::cluster::{SharedCluster, shared};
pub use self::env::{TestEnv, skip_reason};
pub use self::spawn::{Child, workspace_bin};
