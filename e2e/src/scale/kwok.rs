//! kwok (pinned, built by `make tools`) runs the simulated nodes: it keeps every Node
//! labelled [`KWOK_LABEL`] Ready with a Lease renewed every 10 s, marks pods bound to them Running
//! and finishes their deletion, with the stages kwokctl configures.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use super::progress;
use crate::error::Context;
use crate::harness::{Child, TestEnv};
use crate::{Error, Result, paths, wait};

/// On every kwok node; kwok manages only these, so simulated nodes of other tests and
/// real processes are left alone.
pub const KWOK_LABEL: &str = "sessionguard.io/kwok";
/// Taint on every kwok node: only the load's pods (which tolerate it) land there.
pub const KWOK_TAINT: &str = "sessionguard.io/kwok";
/// Parallel API calls while building the cluster.
pub const PARALLEL: usize = 32;

/// kwok's options beside its stages.
/// - Node Leases of 40 s, renewed every 10 s, as a kubelet's (and as kwokctl runs kwok).
///   Started as we first started it, kwok made no Lease: the node lifecycle controller
///   took every node for dead 50 s after kwok made it Ready and marked each of its pods
///   NotReady (a status write and an event per pod, and its set's status), kwok made the
///   node Ready again, and so on for the whole run: the "steady" 300-node cluster kept
///   kube-apiserver at a full core, and at 1,000 nodes the build crawled.
/// - 16 workers marking pods Running. Each waits on its status PATCH: at kwok's default
///   of 4, with an API server answering in 100-200 ms while 30,000 pods are created,
///   that was about 17 pods a second however idle the CPU (the scheduler had bound every
///   pod; 18,000 waited for kwok). 8 renew the Leases.
const OPTIONS: &str = "apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  podPlayStageParallelism: 16
  nodePlayStageParallelism: 4
  nodeLeaseParallelism: 8
  nodeLeaseDurationSeconds: 40
";

/// Starts kwok against the test's control plane (admin credentials, as kwokctl runs it).
pub fn start(env: &TestEnv) -> Result<Child> {
    let bin = paths::tool("kwok")?;
    let stages = paths::tool("kwok-stages.yaml")?;
    let log = env.scratch_dir().join("kwok.log");
    let kubeconfig = env.kubeconfig().display().to_string();
    let config = stages.display().to_string();
    let options = env.scratch_dir().join("kwok-options.yaml");
    std::fs::write(&options, OPTIONS).ctx(|| format!("writing {}", options.display()))?;
    let options = options.display().to_string();
    let selector = format!("{KWOK_LABEL}=true");
    let child = Child::spawn(
        &bin,
        &[
            "--kubeconfig",
            &kubeconfig,
            "--config",
            &config,
            "--config",
            &options,
            "--manage-all-nodes=false",
            "--manage-nodes-with-label-selector",
            &selector,
            "--cidr=10.0.0.1/16",
            "--node-ip=10.255.0.1",
        ],
        &[],
        &log,
    )?;
    progress(format!("kwok: pid {}, log {}", child.pid(), log.display()));
    Ok(child)
}

/// The names of `n` kwok nodes of this run.
pub fn node_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

/// Creates the nodes (capacity for 110 pods each, like a kubelet's default) and waits
/// until kwok has made every one Ready.
pub async fn create_nodes(client: &kube::Client, names: &[String]) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let started = Instant::now();
    stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move {
                let node: Node = serde_json::from_value(json!({
                    "metadata": {
                        "name": name,
                        "labels": {
                            KWOK_LABEL: "true",
                            "kubernetes.io/hostname": name,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "type": "kwok",
                        },
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                    },
                    "spec": {"taints": [{"key": KWOK_TAINT, "value": "true", "effect": "NoSchedule"}]},
                    "status": {
                        "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                        "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                        "nodeInfo": {"kubeletVersion": "kwok", "architecture": "amd64",
                                     "operatingSystem": "linux"},
                    },
                }))?;
                match api.create(&PostParams::default(), &node).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(Error::from(e)),
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    progress(format!(
        "{} nodes created in {:.1}s; waiting for kwok to make them Ready",
        names.len(),
        started.elapsed().as_secs_f64()
    ));
    let lp = ListParams::default().labels(&format!("{KWOK_LABEL}=true"));
    let want = names.len();
    wait::until(
        "kwok to make every node Ready",
        Duration::from_secs(120 + want as u64 / 5),
        || async {
            let ready = api
                .list(&lp)
                .await?
                .items
                .iter()
                .filter(|n| is_ready(n))
                .count();
            Ok((ready >= want).then_some(()))
        },
    )
    .await?;
    progress(format!(
        "{want} nodes Ready after {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn is_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The toleration every pod of the load carries, and the selector that keeps it there.
pub fn placement() -> serde_json::Value {
    json!({
        "nodeSelector": {KWOK_LABEL: "true"},
        "tolerations": [{"key": KWOK_TAINT, "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
    })
}
