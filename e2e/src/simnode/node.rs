//! The Node object and its heartbeat: what makes the real scheduler bind pods here.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Result;

/// Annotation on simulated Nodes: the cgroup parent (relative to the cgroup2 root) under
/// which this node puts `kubepods.slice`, so session helpers find container cgroups.
pub const CGROUP_PARENT_ANNOTATION: &str = "sim.sessionguard.io/cgroup-parent";
/// What the node reports as its kubelet version (the pinned control plane's release).
/// The kubelet version simulated nodes report: the control plane's own.
pub fn kubelet_version() -> String {
    crate::paths::kube_version()
}
/// How often the Lease is renewed (the kubelet's default).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;

/// Creates the Node (or takes over one left from an earlier run) and marks it Ready.
pub async fn register(
    nodes: &Api<Node>,
    name: &str,
    labels: &BTreeMap<String, String>,
    cgroup_parent: &str,
) -> Result<Node> {
    let mut all_labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            std::env::consts::ARCH.replace("x86_64", "amd64"),
        ),
    ]);
    all_labels.extend(labels.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": { CGROUP_PARENT_ANNOTATION: cgroup_parent },
        },
        "spec": {},
    }))?;
    if nodes.get_opt(name).await?.is_none() {
        nodes.create(&PostParams::default(), &node).await?;
    } else {
        let patch = json!({ "metadata": node.metadata });
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    report_status(nodes, name).await
}

/// Writes a Ready status: capacity, addresses, node info, and fresh heartbeats.
pub async fn report_status(nodes: &Api<Node>, name: &str) -> Result<Node> {
    let now = Timestamp::now().to_string();
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    let resources = json!({
        "cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi",
    });
    let status = json!({ "status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "simulated kubelet is posting ready status"),
        ],
        "addresses": [
            { "type": "InternalIP", "address": "127.0.0.1" },
            { "type": "Hostname", "address": name },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": kernel_release(),
            "osImage": "sessionguard simulated node",
            "containerRuntimeVersion": "containerd://simulated",
            "kubeletVersion": kubelet_version(),
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64"),
        },
    }});
    Ok(nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?)
}

/// Renews (or creates) the node's Lease in kube-node-lease, as the kubelet does every 10s.
pub async fn renew_lease(leases: &Api<Lease>, node: &Node) -> Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": name,
                "uid": node.metadata.uid,
            }],
        },
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now,
        },
    });
    if leases.get_opt(&name).await?.is_none() {
        leases
            .create(&PostParams::default(), &serde_json::from_value(lease)?)
            .await?;
    } else {
        leases
            .patch(&name, &PatchParams::default(), &Patch::Merge(&lease))
            .await?;
    }
    Ok(())
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
