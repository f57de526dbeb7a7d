//! Shared state: the stores fed by watches, the report index, a little memory
//! per pod, metrics, and the leader gate every write goes through.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use sessionguard_core::protection::{Map, OptIn, pdb_name};
use sessionguard_core::{PodUid, Session, keys};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::leader::WriteGate;
use crate::metrics::{Metrics, PodFigures};
use crate::reports::index::{Liveness, ReportIndex};

#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub statefulsets: Store<StatefulSet>,
    pub replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    pub deployments: Store<PartialObjectMeta<Deployment>>,
}

impl Stores {
    /// Every decision reads several stores; acting before all have listed
    /// could, after a restart, release protection that is still needed.
    pub fn is_ready(&self) -> bool {
        use futures::FutureExt;
        // Checked by polling once rather than awaiting each store, so one
        // lost wakeup can never park a reconcile forever.
        self.pods.wait_until_ready().now_or_never().is_some()
            && self.pdbs.wait_until_ready().now_or_never().is_some()
            && self.namespaces.wait_until_ready().now_or_never().is_some()
            && self
                .statefulsets
                .wait_until_ready()
                .now_or_never()
                .is_some()
            && self.replicasets.wait_until_ready().now_or_never().is_some()
            && self.deployments.wait_until_ready().now_or_never().is_some()
    }
}

/// What the controller remembers about a pod between reconciles. Losing it
/// (restart) only costs SessionEnded events and restarts the release grace.
#[derive(Debug, Default)]
pub struct PodMemory {
    /// Last time a live login was seen: drives the release grace.
    pub last_login: Option<Timestamp>,
    /// Sessions seen last time, to emit SessionStarted/SessionEnded.
    pub known: BTreeSet<SessionKey>,
    pub warned_name_taken: bool,
    pub warned_cross_node: BTreeSet<String>,
    pub eviction_attempts: u32,
    pub postponed_at: Option<Timestamp>,
    pub scheduled_event_sent: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SessionKey {
    pub tty: String,
    pub pid: u32,
    pub uid: u32,
    pub container: String,
    pub started_at: Timestamp,
}

impl From<&Session> for SessionKey {
    fn from(s: &Session) -> Self {
        Self {
            tty: s.tty.clone(),
            pid: s.pid,
            uid: s.uid,
            container: s
                .container_name
                .clone()
                .unwrap_or_else(|| s.container_id.short().to_string()),
            started_at: s.started_at,
        }
    }
}

pub struct State {
    pub config: Config,
    pub client: Client,
    pub identity: String,
    pub stores: Stores,
    pub index: RwLock<ReportIndex>,
    pub pods_by_uid: RwLock<HashMap<String, ObjectRef<Pod>>>,
    pub memory: Mutex<HashMap<String, PodMemory>>,
    /// Per StatefulSet UID, the UID of the pod its rollout last evicted: until
    /// the pod cache shows that pod terminating or gone, a lagging cache must
    /// not make the next reconcile evict (and announce) it a second time.
    pub rollout_evicted: Mutex<HashMap<String, String>>,
    pub metrics: Metrics,
    leader: WriteGate,
    synced: AtomicBool,
    reports_synced: tokio::sync::watch::Sender<bool>,
    pub sts_trigger: mpsc::UnboundedSender<ObjectRef<StatefulSet>>,
}

impl State {
    pub fn new(
        config: Config,
        client: Client,
        stores: Stores,
        metrics: Metrics,
        sts_trigger: mpsc::UnboundedSender<ObjectRef<StatefulSet>>,
    ) -> Self {
        Self {
            identity: config.identity(),
            config,
            client,
            stores,
            index: RwLock::default(),
            pods_by_uid: RwLock::default(),
            memory: Mutex::default(),
            rollout_evicted: Mutex::default(),
            metrics,
            leader: WriteGate::default(),
            synced: AtomicBool::new(false),
            reports_synced: tokio::sync::watch::Sender::new(false),
            sts_trigger,
        }
    }

    /// Leadership confirmed by a renewal that started at `renewed`: writes are
    /// allowed until `renewed + deadline`.
    pub fn lead_until(&self, until: Instant) {
        self.leader.open_until(until);
        self.metrics.leader.set(1);
    }

    /// Leadership lost or given up: no more writes.
    pub fn step_down(&self) {
        self.leader.close();
        self.metrics.leader.set(0);
    }

    pub fn set_reports_synced(&self) {
        self.reports_synced.send_replace(true);
    }

    /// Waits until every store and the report index have listed once.
    pub async fn ready(&self) {
        while !(self.stores.is_ready() && *self.reports_synced.borrow()) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    pub fn is_leader(&self) -> bool {
        self.leader.is_open_at(Instant::now())
    }

    /// Runs one write under the leader gate and the write timeout, counting
    /// the outcome. Only the Lease holder may write; a replica that lost the
    /// Lease mid-reconcile gets an error instead of a conflicting write.
    pub async fn write<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        if !self.is_leader() {
            self.metrics.write(op, "not_leader");
            return Err(Error::NotLeader { op });
        }
        self.metrics
            .timed_write(op, self.config.write_timeout, fut)
            .await
    }

