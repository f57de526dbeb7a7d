//! The watches that feed the cache, and the wake-ups they send: a change to a
//! pod's PDB, owner or namespace wakes the pods it may concern.
//!
//! Every replica runs every watch from start, so a standby's cache is warm
//! when it takes over (and its admission webhooks answer from the same view
//! as the leader's). Wake-ups pass a [`Gate`] that only the leader opens: a
//! standby queues nothing for reconciles it does not run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, NodeSpec};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use sessionguard_api::CachedPod;
use sessionguard_core::keys;
use tokio::sync::mpsc::UnboundedSender;

use crate::io::cache::{Cache, Stores};
use crate::io::metrics::{KindLabels, Metrics};
use crate::io::trim;

/// Pods per page of the pod watch's initial list (see `start`).
pub const POD_PAGE: u32 = 100;
/// StatefulSets and Nodes per page of their initial lists. Both are decoded
/// as whole k8s-openapi objects (a pod template, a node's status, and their
/// managedFields) before `trim` sees one, and a page is decoded at once: at
/// kube's 500 a page of the scale load's StatefulSets was tens of MiB for an
/// instant, which a restart showed as the controller's RSS peak.
pub const OBJECT_PAGE: u32 = 50;
/// Objects per page of the metadata-only watches (no spec, no status).
pub const META_PAGE: u32 = 200;

/// The writing halves of the cache's stores, handed to the watches.
pub struct StoreWriters {
    pods: Writer<CachedPod>,
    pdbs: Writer<PodDisruptionBudget>,
    namespaces: Writer<PartialObjectMeta<Namespace>>,
    statefulsets: Writer<StatefulSet>,
    replicasets: Writer<PartialObjectMeta<ReplicaSet>>,
    deployments: Writer<PartialObjectMeta<Deployment>>,
    nodes: Writer<Node>,
}

/// Empty stores and the writers that fill them.
pub fn stores() -> (Stores, StoreWriters) {
    let (pods, pods_w) = reflector::store();
    let (pdbs, pdbs_w) = reflector::store();
    let (namespaces, ns_w) = reflector::store();
    let (statefulsets, sts_w) = reflector::store();
    let (replicasets, rs_w) = reflector::store();
    let (deployments, deploy_w) = reflector::store();
    let (nodes, nodes_w) = reflector::store();
    (
        Stores {
            pods,
            pdbs,
            namespaces,
            statefulsets,
            replicasets,
            deployments,
            nodes,
        },
        StoreWriters {
            pods: pods_w,
            pdbs: pdbs_w,
            namespaces: ns_w,
            statefulsets: sts_w,
            replicasets: rs_w,
            deployments: deploy_w,
            nodes: nodes_w,
        },
    )
}

// === impl PodWaker ===

// === impl Gate ===

/// Whether wake-ups reach the reconciles: open while this replica leads.
#[derive(Clone, Debug, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A wake-up channel behind a [`Gate`].
#[derive(Clone)]
pub struct Wakes<T> {
    gate: Gate,
    tx: UnboundedSender<T>,
}

impl<T> Wakes<T> {
    pub fn new(gate: Gate, tx: UnboundedSender<T>) -> Self {
        Self { gate, tx }
    }

    pub fn send(&self, item: T) {
        if self.gate.is_open() {
            // The receiver only goes away at shutdown.
            let _ = self.tx.send(item);
        }
    }
}

/// Asks the pod reconcile to look at pods again.
#[derive(Clone)]
pub struct PodWaker {
    cache: Arc<Cache>,
    wakes: Wakes<ObjectRef<CachedPod>>,
}

impl PodWaker {
    pub fn new(cache: Arc<Cache>, wakes: Wakes<ObjectRef<CachedPod>>) -> Self {
        Self { cache, wakes }
    }

    pub fn wake(&self, pod: ObjectRef<CachedPod>) {
        self.wakes.send(pod);
    }

    /// What a new leader looks at first, once the caches have listed (the
    /// wake-ups of its standby time were dropped): the pods sessionguard has
    /// business with (`Cache::has_business`: state of ours, our PDB, a
    /// report's sessions). Looking at every pod queued each login of the
    /// first minute after a start at 30,000 pods behind 30,000 reconciles.
    pub fn first_look(&self) {
        self.wake_namespace(None);
    }

