//! A simulated node: the kubelet's part, played against the real API server with real
//! processes and real cgroup directories.
//!
//! - [`node`]: registers the Node (Ready, capacity, addresses, version) and renews its Lease;
//! - [`pods`]: runs each bound pod's containers ([`container`]) in the cgroup layout of a
//!   systemd-driver kubelet with containerd ([`cgroup`]), reports them Running, and
//!   finishes deletions as the kubelet does;
//! - [`pty`]: interactive sessions in a container, our `kubectl exec -it`.

pub mod cgroup;
pub mod container;
pub mod node;
pub mod pidns;
mod pods;
pub mod pty;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::task::JoinHandle;

pub use self::cgroup::CgroupRoot;
pub use self::pods::IGNORE_SIGTERM_ANNOTATION;
pub use self::pty::Session;
use crate::error::Context;
use crate::{Error, Result};

/// Label every simulated node carries; test namespaces select their node by it.
pub const SIM_NODE_LABEL: &str = "sessionguard.io/sim-node";
/// How often the node status is re-posted besides the Lease.
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// How to run a simulated node.
#[derive(Clone, Debug)]
pub struct SimNodeConfig {
    pub name: String,
    /// Extra Node labels ([`SIM_NODE_LABEL`]=name is always set).
    pub labels: BTreeMap<String, String>,
    pub cgroup_root: CgroupRoot,
    /// Put `kubepods.slice` below `sessionguard-sim-<name>.slice` (default), so several
    /// simulated nodes can share the host; off, it sits at the cgroup root like a kubelet's.
    pub prefixed: bool,
}

/// A running simulated node. Stop it with [`SimNode::stop`]; dropping it kills its
/// containers and removes its cgroups synchronously (panicking tests included).
pub struct SimNode {
    cfg: SimNodeConfig,
    parent: PathBuf,
    pods: Arc<Mutex<pods::Pods>>,
    tasks: Vec<JoinHandle<()>>,
}

// === impl SimNodeConfig ===

impl SimNodeConfig {
    /// A prefixed node on the detected cgroup2 hierarchy.
    pub fn new(name: &str) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            labels: BTreeMap::new(),
            cgroup_root: CgroupRoot::detect()?,
            prefixed: true,
        })
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }
}

// === impl SimNode ===

impl SimNode {
    /// Registers the node and starts its heartbeat and pod loop. `client` should be the
    /// node's own identity (`ClusterInfo::node_kubeconfig`), as a kubelet's is.
    pub async fn start(client: kube::Client, cfg: SimNodeConfig) -> Result<Self> {
        let root = cfg.cgroup_root.path().to_path_buf();
        if !cfg.cgroup_root.writable() {
            return Err(Error::Invalid(format!(
                "cannot create cgroups in {} (simulated nodes need root)",
                root.display()
            )));
        }
        let rel = if cfg.prefixed {
            PathBuf::from(cgroup::node_prefix(&cfg.name))
        } else {
            PathBuf::new()
        };
        let parent = root.join(&rel);
        if cfg.prefixed {
            std::fs::create_dir_all(&parent)
                .ctx(|| format!("creating cgroup {}", parent.display()))?;
        }
        let mut labels = cfg.labels.clone();
        labels.insert(SIM_NODE_LABEL.to_string(), cfg.name.clone());
        let nodes: Api<Node> = Api::all(client.clone());
        let pods = Arc::new(Mutex::new(pods::Pods::default()));
        let mut this = Self {
            cfg,
            parent: parent.clone(),
            pods: pods.clone(),
            tasks: Vec::new(),
        };
        let node = node::register(&nodes, &this.cfg.name, &labels, &rel.to_string_lossy()).await?;
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        node::renew_lease(&leases, &node).await?;
        this.tasks
            .push(tokio::spawn(heartbeat(nodes, leases, node)));
        let ctx = pods::Ctx {
            node: this.cfg.name.clone(),
            kubepods_parent: parent,
            cgroup_root: root,
            pod_subnet: subnet_of(&this.cfg.name),
            pods,
        };
        this.tasks.push(tokio::spawn(pods::run(client, ctx)));
        tracing::info!(node = %this.cfg.name, cgroup = %this.parent.display(), "simulated node up");
        Ok(this)
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Where `kubepods.slice` lives for this node.
    pub fn cgroup_parent(&self) -> &Path {
        &self.parent
    }

    /// (container name, pid) of the running containers of the pod with this UID.
    pub fn container_pids(&self, pod_uid: &str) -> Vec<(String, u32)> {
        self.pods.lock().expect("pods lock").pids(pod_uid)
    }

    /// Stops the loops, kills the containers and removes the cgroups. The Node object
    /// stays: a kubelet may not delete its own Node (the harness does, as admin).
    pub async fn stop(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let running = self.pods.lock().map(|mut p| p.drain()).unwrap_or_default();
        let mut first_err = None;
        for p in running {
            if let Err(e) = pods::kill_now(p) {
                first_err.get_or_insert(e);
            }
        }
        if self.cfg.prefixed
            && let Err(e) = cgroup::remove_tree(&self.parent)
        {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        if !self.tasks.is_empty()
            && let Err(e) = self.teardown()
        {
            eprintln!("simulated node {}: cleanup failed: {e}", self.cfg.name);
        }
    }
}

async fn heartbeat(nodes: Api<Node>, leases: Api<Lease>, node: Node) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut lease_tick = tokio::time::interval(node::LEASE_RENEW);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = lease_tick.tick() => {
                if let Err(e) = node::renew_lease(&leases, &node).await {
                    tracing::warn!(node = %name, error = %e, "lease renewal failed");
                }
            }
            _ = status_tick.tick() => {
                if let Err(e) = node::report_status(&nodes, &name).await {
                    tracing::warn!(node = %name, error = %e, "node status update failed");
                }
            }
        }
    }
}

