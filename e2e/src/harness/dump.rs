//! A failed test's state, printed: pods, events, PodDisruptionBudgets and its node.

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;

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
    if let Some(node) = node {
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
