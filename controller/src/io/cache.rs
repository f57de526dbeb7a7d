//! The controller's view of the cluster: reflector stores fed by watches, the
//! pod-UID index, and the report index; plus the queries reconciles and faces
//! gather their inputs with. Readers never write to the API server from here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use sessionguard_core::idle::counts_for_protection;
use sessionguard_core::protection::{Map, OptIn, pdb_name};
use sessionguard_core::{PodUid, console, keys};
use tokio::sync::watch;

use crate::io::report_index::{Liveness, PathPart, ReportIndex};

#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub statefulsets: Store<StatefulSet>,
    pub replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    pub deployments: Store<PartialObjectMeta<Deployment>>,
    /// Nodes trimmed to name, UID and `spec.unschedulable` (see `watches`).
    pub nodes: Store<Node>,
}

pub struct Cache {
    pub stores: Stores,
    pub(crate) pods_by_uid: RwLock<HashMap<String, ObjectRef<Pod>>>,
    pub(crate) index: RwLock<ReportIndex>,
    /// How long a node's sessions stay trusted after its agent's last report.
    agent_grace: Duration,
    reports_synced: watch::Sender<bool>,
}

impl Cache {
    pub fn new(stores: Stores, agent_grace: Duration) -> Self {
        Self {
            stores,
            pods_by_uid: RwLock::default(),
            index: RwLock::default(),
            agent_grace,
            reports_synced: watch::Sender::new(false),
        }
    }

    pub fn agent_grace(&self) -> Duration {
        self.agent_grace
    }

    /// One half of the path from agents to us went up or down (see
    /// `report_index`): silence is measured only while both are up.
    pub fn path(&self, part: PathPart, up: bool) {
        let mut index = self.index.write().expect("index lock");
        let was = index.path_up_since().is_some();
        if index.set_path(part, up, Timestamp::now()) {
            tracing::info!(?part, grace = ?self.agent_grace, "agents can be heard again: every node's grace restarts now");
        } else if was && index.path_up_since().is_none() {
            tracing::warn!(
                ?part,
                "agents cannot be heard: no node turns silent until this is back"
            );
        }
    }

    /// Whether agents can be heard now (both halves of the path are up).
    pub fn path_is_up(&self) -> bool {
        self.index
            .read()
            .expect("index lock")
            .path_up_since()
            .is_some()
    }

    // --- readiness ---

    pub(crate) fn set_reports_synced(&self) {
        self.reports_synced.send_replace(true);
    }

