//! The controller's view of the cluster: reflector stores fed by watches, the
//! pod-UID index, and the report index; plus the queries reconciles and faces
//! gather their inputs with. Readers never write to the API server from here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use sessionguard_api::CachedPod;
use sessionguard_core::idle::counts_for_protection;
use sessionguard_core::notice::Notice;
use sessionguard_core::protection::{Map, OptIn, pdb_name};
use sessionguard_core::scope::Namespaces;
use sessionguard_core::{PodUid, console, keys};
use tokio::sync::watch;

use crate::io::pod_index::PodIndex;
use crate::io::report_index::{Liveness, PathPart, ReportIndex};

#[derive(Clone)]
pub struct Stores {
    pub pods: Store<CachedPod>,
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
    /// Pods by UID, controller and node (see `pod_index`), fed by the pod watch.
    pub(crate) pods_index: RwLock<PodIndex>,
    pub(crate) index: RwLock<ReportIndex>,
    /// Per node, the notices its report's status holds now (as the report
    /// watch last saw them), so the notice task writes only a difference.
    notices: RwLock<HashMap<String, Vec<Notice>>>,
    /// How long a node's sessions stay trusted after its agent's last report.
    agent_grace: Duration,
    reports_synced: watch::Sender<bool>,
    /// Where sessionguard may act (`--namespaces`); pods elsewhere are
    /// never looked at, so never written to.
    namespaces: Namespaces,
}

impl Cache {
    pub fn new(stores: Stores, agent_grace: Duration) -> Self {
        Self {
            stores,
            pods_index: RwLock::default(),
            index: RwLock::default(),
            notices: RwLock::default(),
            agent_grace,
            reports_synced: watch::Sender::new(false),
            namespaces: Namespaces::all(),
        }
    }