/// A per-node /24 for pod IPs, stable for a name.
fn subnet_of(name: &str) -> u8 {
    let h = name
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    (h % 250) as u8 + 1
}

/// Removes every simulated node's cgroup tree (`sessionguard-sim-*.slice`) left behind
/// under `root`, e.g. by a killed `sg-cluster node`. Returns what was removed.
pub fn remove_leftover_cgroups(root: &CgroupRoot, node: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.path()) else {
        return Ok(removed);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let wanted = match node {
            Some(n) => name == cgroup::node_prefix(n),
            None => name.starts_with("sessionguard-sim-") && name.ends_with(".slice"),
        };
        if wanted {
            cgroup::remove_tree(&e.path())?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

/// Removes simulated nodes' cgroup trees whose node process is gone: every process
/// left inside has been reparented (its parent is no longer the node or test that
/// started it, but init or a subreaper with no stake in it), or none is left and
/// none came or went for [`EMPTY_TREE_AGE`]. A live node's tree holds processes
/// whose parent is that node, or is empty and young (a node between pods, which an
/// earlier version swept from under a concurrent run), so concurrent runs (and
/// `make dev-up`) are never touched. Returns what was removed.
pub fn sweep_orphaned_cgroups(root: &CgroupRoot) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(root.path()) else {
        return Ok(removed);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("sessionguard-sim-") && name.ends_with(".slice")) {
            continue;
        }
        let pids = cgroup::procs_below(&e.path());
        // An empty tree may be a live node between pods (or one that has
        // none yet): only one untouched for a while is a leftover.
        let orphaned = if pids.is_empty() {
            idle_for(&e.path()) >= EMPTY_TREE_AGE
        } else {
            pids.iter().all(|&pid| {
                crate::harness::procfs::ppid(pid as u32)
                    .is_none_or(|ppid| ppid == 1 || !is_ours(ppid))
            })
        };
        if orphaned {
            cgroup::remove_tree(&e.path())?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

/// How long an empty node tree must have seen no pod directory come or go
/// before the sweep takes it for a leftover (no e2e test idles this long).
const EMPTY_TREE_AGE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Time since a directory's entries last changed (its mtime); zero if unknown.
fn idle_for(dir: &std::path::Path) -> std::time::Duration {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default()
}

/// Is `pid` a process that may run simulated nodes (a test binary, sg-cluster)?
/// Anything else holding a stand-in as its child means the node's process died
/// and the stand-in was inherited by a subreaper.
fn is_ours(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        // Test binaries live in target/*/deps, sg-cluster in target/*/ (a rebuilt
        // one reads "... (deleted)"); CARGO_TARGET_DIR may be anywhere.
        let exe = exe.to_string_lossy();
        exe.contains("/target/") || exe.contains("/sg-cluster") || exe.contains("/deps/")
    })
}