    pub fn wake_uids<'a>(&self, uids: impl Iterator<Item = &'a str>) {
        for r in uids.filter_map(|uid| self.cache.pod_ref_by_uid(uid)) {
            self.wake(r);
        }
    }

    /// Wakes the pods of a namespace (all namespaces for `None`) that
    /// sessionguard has business with (`Cache::has_business`).
    pub fn wake_namespace(&self, ns: Option<&str>) {
        for pod in self.cache.stores.pods.state() {
            if (ns.is_none() || pod.namespace().as_deref() == ns) && self.cache.has_business(&pod) {
                self.wake(ObjectRef::from_obj(&*pod));
            }
        }
    }
}

/// Starts every watch of the cache. A touched pod wakes the pod reconcile, a
/// touched StatefulSet wakes `statefulsets` and its pods, a node cordoned or
/// uncordoned wakes `nodes` (all gated).
/// `forget` is told the UID of every deleted pod.
#[allow(clippy::too_many_arguments)]
pub fn start(
    client: &Client,
    writers: StoreWriters,
    cache: Arc<Cache>,
    waker: PodWaker,
    statefulsets: Wakes<ObjectRef<StatefulSet>>,
    nodes: Wakes<String>,
    metrics: Metrics,
    forget: impl Fn(&str) + Send + 'static,
) {
    spawn_pdbs(client, writers.pdbs, waker.clone(), metrics.clone());
    spawn_nodes(client, writers.nodes, nodes, metrics.clone());
    spawn_meta::<Namespace>(
        client,
        writers.namespaces,
        waker.clone(),
        metrics.clone(),
        "namespaces",
    );
    spawn_meta::<ReplicaSet>(
        client,
        writers.replicasets,
        waker.clone(),
        metrics.clone(),
        "replicasets",
    );
    spawn_meta::<Deployment>(
        client,
        writers.deployments,
        waker.clone(),
        metrics.clone(),
        "deployments",
    );

    let on_err = counter(metrics.clone(), "pods");
    let pod_waker = waker.clone();
    let pods = reflector::reflector(
        writers.pods,
        watcher(
            // Decoded straight into the cached pod (see `sessionguard_api::CachedPod`):
            // no full Pod, no managedFields, is built for the cache, and a list
            // page costs what its response text does.
            Api::<CachedPod>::all(client.clone()),
            // Pages of 100 rather than kube's 500: a page's body is held whole
            // while it decodes (heaptrack, README).
            watcher::Config::default().page_size(POD_PAGE),
        ),
    )
    .default_backoff()
    .for_each(move |ev| {
        match ev {
            // A pod seen (listed, added, changed) is woken if a reconcile has
            // anything to look at (`has_business`): at 30,000 pods the
            // initial list and the status changes of pods nobody logged in to
            // would each cost a reconcile, and logins queued behind them. A
            // pod whose sessions were reported before it reached the cache is
            // found by the report it is named in, so a late pod loses nothing.
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                cache.index_pod(&p, false);
                if cache.has_business(&p) {
                    pod_waker.wake(ObjectRef::from_obj(&p));
                }
            }
            Ok(watcher::Event::Delete(p)) => {
                cache.index_pod(&p, true);
                if let Some(uid) = p.uid() {
                    forget(&uid);
                }
            }
            Err(e) => on_err(&e),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
        }
        futures::future::ready(())
    });
    tokio::spawn(pods);

    let on_err = counter(metrics, "statefulsets");
    let sts = reflector::reflector(
        writers.statefulsets,
        watcher(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default().page_size(OBJECT_PAGE),
        )
        // Only what the rollout reads (see `trim`): the pod template is most
        // of a StatefulSet.
        .modify(trim::trim_statefulset),
    )
    .default_backoff()
    .touched_objects()
    .for_each(move |r| {
        match r {
            // Opt-in or no-pdb may have changed on the set: look at its pods.
            Ok(sts) => {
                waker.wake_namespace(sts.namespace().as_deref());
                statefulsets.send(ObjectRef::from_obj(&sts));
            }
            Err(e) => on_err(&e),
        }
        futures::future::ready(())
    });
    tokio::spawn(sts);
}

