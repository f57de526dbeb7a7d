//! A failed test's state, printed: pods, workloads, events, PodDisruptionBudgets,
//! Leases, its node and that node's SessionReport, and the tails of the logs of the
//! binaries it ran.

use std::path::Path;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};

/// Lines of each log shown for a failed test.
const LOG_TAIL: usize = 25;

/// Prints what a human would look at first with kubectl.
pub async fn namespace(client: &kube::Client, ns: &str, node: Option<&str>) {
    let lp = ListParams::default();
    eprintln!("--- pods in {ns}");
    match Api::<Pod>::namespaced(client.clone(), ns).list(&lp).await {
        Ok(list) => {
            for p in list.items {
                let s = p.status.unwrap_or_default();
                let conds: Vec<String> = s
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|c| format!("{}={}", c.type_, c.status))
                    .collect();
                eprintln!(
                    "  {} uid={} phase={} node={} deleting={} [{}]",
                    p.metadata.name.unwrap_or_default(),
                    p.metadata.uid.unwrap_or_default(),
                    s.phase.unwrap_or_default(),
                    p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                    p.metadata.deletion_timestamp.is_some(),
                    conds.join(" "),
                );
            }
        }
        Err(e) => eprintln!("  (listing failed: {e})"),
    }
    eprintln!("--- events in {ns}");
    match Api::<Event>::namespaced(client.clone(), ns).list(&lp).await {
        Ok(list) => {
            for e in list.items {
                eprintln!(
                    "  {} {}/{}: {} {}",
                    e.type_.unwrap_or_default(),
                    e.involved_object.kind.unwrap_or_default(),
                    e.involved_object.name.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                );
            }
        }
        Err(e) => eprintln!("  (listing failed: {e})"),
    }
    eprintln!("--- poddisruptionbudgets in {ns}");
    match Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        Ok(list) => {
            for p in list.items {
                let s = p.status.unwrap_or_default();
                eprintln!(
                    "  {} disruptionsAllowed={} currentHealthy={} expected={}",
                    p.metadata.name.unwrap_or_default(),
                    s.disruptions_allowed,
                    s.current_healthy,
                    s.expected_pods,
                );
            }
        }
        Err(e) => eprintln!("  (listing failed: {e})"),
    }
    workloads(client, ns).await;
    eprintln!("--- leases in {ns}");
    match Api::<Lease>::namespaced(client.clone(), ns).list(&lp).await {
        Ok(list) => {
            for l in list.items {
                let s = l.spec.unwrap_or_default();
                eprintln!(
                    "  {} holder={} renewed={}",
                    l.metadata.name.unwrap_or_default(),
                    s.holder_identity.unwrap_or_default(),
                    s.renew_time.map(|t| t.0.to_string()).unwrap_or_default(),
                );
            }
        }
        Err(e) => eprintln!("  (listing failed: {e})"),
    }
    if let Some(node) = node {
        let gvk = GroupVersionKind::gvk("sessionguard.io", "v1alpha1", "SessionReport");
        let reports: Api<DynamicObject> =
            Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
        eprintln!("--- sessionreport {node}");
        match reports.get_opt(node).await {
            Ok(Some(r)) => eprintln!("  {}", r.data),
            Ok(None) => eprintln!("  (none)"),
            // No CRD installed: nothing to show.
            Err(e) => eprintln!("  ({e})"),
        }
        eprintln!("--- node {node}");
        match Api::<Node>::all(client.clone()).get_opt(node).await {
            Ok(Some(n)) => {
                let unsched = n.spec.and_then(|s| s.unschedulable).unwrap_or(false);
                let ready = n
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "Ready")
                    .map(|c| c.status)
                    .unwrap_or_default();
                eprintln!("  ready={ready} unschedulable={unsched}");
            }
            Ok(None) => eprintln!("  (gone)"),
            Err(e) => eprintln!("  (get failed: {e})"),
        }
    }
}

async fn workloads(client: &kube::Client, ns: &str) {
    let lp = ListParams::default();
    eprintln!("--- workloads in {ns}");
    if let Ok(list) = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        for o in list.items {
            let s = o.status.unwrap_or_default();
            eprintln!(
                "  statefulset {} ready={}/{} current={} update={}",
                o.metadata.name.unwrap_or_default(),
                s.ready_replicas.unwrap_or(0),
                s.replicas,
                s.current_revision.unwrap_or_default(),
                s.update_revision.unwrap_or_default(),
            );
        }
    }
    if let Ok(list) = Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        for o in list.items {
            let s = o.status.unwrap_or_default();
            eprintln!(
                "  deployment {} ready={}/{}",
                o.metadata.name.unwrap_or_default(),
                s.ready_replicas.unwrap_or(0),
                s.replicas.unwrap_or(0),
            );
        }
    }
    if let Ok(list) = Api::<DaemonSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        for o in list.items {
            let s = o.status.unwrap_or_default();
            eprintln!(
                "  daemonset {} ready={}/{}",
                o.metadata.name.unwrap_or_default(),
                s.number_ready,
                s.desired_number_scheduled,
            );
        }
    }
}

/// The last lines of every `*.log` in a test's scratch directory.
pub fn logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- {} (last {LOG_TAIL} lines)", log.display());
        for l in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
            eprintln!("  {l}");
        }
    }
}
