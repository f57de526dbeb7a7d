//! A failed test's state, printed: pods, workloads, events, PodDisruptionBudgets,
//! Leases, its node and that node's SessionReport, and the tails of the logs of the
//! binaries it ran.

use std::path::Path;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;

/// Lines of each log shown for a failed test.
const LOG_TAIL: usize = 25;

/// Prints what a human would look at first with kubectl.
pub async fn namespace(client: &kube::Client, ns: &str, node: Option<&str>) {
    let c = || client.clone();
    section(Api::<Pod>::namespaced(c(), ns), "pods", ns, |p| {
        let s = p.status.unwrap_or_default();
        let conds: Vec<String> = s
            .conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| format!("{}={}", c.type_, c.status))
            .collect();
        format!(
            "{} uid={} phase={} node={} deleting={} [{}]",
            p.metadata.name.unwrap_or_default(),
            p.metadata.uid.unwrap_or_default(),
            s.phase.unwrap_or_default(),
            p.spec.and_then(|s| s.node_name).unwrap_or_default(),
            p.metadata.deletion_timestamp.is_some(),
            conds.join(" "),
        )
    })
    .await;
    section(Api::<Event>::namespaced(c(), ns), "events", ns, |e| {
        format!(
            "{} {}/{}: {} {}",
            e.type_.unwrap_or_default(),
            e.involved_object.kind.unwrap_or_default(),
            e.involved_object.name.unwrap_or_default(),
            e.reason.unwrap_or_default(),
            e.message.unwrap_or_default(),
        )
    })
    .await;
    section(
        Api::<PodDisruptionBudget>::namespaced(c(), ns),
        "poddisruptionbudgets",
        ns,
        |p| {
            let s = p.status.unwrap_or_default();
            format!(
                "{} disruptionsAllowed={} currentHealthy={} expected={}",
                p.metadata.name.unwrap_or_default(),
                s.disruptions_allowed,
                s.current_healthy,
                s.expected_pods,
            )
        },
    )
    .await;
    section(
        Api::<StatefulSet>::namespaced(c(), ns),
        "statefulsets",
        ns,
        |o| {
            let s = o.status.unwrap_or_default();
            format!(
                "{} ready={}/{} current={} update={}",
                o.metadata.name.unwrap_or_default(),
                s.ready_replicas.unwrap_or(0),
                s.replicas,
                s.current_revision.unwrap_or_default(),
                s.update_revision.unwrap_or_default(),
            )
        },
    )
    .await;
    section(
        Api::<Deployment>::namespaced(c(), ns),
        "deployments",
        ns,
        |o| {
            let s = o.status.unwrap_or_default();
            let ready = s.ready_replicas.unwrap_or(0);
            format!(
                "{} ready={ready}/{}",
                o.metadata.name.unwrap_or_default(),
                s.replicas.unwrap_or(0)
            )
        },
    )
    .await;
    section(
        Api::<DaemonSet>::namespaced(c(), ns),
        "daemonsets",
        ns,
        |o| {
            let s = o.status.unwrap_or_default();
            format!(
                "{} ready={}/{}",
                o.metadata.name.unwrap_or_default(),
                s.number_ready,
                s.desired_number_scheduled,
            )
        },
    )
    .await;
    section(Api::<Lease>::namespaced(c(), ns), "leases", ns, |l| {
        let s = l.spec.unwrap_or_default();
        format!(
            "{} holder={} renewed={}",
            l.metadata.name.unwrap_or_default(),
            s.holder_identity.unwrap_or_default(),
            s.renew_time.map(|t| t.0.to_string()).unwrap_or_default(),
        )
    })
    .await;
    if let Some(node) = node {
        let reports = super::install::report_api(&c());
        eprintln!("--- sessionreport {node}");
        match reports.get_opt(node).await {
            Ok(Some(r)) => eprintln!("  {}", r.data),
            Ok(None) => eprintln!("  (none)"),
            // No CRD installed: nothing to show.
            Err(e) => eprintln!("  ({e})"),
        }
        eprintln!("--- node {node}");
        match Api::<Node>::all(c()).get_opt(node).await {
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

/// One `--- <kind> in <ns>` section: a line per object, or why listing failed.
async fn section<K>(api: Api<K>, kind: &str, ns: &str, line: impl Fn(K) -> String)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eprintln!("--- {kind} in {ns}");
    match api.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .for_each(|o| eprintln!("  {}", line(o))),
        Err(e) => eprintln!("  (listing failed: {e})"),
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