    /// Acts only in `namespaces` (see `core::scope`).
    pub fn within(mut self, namespaces: Namespaces) -> Self {
        self.namespaces = namespaces;
        self
    }

    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    /// Whether sessionguard may act on this pod at all (its namespace is one
    /// the operator chose).
    pub fn in_scope(&self, pod: &CachedPod) -> bool {
        self.namespaces
            .contains(pod.metadata.namespace.as_deref().unwrap_or_default())
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

    // --- the pod-UID index (fed by the pod watch) ---

    // --- queries ---

    /// The pod an agent reports under `uid`: its API UID, or a mirror pod's
    /// config hash.
    pub fn pod_by_uid(&self, uid: &str) -> Option<Arc<CachedPod>> {
        let r = self.pod_ref_by_uid(uid)?;
        self.stores.pods.get(&r)
    }

    pub fn pod_ref_by_uid(&self, uid: &str) -> Option<ObjectRef<CachedPod>> {
        self.pods_index.read().expect("pod index lock").by_uid(uid)
    }

    /// A pod the watch has seen (added, changed, listed) or deleted: the index follows.
    pub(crate) fn index_pod(&self, pod: &CachedPod, deleted: bool) {
        let mut ix = self.pods_index.write().expect("pod index lock");
        match (deleted, pod.uid()) {
            (false, _) => ix.apply(pod),
            (true, Some(uid)) => ix.remove(&uid),
            (true, None) => {}
        }
    }

    /// The index's entries, resolved through the store: only pods the store
    /// still holds under that UID (see `pod_index` on stale entries).
    fn resolve(&self, entries: Vec<(String, ObjectRef<CachedPod>)>) -> Vec<Arc<CachedPod>> {
        entries
            .into_iter()
            .filter_map(|(uid, r)| {
                self.stores
                    .pods
                    .get(&r)
                    .filter(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
            })
            .collect()
    }

    /// The pod's sessions from its own node's report (never another node's),
    /// found by the UID its agent sees (a mirror pod's: its config hash) and
    /// named after the pod: agents report UIDs only.
    pub fn liveness(&self, pod: &CachedPod, now: Timestamp) -> Liveness {
        let Some((node, uid)) = report_key(pod) else {
            return Liveness::NoReport;
        };
        let mut live =
            self.index
                .read()
                .expect("index lock")
                .liveness(node, &uid, now, self.agent_grace);
        if let Liveness::Fresh { sessions, .. } = &mut live {
            console::classify(sessions, |id| sessionguard_api::container_of(pod, id));
            sessionguard_api::name_sessions(pod, sessions);
        }
        live
    }

    /// The notices in `node`'s report status, as last watched.
    pub fn published_notices(&self, node: &str) -> Vec<Notice> {
        let n = self.notices.read().expect("notices lock");
        n.get(node).cloned().unwrap_or_default()
    }

    /// The nodes whose report status holds notices.
    pub fn nodes_with_notices(&self) -> Vec<String> {
        let n = self.notices.read().expect("notices lock");
        n.keys().cloned().collect()
    }

    /// The report watch saw `node`'s status (`None`: the report is gone).
    pub(crate) fn set_published_notices(&self, node: &str, notices: Option<Vec<Notice>>) {
        let mut n = self.notices.write().expect("notices lock");
        match notices {
            Some(v) if !v.is_empty() => {
                n.insert(node.to_string(), v);
            }
            _ => {
                n.remove(node);
            }
        }
    }

    /// Whether a reconcile of this pod has anything to look at: state of
    /// ours on it (protection, an interaction record, an extension), our PDB
    /// for it, or sessions in its node's report. Any other pod is left alone
    /// until one of these appears (each wakes it: our writes, the PDB watch,
    /// the report watch), so the initial list of 30,000 pods and every status
    /// change of theirs do not each cost a reconcile.
    pub fn has_business(&self, pod: &CachedPod) -> bool {
        if !self.in_scope(pod) {
            return false;
        }
        let ours = [keys::POD_UID_LABEL, keys::INTERACTED]
            .iter()
            .any(|k| pod.labels().contains_key(*k))
            || [
                keys::PROTECTED_SINCE,
                keys::SAVED_ANNOTATIONS,
                keys::FIRST_INTERACTION,
                keys::EVICT_AT,
                keys::EXTENSION,
            ]
            .iter()
            .any(|k| pod.annotations().contains_key(*k));
        ours || self.our_pdb(pod).is_some() || self.is_reported(pod)
    }

    /// Sessions of this pod are in its node's report (whatever their age).
    fn is_reported(&self, pod: &CachedPod) -> bool {
        let Some((node, uid)) = report_key(pod) else {
            return false;
        };
        let index = self.index.read().expect("index lock");
        index.get(node).is_some_and(|r| r.names(&uid))
    }

    /// Opt-in as declared on the pod, its owners and its namespace.
    pub fn opt_in(&self, pod: &CachedPod) -> OptIn {
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
    pub fn protected_on(&self, node: &str) -> Vec<Arc<CachedPod>> {
        let on_node = self
            .pods_index
            .read()
            .expect("pod index lock")
            .on_node(node);
        let mut pods: Vec<Arc<CachedPod>> = self
            .resolve(on_node)
            .into_iter()
            .filter(|p| p.node_name.as_deref() == Some(node))
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
    pub fn our_pdb(&self, pod: &CachedPod) -> Option<Arc<PodDisruptionBudget>> {
        let ns = pod.namespace()?;
        let pdb = self
            .stores
            .pdbs
            .get(&ObjectRef::new(&pdb_name(&pod.name_any())).within(&ns))?;
        is_ours(&pdb, pod).then_some(pdb)
    }

    /// The StatefulSet controlling the pod, if any.
    pub fn owner_statefulset(&self, pod: &CachedPod) -> Option<Arc<StatefulSet>> {
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
    pub fn pods_of(&self, sts: &StatefulSet) -> Vec<Arc<CachedPod>> {
        let ns = sts.namespace();
        let Some(uid) = sts.metadata.uid.as_deref() else {
            return Vec::new();
        };
        let owned = self
            .pods_index
            .read()
            .expect("pod index lock")
            .owned_by(uid);
        self.resolve(owned)
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
    pub fn logged_in(
        &self,
        pod: &CachedPod,
        now: Timestamp,
        idle_release: Option<Duration>,
    ) -> bool {
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

/// Where a pod's sessions are reported: its own node's report (never another
/// node's), under the UID its agent sees (a mirror pod's: its config hash).
fn report_key(pod: &CachedPod) -> Option<(&str, PodUid)> {
    let uid = PodUid::parse(&sessionguard_api::reported_uid(pod)?).ok()?;
    Some((pod.node_name.as_deref()?, uid))
}

/// A PDB is ours if it carries our label and is owned by the pod.
pub fn is_ours(pdb: &PodDisruptionBudget, pod: &CachedPod) -> bool {
    pdb.labels().get(keys::MANAGED_BY).map(String::as_str) == Some(keys::MANAGER)
        && pdb
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == pod.metadata.uid.as_ref())
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;
    use sessionguard_core::keys;

    use crate::fixtures::world::world;
    use crate::fixtures::{pod, session};
    use crate::io::report_index::Liveness;

    const HASH: &str = "5b2d8bd2d9a4f2e8e7c5a3a0f9b7e6d1";

    /// A static pod's mirror: the kubelet's annotations carry the config hash
    /// that the static pod's cgroup, and so its agent's report, names.
    fn mirror() -> sessionguard_api::CachedPod {
        pod("etcd-node-a")
            .annotated(keys::CONFIG_MIRROR, HASH)
            .annotated(keys::CONFIG_HASH, HASH)
            .build()
    }

    #[tokio::test]
    async fn a_static_pod_is_found_by_its_config_hash() {
        let etcd = mirror();
        let (ctx, _api) = world().pod(&etcd).start();
        ctx.cache.index_pod(&etcd, false);
        let by_hash = ctx.cache.pod_by_uid(HASH).expect("found by the hash");
        assert_eq!(by_hash.name_any(), "etcd-node-a");
        let by_uid = ctx
            .cache
            .pod_by_uid(&etcd.uid().unwrap())
            .expect("and by its UID");
        assert_eq!(by_uid.name_any(), "etcd-node-a");
        ctx.cache.index_pod(&etcd, true);
        assert!(
            ctx.cache.pod_by_uid(HASH).is_none(),
            "forgotten with the pod"
        );
    }

    #[tokio::test]
    async fn a_static_pod_s_sessions_reach_its_mirror_named() {
        let etcd = mirror();
        let login = session(&etcd).in_pod(HASH).build();
        let (ctx, _api) = world().pod(&etcd).agent("node-a", vec![login]).start();
        let now = jiff::Timestamp::now();
        let Liveness::Fresh { sessions, .. } = ctx.cache.liveness(&etcd, now) else {
            panic!("the mirror pod's node reported just now");
        };
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].pod_name.as_deref(), Some("etcd-node-a"));
        assert_eq!(sessions[0].namespace.as_deref(), Some("ops"));
    }

    #[tokio::test]
    async fn a_pod_claiming_a_hash_without_the_mirror_annotation_gets_nothing() {
        // config.hash alone is an annotation anyone may put on their own pod.
        let pretender = pod("web-0").annotated(keys::CONFIG_HASH, HASH).build();
        let login = session(&pretender).in_pod(HASH).build();
        let (ctx, _api) = world().pod(&pretender).agent("node-a", vec![login]).start();
        ctx.cache.index_pod(&pretender, false);
        assert!(ctx.cache.pod_by_uid(HASH).is_none());
        let Liveness::Fresh { sessions, .. } =
            ctx.cache.liveness(&pretender, jiff::Timestamp::now())
        else {
            panic!("node-a reported just now");
        };
        assert!(sessions.is_empty(), "{sessions:?}");
    }

    #[tokio::test]
    async fn names_come_from_the_pod_not_the_report() {
        let web = pod("web-0").build();
        let mut login = session(&web).build();
        login.pod_name = None;
        login.namespace = None;
        let (ctx, _api) = world().pod(&web).agent("node-a", vec![login]).start();
        let Liveness::Fresh { sessions, .. } = ctx.cache.liveness(&web, jiff::Timestamp::now())
        else {
            panic!("node-a reported just now");
        };
        assert_eq!(
            (
                sessions[0].namespace.as_deref(),
                sessions[0].pod_name.as_deref()
            ),
            (Some("ops"), Some("web-0"))
        );
    }

    #[tokio::test]
    async fn only_pods_with_something_to_look_at_have_business() {
        let idle = pod("idle-0").protected().build();
        let logged_in = pod("web-0").protected().build();
        let recorded = pod("web-1")
            .interacted(
                "2026-11-24T00:00:00Z",
                1000,
                std::time::Duration::from_secs(3600),
            )
            .build();
        let with_pdb = pod("web-2").build();
        let login = session(&logged_in).build();
        let (ctx, _api) = world()
            .pod(&idle)
            .pod(&logged_in)
            .pod(&recorded)
            .pod(&with_pdb)
            .pdb(&crate::fixtures::our_pdb(&with_pdb))
            .agent("node-a", vec![login])
            .start();
        assert!(
            !ctx.cache.has_business(&idle),
            "opted in, no session, nothing of ours"
        );
        assert!(
            ctx.cache.has_business(&logged_in),
            "named in its node's report"
        );
        assert!(ctx.cache.has_business(&recorded), "an interaction record");
        assert!(ctx.cache.has_business(&with_pdb), "our PDB");
    }
}