    pub fn with_memory<R>(&self, uid: &str, f: impl FnOnce(&mut PodMemory) -> R) -> R {
        let mut m = self.memory.lock().expect("memory lock");
        f(m.entry(uid.to_string()).or_default())
    }

    pub fn pod_by_uid(&self, uid: &str) -> Option<Arc<Pod>> {
        let r = self
            .pods_by_uid
            .read()
            .expect("uid index lock")
            .get(uid)
            .cloned()?;
        self.stores.pods.get(&r)
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
        self.index
            .read()
            .expect("index lock")
            .liveness(node, &uid, now, self.config.agent_grace)
    }

    /// Opt-in as declared on the pod, its owners and its namespace.
    pub fn opt_in(&self, pod: &Pod) -> OptIn {
        let ns = pod.namespace().unwrap_or_default();
        let mut objects: Vec<(Map, Map)> = vec![(pod.labels().clone(), pod.annotations().clone())];
        for owner in pod.owner_references() {
            match owner.kind.as_str() {
                "StatefulSet" => {
                    if let Some(s) = self
                        .stores
                        .statefulsets
                        .get(&ObjectRef::new(&owner.name).within(&ns))
                    {
                        objects.push((s.labels().clone(), s.annotations().clone()));
                    }
                }
                "ReplicaSet" => {
                    if let Some(rs) = self
                        .stores
                        .replicasets
                        .get(&ObjectRef::new(&owner.name).within(&ns))
                    {
                        objects.push((rs.labels().clone(), rs.annotations().clone()));
                        for o in rs
                            .owner_references()
                            .iter()
                            .filter(|o| o.kind == "Deployment")
                        {
                            if let Some(d) = self
                                .stores
                                .deployments
                                .get(&ObjectRef::new(&o.name).within(&ns))
                            {
                                objects.push((d.labels().clone(), d.annotations().clone()));
                            }
                        }
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

    /// Our PDB for this pod, if the store has one (never a foreign PDB).
    pub fn our_pdb(&self, pod: &Pod) -> Option<Arc<PodDisruptionBudget>> {
        let ns = pod.namespace()?;
        let pdb = self
            .stores
            .pdbs
            .get(&ObjectRef::new(&pdb_name(&pod.name_any())).within(&ns))?;
        let ours = pdb.labels().get(keys::MANAGED_BY).map(String::as_str) == Some(keys::MANAGER);
        let owned = pdb
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == pod.metadata.uid.as_ref());
        (ours && owned).then_some(pdb)
    }

    /// The StatefulSet owning the pod, if any.
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

    /// Is anyone logged in to the pod, or is its protection still held?
    pub fn logged_in(&self, pod: &Pod, now: Timestamp) -> bool {
        let live = match self.liveness(pod, now) {
            Liveness::Fresh { sessions, .. } => sessions.iter().any(Session::is_login),
            _ => false,
        };
        live || self.our_pdb(pod).is_some()
    }

    /// Figures for the per-pod gauges, computed from current state.
    pub fn pod_view(&self) -> Vec<PodFigures> {
        let now = Timestamp::now();
        let mut out = Vec::new();
        for pod in self.stores.pods.state() {
            let opt = self.opt_in(&pod);
            let (sessions, oldest) = match self.liveness(&pod, now) {
                Liveness::Fresh { sessions, .. } => {
                    let logins: Vec<&Session> = sessions.iter().filter(|s| s.is_login()).collect();
                    let oldest = logins
                        .iter()
                        .map(|s| s.started_at)
                        .min()
                        .map(|t| now.duration_since(t).as_secs_f64().max(0.0));
                    (logins.len(), oldest)
                }
                _ => (0, None),
            };
            let protecting = self.our_pdb(&pod).is_some();
            let pending_update = self.owner_statefulset(&pod).and_then(|sts| {
                crate::rollout::manages(&sts, &self.set_opt_in(&sts)).then(|| {
                    let update = sts
                        .status
                        .as_ref()
                        .and_then(|s| s.update_revision.as_deref());
                    update.is_some()
                        && pod.labels().get(keys::REVISION_HASH).map(String::as_str) != update
                })
            });
            if !opt.protect && sessions == 0 && !protecting {
                continue;
            }
            out.push(PodFigures {
                namespace: pod.namespace().unwrap_or_default(),
                pod: pod.name_any(),
                opted_in: opt.protect,
                protecting,
                pending_update,
                sessions,
                oldest_session_age: oldest,
            });
        }
        out
    }
}
