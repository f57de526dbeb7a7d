//! Names for what the scanner finds, only when the operator asks for them.
//! By default the agent reads no pods at all, so a stolen agent token reads
//! no pod spec: it reports pod UID and container ID, and the controller
//! (which caches every pod anyway) names the pods and checks that each is on
//! the reporting node. `run --pod-names` watches only the agent's own node's
//! pods (field selector `spec.nodeName`); `scan --kubeconfig` lists them once
//! with credentials the operator gives explicitly.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use sessionguard_core::{Session, SessionKey, keys};

use crate::Error;

/// The node's pods, kept current by a watch (`run --pod-names` only).
#[derive(Clone)]
pub struct NodePods {
    store: Store<Pod>,
}

impl NodePods {
    /// Starts the watch; the returned future drives it and must be spawned.
    pub fn watch(
        client: Client,
        node: &str,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (store, writer) = reflector::store();
        let api: Api<Pod> = Api::all(client);
        let cfg = watcher::Config::default().fields(&on_node(node));
        let stream = reflector::reflector(writer, watcher(api, cfg))
            .default_backoff()
            .touched_objects();
        let driver = async move {
            use futures::StreamExt;
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                if let Err(e) = ev {
                    tracing::warn!(error = %e, "pod watch error; retrying");
                }
            }
        };
        (Self { store }, driver)
    }

    /// One list of a single pod: whether this identity may read the node's
    /// pods at all. Without it the watch would retry forever and nothing
    /// would ever be reported, so `--pod-names` without the rights is an
    /// error at start, not a silent node.
    pub async fn check_access(client: Client, node: &str) -> Result<(), Error> {
        let lp = ListParams::default().fields(&on_node(node)).limit(1);
        Api::<Pod>::all(client)
            .list(&lp)
            .await
            .map(drop)
            .map_err(|e| {
                Error::Kube(format!(
                    "--pod-names needs list and watch of pods (chart: agent.podNames): {e}"
                ))
            })
    }

    pub async fn ready(&self) -> Result<(), Error> {
        self.store
            .wait_until_ready()
            .await
            .map_err(|e| Error::Kube(e.to_string()))
    }

    pub fn snapshot(&self) -> Vec<Arc<Pod>> {
        self.store.state()
    }
}

fn on_node(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// One list of the pods on `node` (every pod without one), with the
/// kubeconfig at `path` and nothing else: `scan --kubeconfig`.
pub async fn list_with(path: &Path, node: Option<&str>) -> Result<Vec<Arc<Pod>>, Error> {
    let kube_err = |e: &dyn std::fmt::Display| Error::Kube(format!("{}: {e}", path.display()));
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| kube_err(&e))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| kube_err(&e))?;
    let client = Client::try_from(config).map_err(|e| kube_err(&e))?;
    let lp = match node {
        Some(n) => ListParams::default().fields(&on_node(n)),
        None => ListParams::default(),
    };
    let pods = Api::<Pod>::all(client)
        .list(&lp)
        .await
        .map_err(|e| kube_err(&e))?;
    Ok(pods.items.into_iter().map(Arc::new).collect())
}

/// Pods by the UID an agent sees in their cgroup: the API UID, and for a
/// mirror pod also its static pod's config hash.
fn by_reported_uid(pods: &[Arc<Pod>]) -> HashMap<String, &Pod> {
    let mut by_uid: HashMap<String, &Pod> = HashMap::with_capacity(pods.len());
    for p in pods {
        if let Some(uid) = p.metadata.uid.as_deref() {
            by_uid.insert(uid.to_ascii_lowercase(), p);
        }
        if let Some(hash) = p.annotations().get(keys::CONFIG_MIRROR) {
            by_uid.insert(hash.to_ascii_lowercase(), p);
        }
    }
    by_uid
}

fn fill(pod: &Pod, s: &mut Session) {
    s.namespace = pod.metadata.namespace.clone();
    s.pod_name = pod.metadata.name.clone();
    s.container_name = sessionguard_api::container_name(pod, &s.container_id);
}

/// Fills in namespace, pod and container names, and drops sessions whose pod
/// is not on this node (on a shared host or right after a pod left, the
/// cgroup can outlive what the API server says is here); returns the dropped
/// ones. Static pods are found by their mirror pod's config hash.
pub fn resolve(pods: &[Arc<Pod>], sessions: &mut Vec<Session>) -> Vec<Session> {
    if sessions.is_empty() {
        return Vec::new();
    }
    let by_uid = by_reported_uid(pods);
    sessions
        .extract_if(.., |s| match by_uid.get(s.pod_uid.as_str()) {
            Some(pod) => {
                fill(pod, s);
                false
            }
            None => true,
        })
        .collect()
}

