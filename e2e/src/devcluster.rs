//! `make dev-up` / `dev-down` / `status`: a control plane and simulated nodes that outlive
//! the command that started them, recorded under one state directory (`.dev/cluster`).
//! Every background process has a pidfile in `<dir>/pids/`; `down` stops all of them
//! (including ones `e2e/dev.sh` adds, such as the controller and the agent), then the
//! control plane, then removes the cgroups of the cluster's nodes and the directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::controlplane::{self, ClusterInfo, ControlPlane, Lifetime, Proc, StartOptions, process};
use crate::error::Context;
use crate::simnode::{self, CgroupRoot};
use crate::{Error, Result, wait};

/// File listing the simulated nodes `up` started, one name a line.
const DEV_NODES: &str = "dev-nodes";

/// Starts (or finds running) the control plane in `dir` and the simulated `nodes`, each
/// as `<self exe> node --name <n>`. Copies the admin kubeconfig to `kubeconfig_out`.
pub async fn up(dir: &Path, nodes: &[String], kubeconfig_out: &Path) -> Result<ClusterInfo> {
    let info = match ClusterInfo::load(dir) {
        Ok(info) if info.is_running() => {
            eprintln!(
                "sg-cluster: control plane already running ({})",
                info.server
            );
            info
        }
        _ => {
            // A half-dead earlier run: stop what's left and start clean.
            down(dir).await?;
            let begin = Instant::now();
            let opts = StartOptions {
                dir: dir.to_path_buf(),
                lifetime: Lifetime::Detached,
                timeout: Duration::from_secs(120),
            };
            let cp = ControlPlane::start(&opts).await.map_err(|e| {
                Error::Invalid(format!(
                    "{e}\n(logs kept in {})",
                    dir.join("logs").display()
                ))
            })?;
            let info = cp.info().clone();
            cp.release();
            eprintln!(
                "sg-cluster: control plane ready in {:.1}s at {}",
                begin.elapsed().as_secs_f64(),
                info.server
            );
            info
        }
    };
    let client = info.admin_client().await?;
    for name in nodes {
        start_node(dir, &client, name).await?;
    }
    if let Some(parent) = kubeconfig_out.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(&info.admin_kubeconfig, kubeconfig_out)
        .ctx(|| format!("writing {}", kubeconfig_out.display()))?;
    Ok(info)
}

async fn start_node(dir: &Path, client: &kube::Client, name: &str) -> Result<()> {
    let pidfile = dir.join("pids").join(format!("node-{name}.pid"));
    if !process::pidfile_alive(&pidfile) {
        let exe = std::env::current_exe().ctx(|| "locating sg-cluster".into())?;
        let mut cmd = Command::new(exe);
        cmd.args(["node", "--name", name, "--dir"]).arg(dir);
        let log = dir.join("logs").join(format!("node-{name}.log"));
        let p = Proc::spawn(&format!("node {name}"), cmd, &log, Lifetime::Detached)?;
        p.write_pidfile(&pidfile)?;
        p.release();
        let list = dir.join(DEV_NODES);
        let mut names = std::fs::read_to_string(&list).unwrap_or_default();
        if !names.lines().any(|l| l == name) {
            names.push_str(name);
            names.push('\n');
            std::fs::write(&list, names).ctx(|| format!("writing {}", list.display()))?;
        }
    }
    let nodes: Api<Node> = Api::all(client.clone());
    wait::until(
        &format!("node {name} to be Ready"),
        Duration::from_secs(60),
        || async {
            if !process::pidfile_alive(&pidfile) {
                return Err(Error::Invalid(format!(
                    "simulated node {name} exited; see {}",
                    dir.join("logs").join(format!("node-{name}.log")).display()
                )));
            }
            Ok(nodes.get_opt(name).await?.filter(node_ready).map(|_| ()))
        },
    )
    .await?;
    eprintln!("sg-cluster: node {name} Ready");
    Ok(())
}

/// Stops everything recorded in `dir` and removes it. Safe to run twice.
pub async fn down(dir: &Path) -> Result<()> {
    // Asked before anything stops: the nodes of this cluster, whose cgroup trees go with
    // it (ours, and those of an e2e test that was killed while it reused this cluster).
    let mut nodes: Vec<String> = std::fs::read_to_string(dir.join(DEV_NODES))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    for n in registered_nodes(dir).await {
        if !nodes.contains(&n) {
            nodes.push(n);
        }
    }
    let pids = dir.join("pids");
    let components: Vec<String> = controlplane::COMPONENTS
        .iter()
        .map(|c| format!("{c}.pid"))
        .collect();
    // Workloads first (controller, agent, nodes), so nothing reacts to a vanishing API.
    if let Ok(entries) = std::fs::read_dir(&pids) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pid")
                && !components.contains(&name)
                && process::stop_pidfile(&e.path(), Duration::from_secs(10))?
            {
                eprintln!("sg-cluster: stopped {}", name.trim_end_matches(".pid"));
            }
        }
    }
    let n = controlplane::stop_dir(dir)?;
    if n > 0 {
        eprintln!("sg-cluster: stopped {n} control-plane processes");
    }
    if let Ok(root) = CgroupRoot::detect() {
        for node in &nodes {
            for p in simnode::remove_leftover_cgroups(&root, Some(node))? {
                eprintln!("sg-cluster: removed cgroup {}", p.display());
            }
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).ctx(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// The Node names the control plane in `dir` knows, if it answers within a few seconds;
/// none when it is not running (its nodes' trees are then found through `DEV_NODES` only).
async fn registered_nodes(dir: &Path) -> Vec<String> {
    let Ok(info) = ClusterInfo::load(dir) else {
        return Vec::new();
    };
    if !info.is_running() {
        return Vec::new();
    }
    let list = async {
        let nodes: Api<Node> = Api::all(info.admin_client().await?);
        Ok::<_, Error>(nodes.list_metadata(&Default::default()).await?)
    };
    match tokio::time::timeout(Duration::from_secs(5), list).await {
        Ok(Ok(list)) => list
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect(),
        Ok(Err(e)) => {
            eprintln!(
                "sg-cluster: could not list the cluster's nodes ({e}); removing the cgroups of the nodes in {DEV_NODES} only"
            );
            Vec::new()
        }
        Err(_) => {
            eprintln!(
                "sg-cluster: the API server did not list nodes within 5s; removing the cgroups of the nodes in {DEV_NODES} only"
            );
            Vec::new()
        }
    }
}

/// One line per process and node; `Ok(false)` when the control plane is not running.
pub async fn status(dir: &Path) -> Result<bool> {
    let Ok(info) = ClusterInfo::load(dir) else {
        println!("not running (no {})", dir.join("cluster.json").display());
        return Ok(false);
    };
    let mut pidfiles: Vec<PathBuf> = std::fs::read_dir(dir.join("pids"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    pidfiles.sort();
    for p in &pidfiles {
        let state = if process::pidfile_alive(p) {
            "running"
        } else {
            "STOPPED"
        };
        let name = p.file_stem().unwrap_or_default().to_string_lossy();
        println!("{name:<26} {state}");
    }
    if !info.is_running() {
        return Ok(false);
    }
    println!("server                     {}", info.server);
    let nodes: Api<Node> = Api::all(info.admin_client().await?);
    for n in nodes.list(&Default::default()).await?.items {
        let ready = if node_ready(&n) { "Ready" } else { "NotReady" };
        println!("node {:<21} {ready}", n.metadata.name.unwrap_or_default());
    }
    Ok(true)
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
