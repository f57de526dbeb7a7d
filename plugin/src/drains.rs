//! The I/O behind `kubectl sessions nodes` and the BLOCKING column: our
//! PDBs and the pods they protect, nodes, reports, and the
//! `EvictionBlocked` events of the eviction webhook. What a user may not
//! read (RBAC) shows as unknown (`?`, `-`), never as an error.

use std::collections::BTreeMap;
use std::io::Write;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use sessionguard_api::SessionReport;
use sessionguard_core::keys;

use crate::blocking::{self, Blocking};
use crate::error::{Error, Result};
use crate::kube_flags::{KubeFlags, client};
use crate::nodes::{self, NodeReport};
use crate::output::Format;
use crate::watch::{self, Watched};

/// `EvictionBlocked` events in `ns` (all namespaces for `None`); empty if
/// events cannot be read.
pub async fn blocked_events(client: &Client, ns: Option<&str>) -> Vec<Event> {
    let api: Api<Event> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let lp = ListParams::default().fields(&format!("reason={}", blocking::REASON));
    match api.list(&lp).await {
        Ok(l) => l.items,
        // A server that does not know the field selector: filter here.
        Err(kube::Error::Api(s)) if s.code == 400 => api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default(),
        Err(_) => vec![],
    }
}

/// `namespace/pod` by the UID agents report (a mirror pod's: its config
/// hash), for the pods on the reporting nodes: agents report UIDs only.
/// Metadata is enough; a node whose pods cannot be read (RBAC) keeps UIDs.
async fn pod_names(client: &Client, reports: &[NodeReport]) -> BTreeMap<String, String> {
    let api: Api<Pod> = Api::all(client.clone());
    let mut names = BTreeMap::new();
    for r in reports.iter().filter(|r| !r.report.sessions.is_empty()) {
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", r.report.node));
        let Ok(list) = api.list_metadata(&lp).await else {
            continue;
        };
        for m in list.items {
            let pod = Pod {
                metadata: m.metadata,
                ..Pod::default()
            };
            if let Some(uid) = sessionguard_api::reported_uid(&pod) {
                let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
                names.insert(uid, name);
            }
        }
    }
    names
}

/// Waits on the given pods (refused within the window), by `(namespace, pod)`.
pub fn waits_on(
    events: &[Event],
    pods: &[Pod],
    now: Timestamp,
) -> BTreeMap<(String, String), Blocking> {
    let node_of: BTreeMap<(String, String), String> = pods
        .iter()
        .filter_map(|p| {
            let node = p.spec.as_ref()?.node_name.clone()?;
            Some(((p.namespace()?, p.name_any()), node))
        })
        .collect();
    blocking::waits(
        events,
        |ns, pod| node_of.get(&(ns.to_string(), pod.to_string())).cloned(),
        now,
    )
}

/// `kubectl sessions nodes [-o ...] [-w]`.
pub async fn nodes_command(
    flags: &KubeFlags,
    format: Format,
    watch_changes: bool,
    out: &mut impl Write,
) -> Result<()> {
    let (client, _) = client(flags).await?;
    if !watch_changes {
        let text = render(&client, format).await?;
        out.write_all(text.as_bytes()).ok();
        return Ok(());
    }
    let watched = Watched {
        namespace: None,
        pod_label: Some(keys::POD_UID_LABEL),
        nodes: true,
    };
    watch::run(&client, &watched, out, || render(&client, format)).await
}

async fn render(client: &Client, format: Format) -> Result<String> {
    let now = Timestamp::now();
    let nodes: Option<Vec<(String, bool)>> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .ok()
        .map(|l| {
            l.items
                .iter()
                .map(|n| {
                    let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
                    (n.name_any(), cordoned)
                })
                .collect()
        });
    // Pods we protect carry our UID label; the PDB says protection is on now.
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().labels(keys::POD_UID_LABEL))
        .await
        .map_err(|source| Error::Kube {
            op: "listing protected pods in all namespaces".into(),
            source,
        })?
        .items;
    let pdbs = Api::<PodDisruptionBudget>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{}={}", keys::MANAGED_BY, keys::MANAGER)))
        .await
        .map_err(|source| Error::Kube {
            op: "listing sessionguard's PodDisruptionBudgets".into(),
            source,
        })?
        .items;
    let owners: std::collections::BTreeSet<String> = pdbs
        .iter()
        .flat_map(|p| p.owner_references().iter().map(|o| o.uid.clone()))
        .collect();
    let protected_pods: Vec<Pod> = pods
        .into_iter()
        .filter(|p| p.uid().is_some_and(|u| owners.contains(&u)))
        .collect();
    let protected: Vec<(String, String)> = protected_pods
        .iter()
        .filter_map(|p| {
            let node = p.spec.as_ref()?.node_name.clone()?;
            Some((
                node,
                format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
            ))
        })
        .collect();
    // Raw objects: a session field the typed report does not know yet
    // (idle_seconds, from newer agents) still reaches the IDLE column.
    let ar = ApiResource::erase::<SessionReport>(&());
    let reports: Vec<NodeReport> = match Api::<DynamicObject>::all_with(client.clone(), &ar)
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l
            .items
            .iter()
            .filter_map(|r| NodeReport::from_spec(&r.data["spec"]))
            .collect(),
        Err(_) => vec![],
    };
    let names = pod_names(client, &reports).await;
    let events = blocked_events(client, None).await;
    let waits = waits_on(&events, &protected_pods, now);
    let rows = nodes::rows(nodes.as_deref(), &protected, &reports, &names, &waits);
    match format {
        Format::Table | Format::Wide => Ok(nodes::table(&rows, now)),
        Format::Json => serde_json::to_string_pretty(&serde_json::json!({ "items": rows }))
            .map(|s| s + "\n")
            .map_err(|e| Error::Encode(e.to_string())),
        Format::Yaml => serde_yaml::to_string(&serde_json::json!({ "items": rows }))
            .map_err(|e| Error::Encode(e.to_string())),
    }
}