/// Names the sessions whose pod is in `pods` and keeps every session: what
/// an operator's `scan` shows (a pod it cannot name keeps its UID).
pub fn name(pods: &[Arc<Pod>], sessions: &mut [Session]) {
    let by_uid = by_reported_uid(pods);
    for s in sessions {
        if let Some(pod) = by_uid.get(s.pod_uid.as_str()) {
            fill(pod, s);
        }
    }
}

/// Counts foreign sessions once each. The scan loop drops the same foreign
/// session on every tick, and a counter bumped per tick would measure the
/// interval, not how many sessions were dropped.
#[derive(Debug, Default)]
pub struct ForeignSessions {
    /// Identity is core's [`SessionKey`]: the start time tells a reused pid
    /// apart, so a new login on a reused pts number is a new session.
    last_tick: HashSet<SessionKey>,
}

// === impl ForeignSessions ===

impl ForeignSessions {
    /// How many of this tick's foreign sessions were not foreign on the last
    /// tick. Only the last tick is remembered, so memory follows what is
    /// foreign now; a session that leaves and comes back counts again.
    pub fn newly_dropped(&mut self, dropped: &[Session]) -> usize {
        let now: HashSet<SessionKey> = dropped.iter().map(Session::key).collect();
        let new = now.difference(&self.last_tick).count();
        self.last_tick = now;
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
    use sessionguard_core::{ContainerId, PodUid};

    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    fn pod(name: &str, uid: &str, containers: &[(&str, char)]) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ops".into());
        p.metadata.uid = Some(uid.into());
        p.status = Some(PodStatus {
            container_statuses: Some(
                containers
                    .iter()
                    .map(|(n, c)| ContainerStatus {
                        name: n.to_string(),
                        container_id: Some(format!("containerd://{}", c.to_string().repeat(64))),
                        ..ContainerStatus::default()
                    })
                    .collect(),
            ),
            ..PodStatus::default()
        });
        Arc::new(p)
    }

    fn session(uid: &str, c: char) -> Session {
        Session {
            pod_uid: PodUid::parse(uid).unwrap(),
            container_id: ContainerId::parse(&c.to_string().repeat(64)).unwrap(),
            ..crate::testing::session()
        }
    }

    #[test]
    fn names_sessions_and_drops_foreign_pods() {
        let pods = [pod("bastion-0", UID, &[("main", 'a'), ("sidecar", 'b')])];
        let mut s = vec![
            session(UID, 'b'),
            session("11111111-2222-3333-4444-555555555555", 'a'),
        ];
        assert_eq!(resolve(&pods, &mut s).len(), 1);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].pod_name.as_deref(), Some("bastion-0"));
        assert_eq!(s[0].namespace.as_deref(), Some("ops"));
        assert_eq!(s[0].container_name.as_deref(), Some("sidecar"));
    }

    #[test]
    fn static_pods_by_mirror_hash() {
        let hash = "5b2d8bd2d9a4f2e8e7c5a3a0f9b7e6d1";
        let mut mirror = (*pod(
            "etcd-node-a",
            "99999999-2222-3333-4444-555555555555",
            &[("etcd", 'c')],
        ))
        .clone();
        mirror.metadata.annotations =
            Some([(keys::CONFIG_MIRROR.to_string(), hash.to_string())].into());
        let mut s = vec![session(hash, 'c')];
        resolve(&[Arc::new(mirror)], &mut s);
        assert_eq!(s[0].pod_name.as_deref(), Some("etcd-node-a"));
    }

    #[test]
    fn naming_keeps_the_sessions_it_cannot_name() {
        let pods = [pod("bastion-0", UID, &[("main", 'a')])];
        let mut s = vec![
            session(UID, 'a'),
            session("11111111-2222-3333-4444-555555555555", 'a'),
        ];
        name(&pods, &mut s);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].pod_name.as_deref(), Some("bastion-0"));
        assert_eq!(s[0].container_name.as_deref(), Some("main"));
        assert_eq!(
            (s[1].pod_name.as_deref(), s[1].namespace.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn each_foreign_session_counts_once() {
        let mut f = ForeignSessions::default();
        let a = session("11111111-2222-3333-4444-555555555555", 'a');
        let mut b = a.clone();
        b.tty = "pts/1".into();
        b.pid = 3;
        assert_eq!(f.newly_dropped(std::slice::from_ref(&a)), 1);
        // The same session on the next ticks: not again.
        assert_eq!(f.newly_dropped(std::slice::from_ref(&a)), 0);
        assert_eq!(f.newly_dropped(&[a.clone(), b.clone()]), 1);
        assert_eq!(f.newly_dropped(&[a.clone(), b.clone()]), 0);
        // A new login on the same terminal (new leader) is a new session.
        let mut a2 = a.clone();
        a2.pid = 2;
        assert_eq!(f.newly_dropped(&[a2, b]), 1);
        assert_eq!(f.newly_dropped(&[]), 0);
        assert_eq!(f.newly_dropped(&[a]), 1);
    }
}