    /// The caches that have not finished their first list. Every decision
    /// reads several of them; acting before all have listed could, after a
    /// restart, release protection that is still needed.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        let s = &self.stores;
        [
            (listed(&s.pods), "pods"),
            (listed(&s.pdbs), "poddisruptionbudgets"),
            (listed(&s.namespaces), "namespaces"),
            (listed(&s.statefulsets), "statefulsets"),
            (listed(&s.replicasets), "replicasets"),
            (listed(&s.deployments), "deployments"),
            (listed(&s.nodes), "nodes"),
            (*self.reports_synced.borrow(), "sessionreports"),
        ]
        .into_iter()
        .filter_map(|(ready, name)| (!ready).then_some(name))
        .collect()
    }

    pub fn is_ready(&self) -> bool {
        self.waiting_for().is_empty()
    }

    /// Waits until every store and the report index have listed once.
    pub async fn ready(&self) {
        while !self.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // --- queries ---

    pub fn pod_by_uid(&self, uid: &str) -> Option<Arc<Pod>> {
        let r = self
            .pods_by_uid
            .read()
            .expect("uid index lock")
            .get(uid)
            .cloned()?;
        self.stores.pods.get(&r)
    }

    pub fn pod_ref_by_uid(&self, uid: &str) -> Option<ObjectRef<Pod>> {
        self.pods_by_uid
            .read()
            .expect("uid index lock")
            .get(uid)
            .cloned()
    }

    /// The pod's sessions from its own node's report (never another node's).
    pub fn liveness(&self, pod: &Pod, now: Timestamp) -> Liveness {
        let (Some(node), Some(uid)) = (
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            pod.uid(),
        ) else {
            return Liveness::NoReport;
        };
        let Ok(uid) = PodUid::parse(&uid) else {
            return Liveness::NoReport;
        };
        let mut live =
            self.index
                .read()
                .expect("index lock")
                .liveness(node, &uid, now, self.agent_grace);
        if let Liveness::Fresh { sessions, .. } = &mut live {
            console::classify(sessions, |id| sessionguard_api::container_of(pod, id));
        }
        live
    }

    /// UIDs of every pod some node's report names.
    pub fn reported_pod_uids(&self) -> std::collections::HashSet<String> {
        self.index
            .read()
            .expect("index lock")
            .nodes()
            .flat_map(|n| n.pods().map(|(u, _)| u.as_str().to_string()))
            .collect()
    }

    /// Opt-in as declared on the pod, its owners and its namespace.
    pub fn opt_in(&self, pod: &Pod) -> OptIn {
        let ns = pod.namespace().unwrap_or_default();
        let mut objects: Vec<(Map, Map)> = vec![(pod.labels().clone(), pod.annotations().clone())];
        for owner in pod.owner_references() {
            match owner.kind.as_str() {
                "StatefulSet" => {
                    if let Some(s) = self.stores.statefulsets.get(&within(&owner.name, &ns)) {
                        objects.push((s.labels().clone(), s.annotations().clone()));
                    }
                }
                "ReplicaSet" => {
                    let Some(rs) = self.stores.replicasets.get(&within(&owner.name, &ns)) else {
                        continue;
                    };
                    objects.push((rs.labels().clone(), rs.annotations().clone()));
                    let deployments = rs
                        .owner_references()
                        .iter()
                        .filter(|o| o.kind == "Deployment");
                    for d in deployments
                        .filter_map(|o| self.stores.deployments.get(&within(&o.name, &ns)))
                    {
                        objects.push((d.labels().clone(), d.annotations().clone()));
                    }
                }
                _ => {}
            }
        }
        if let Some(n) = self.stores.namespaces.get(&ObjectRef::new(&ns)) {
            // A namespace opts in with its label only; its annotations are
            // not read, so no-pdb stays a per-workload decision.
            objects.push((n.labels().clone(), Map::new()));
        }
        OptIn::from_objects(objects.iter().map(|(l, a)| (l, a)))
    }

    /// Opt-in of a StatefulSet's rollout: the set and its namespace. A label on
    /// a single pod protects that pod, but cannot opt its set's rollout in.
    pub fn set_opt_in(&self, sts: &StatefulSet) -> OptIn {
        let ns_labels: Map = sts
            .namespace()
            .and_then(|ns| self.stores.namespaces.get(&ObjectRef::new(&ns)))
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        OptIn::from_objects([(sts.labels(), sts.annotations()), (&ns_labels, &Map::new())])
    }

    /// The labels of a namespace, if the cache has it.
    pub fn namespace_labels(&self, ns: &str) -> Option<Map> {
        self.stores
            .namespaces
            .get(&ObjectRef::new(ns))
            .map(|n| n.labels().clone())
    }

    /// Whether the node is cordoned (`spec.unschedulable`), per the cache.
    pub fn cordoned(&self, node: &str) -> bool {
        self.stores
            .nodes
            .get(&ObjectRef::new(node))
            .is_some_and(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
    }

    /// The pods on `node` that sessionguard protects now (our PDB exists).
    pub fn protected_on(&self, node: &str) -> Vec<Arc<Pod>> {
        let mut pods: Vec<Arc<Pod>> = self
            .stores
            .pods
            .state()
            .into_iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
            .filter(|p| self.our_pdb(p).is_some())
            .collect();
        pods.sort_by_key(|p| (p.namespace(), p.name_any()));
        pods
    }

    /// One annotation of a namespace, if the cache has the namespace.
    pub fn namespace_annotation(&self, ns: &str, key: &str) -> Option<String> {
        self.stores
            .namespaces
            .get(&ObjectRef::new(ns))
            .and_then(|n| n.annotations().get(key).cloned())
    }

    /// Our PDB for this pod, if the store has one (never a foreign PDB).
    pub fn our_pdb(&self, pod: &Pod) -> Option<Arc<PodDisruptionBudget>> {
        let ns = pod.namespace()?;
        let pdb = self
            .stores
            .pdbs
            .get(&ObjectRef::new(&pdb_name(&pod.name_any())).within(&ns))?;
        is_ours(&pdb, pod).then_some(pdb)
    }

    /// The StatefulSet controlling the pod, if any.
    pub fn owner_statefulset(&self, pod: &Pod) -> Option<Arc<StatefulSet>> {
        let ns = pod.namespace()?;
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.kind == "StatefulSet" && o.controller == Some(true))?;
        self.stores
            .statefulsets
            .get(&ObjectRef::new(&owner.name).within(&ns))
    }

    /// The pods the StatefulSet controls.
    pub fn pods_of(&self, sts: &StatefulSet) -> Vec<Arc<Pod>> {
        let ns = sts.namespace();
        self.stores
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.namespace() == ns
                    && p.owner_references().iter().any(|o| {
                        o.controller == Some(true) && Some(&o.uid) == sts.metadata.uid.as_ref()
                    })
            })
            .collect()
    }

    /// Is anyone logged in to the pod (not idle past `idle_release`), or is
    /// its protection still held?
    pub fn logged_in(&self, pod: &Pod, now: Timestamp, idle_release: Option<Duration>) -> bool {
        let live = match self.liveness(pod, now) {
            Liveness::Fresh { sessions, .. } => sessions
                .iter()
                .any(|s| s.is_login() && counts_for_protection(s, idle_release)),
            _ => false,
        };
        live || self.our_pdb(pod).is_some()
    }
}

/// Has this store finished its first list? Polled once rather than awaited,
/// so one lost wakeup can never park a reconcile or a probe forever.
fn listed<K: kube::Resource + Clone>(store: &Store<K>) -> bool
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store.wait_until_ready().now_or_never().is_some()
}

fn within<K: kube::Resource<DynamicType = ()>>(name: &str, ns: &str) -> ObjectRef<K> {
    ObjectRef::new(name).within(ns)
}

/// A PDB is ours if it carries our label and is owned by the pod.
pub fn is_ours(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    pdb.labels().get(keys::MANAGED_BY).map(String::as_str) == Some(keys::MANAGER)
        && pdb
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == pod.metadata.uid.as_ref())
}