/// Counts and logs a watch error; the watch retries with backoff.
pub fn counter(metrics: Metrics, kind: &'static str) -> impl Fn(&watcher::Error) {
    move |e| {
        metrics
            .watcher_errors
            .get_or_create(&KindLabels { kind })
            .inc();
        tracing::warn!(error = %e, resource = kind, "watch failed; retrying with backoff");
    }
}

/// Our PDBs only (by label): a change wakes the pod that owns it.
fn spawn_pdbs(
    client: &Client,
    writer: Writer<PodDisruptionBudget>,
    waker: PodWaker,
    metrics: Metrics,
) {
    let api: Api<PodDisruptionBudget> = Api::all(client.clone());
    let cfg = watcher::Config::default().labels(&format!("{}={}", keys::MANAGED_BY, keys::MANAGER));
    let on_err = counter(metrics, "poddisruptionbudgets");
    tokio::spawn(
        reflector::reflector(writer, watcher(api, cfg))
            .default_backoff()
            .touched_objects()
            .for_each(move |r| {
                match r {
                    Ok(pdb) => {
                        let ns = pdb.namespace().unwrap_or_default();
                        for o in pdb.owner_references().iter().filter(|o| o.kind == "Pod") {
                            waker.wake(ObjectRef::new(&o.name).within(&ns));
                        }
                    }
                    Err(e) => on_err(&e),
                }
                futures::future::ready(())
            }),
    );
}

/// Nodes, kept as name, UID and `spec.unschedulable` only (a Node's status
/// is most of its size and changes all the time). A change of the cordon,
/// and a node's first sighting cordoned, wakes `wakes` with its name.
fn spawn_nodes(client: &Client, writer: Writer<Node>, wakes: Wakes<String>, metrics: Metrics) {
    let api: Api<Node> = Api::all(client.clone());
    let on_err = counter(metrics, "nodes");
    let mut cordoned: std::collections::HashMap<String, bool> = Default::default();
    tokio::spawn(
        reflector::reflector(
            writer,
            watcher(api, watcher::Config::default().page_size(OBJECT_PAGE)).modify(trim_node),
        )
        .default_backoff()
        .for_each(move |ev| {
            match ev {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    let now = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
                    let name = n.name_any();
                    if cordoned.insert(name.clone(), now).unwrap_or(false) != now {
                        wakes.send(name);
                    }
                }
                Ok(watcher::Event::Delete(n)) => {
                    cordoned.remove(&n.name_any());
                    wakes.send(n.name_any());
                }
                Err(e) => on_err(&e),
                _ => {}
            }
            futures::future::ready(())
        }),
    );
}

/// What the cache keeps of a Node.
pub fn trim_node(n: &mut Node) {
    let unschedulable = n.spec.as_ref().and_then(|s| s.unschedulable);
    *n = Node {
        metadata: ObjectMeta {
            name: n.metadata.name.take(),
            uid: n.metadata.uid.take(),
            resource_version: n.metadata.resource_version.take(),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            unschedulable,
            ..Default::default()
        }),
        status: None,
    };
}

/// Metadata-only watches of the objects opt-in is read from.
fn spawn_meta<K>(
    client: &Client,
    writer: Writer<PartialObjectMeta<K>>,
    waker: PodWaker,
    metrics: Metrics,
    kind: &'static str,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = Api::all(client.clone());
    let on_err = counter(metrics, kind);
    tokio::spawn(
        reflector::reflector(
            writer,
            // managedFields is most of an object's metadata, and nothing reads it.
            watcher(api, watcher::Config::default().page_size(META_PAGE))
                .modify(|m: &mut PartialObjectMeta<K>| m.metadata.managed_fields = None),
        )
        .default_backoff()
        .touched_objects()
        .for_each(move |r| {
            match r {
                Ok(obj) => {
                    let ns = if kind == "namespaces" {
                        obj.metadata.name.clone()
                    } else {
                        obj.metadata.namespace.clone()
                    };
                    waker.wake_namespace(ns.as_deref());
                }
                Err(e) => on_err(&e),
            }
            futures::future::ready(())
        }),
    );
}
