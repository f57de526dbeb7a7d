//! Pods by UID, by controlling owner and by node, kept beside the pod store by
//! the pod watch, so a rollout (the pods of one StatefulSet) and a cordon (the
//! protected pods of one node) look at their pods instead of scanning every pod
//! in the cluster.
//!
//! Entries are keyed by pod UID: a StatefulSet's pod recreated under the same
//! name is another entry, and the old one's deletion cannot remove the new one.
//! A pod deleted while the watch was down (a relist) leaves a stale entry; the
//! readers resolve every entry through the store and keep it only if the store
//! still holds that UID, so a stale entry costs memory, never a wrong answer.
//!
//! Its cost is per pod (30,000 at full size), so each pod's UID is one shared
//! `Arc<str>`, its `ObjectRef` is held once (without the resourceVersion and
//! UID an `ObjectRef::from_obj` carries: the store's lookups ignore them), and
//! the owner and node sets hold UIDs, not references.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use sessionguard_api::CachedPod;

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    pod: ObjectRef<CachedPod>,
    owner: Option<Arc<str>>,
    node: Option<Arc<str>>,
    /// A mirror pod's config hash: the UID its static pod's cgroup (and so
    /// its agent's report) carries.
    hash: Option<String>,
}

type Uid = Arc<str>;

#[derive(Debug, Default)]
pub struct PodIndex {
    by_uid: HashMap<Uid, Entry>,
    /// Mirror pods' config hash → pod UID.
    by_hash: HashMap<String, Uid>,
    /// Controller UID → UIDs of its pods.
    by_owner: HashMap<Arc<str>, HashSet<Uid>>,
    /// Node name → UIDs of its pods.
    by_node: HashMap<Arc<str>, HashSet<Uid>>,
}

fn controller_uid(pod: &CachedPod) -> Option<&str> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// `key` as the map already holds it (one allocation per node or owner, not
/// per pod), or a new one.
fn shared(map: &HashMap<Arc<str>, HashSet<Uid>>, key: &str) -> Arc<str> {
    map.get_key_value(key)
        .map_or_else(|| Arc::from(key), |(k, _)| k.clone())
}

fn link(map: &mut HashMap<Arc<str>, HashSet<Uid>>, key: &Arc<str>, uid: &Uid) {
    map.entry(key.clone()).or_default().insert(uid.clone());
}

fn unlink(map: &mut HashMap<Arc<str>, HashSet<Uid>>, key: &str, uid: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(uid);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl PodIndex {
    /// A pod was seen (added, changed, or listed): its node is set once it is
    /// scheduled, so an entry moves then.
    pub fn apply(&mut self, pod: &CachedPod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let mut pod_ref = ObjectRef::new(&pod.name_any());
        if let Some(ns) = pod.metadata.namespace.as_deref() {
            pod_ref = pod_ref.within(ns);
        }
        let owner = controller_uid(pod);
        let node = pod.node_name.as_deref();
        let hash = sessionguard_api::config_hash(pod);
        if let Some(e) = self.by_uid.get(uid)
            && e.pod == pod_ref
            && e.owner.as_deref() == owner
            && e.node.as_deref() == node
            && e.hash == hash
        {
            return;
        }
        self.remove(uid);
        let uid: Uid = Arc::from(uid);
        let entry = Entry {
            pod: pod_ref,
            owner: owner.map(|o| shared(&self.by_owner, o)),
            node: node.map(|n| shared(&self.by_node, n)),
            hash,
        };
        if let Some(o) = &entry.owner {
            link(&mut self.by_owner, o, &uid);
        }
        if let Some(n) = &entry.node {
            link(&mut self.by_node, n, &uid);
        }
        if let Some(h) = &entry.hash {
            self.by_hash.insert(h.clone(), uid.clone());
        }
        self.by_uid.insert(uid, entry);
    }

    /// The pod with this UID was deleted.
    pub fn remove(&mut self, uid: &str) {
        let Some(old) = self.by_uid.remove(uid) else {
            return;
        };
        if let Some(o) = &old.owner {
            unlink(&mut self.by_owner, o, uid);
        }
        if let Some(n) = &old.node {
            unlink(&mut self.by_node, n, uid);
        }
        // A recreated mirror pod may hold the hash already: only ours goes.
        if let Some(h) = &old.hash
            && self.by_hash.get(h).is_some_and(|u| &**u == uid)
        {
            self.by_hash.remove(h);
        }
    }

    /// The pod an agent reports under `uid`: its API UID, or a mirror pod's
    /// config hash.
    pub fn by_uid(&self, uid: &str) -> Option<ObjectRef<CachedPod>> {
        let uid = self.by_hash.get(uid).map_or(uid, |u| &**u);
        self.by_uid.get(uid).map(|e| e.pod.clone())
    }

    /// (pod UID, pod) of the pods whose controller has this UID.
    pub fn owned_by(&self, owner_uid: &str) -> Vec<(String, ObjectRef<CachedPod>)> {
        self.collect(self.by_owner.get(owner_uid))
    }

    /// (pod UID, pod) of the pods on this node.
    pub fn on_node(&self, node: &str) -> Vec<(String, ObjectRef<CachedPod>)> {
        self.collect(self.by_node.get(node))
    }

    fn collect(&self, set: Option<&HashSet<Uid>>) -> Vec<(String, ObjectRef<CachedPod>)> {
        set.into_iter()
            .flatten()
            .filter_map(|u| {
                let e = self.by_uid.get(u)?;
                Some((u.to_string(), e.pod.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{pod, statefulset};

    fn names(v: Vec<(String, ObjectRef<CachedPod>)>) -> Vec<String> {
        let mut n: Vec<String> = v.into_iter().map(|(_, r)| r.name).collect();
        n.sort();
        n
    }

    #[test]
    fn pods_are_found_by_owner_and_node_and_forgotten_when_deleted() {
        let sts = statefulset("web").build();
        let sts_uid = sts.uid().unwrap();
        let a = pod("web-0").of(&sts, "r1").on_node("n1").build();
        let b = pod("web-1").of(&sts, "r1").on_node("n2").build();
        let loose = pod("debug").on_node("n1").build();
        let mut ix = PodIndex::default();
        for p in [&a, &b, &loose] {
            ix.apply(p);
        }
        assert_eq!(names(ix.owned_by(&sts_uid)), ["web-0", "web-1"]);
        assert_eq!(names(ix.on_node("n1")), ["debug", "web-0"]);
        assert_eq!(ix.by_uid(&a.uid().unwrap()).unwrap().name, "web-0");

        // Rescheduled elsewhere (a new pod object would be a new UID, but the
        // index must follow a node change all the same).
        let moved = pod("web-1").of(&sts, "r1").on_node("n1").build();
        ix.apply(&moved);
        assert_eq!(names(ix.on_node("n1")), ["debug", "web-0", "web-1"]);
        assert!(ix.on_node("n2").is_empty());

        ix.remove(&a.uid().unwrap());
        assert_eq!(names(ix.owned_by(&sts_uid)), ["web-1"]);
        assert_eq!(names(ix.on_node("n1")), ["debug", "web-1"]);
        assert!(ix.by_uid(&a.uid().unwrap()).is_none());
    }

    #[test]
    fn a_recreated_pod_of_the_same_name_survives_the_old_ones_deletion() {
        let sts = statefulset("web").build();
        let old = pod("web-0").of(&sts, "r1").build();
        let mut new = pod("web-0").of(&sts, "r2").build();
        new.metadata.uid = Some("99999999-0000-4000-8000-000000000000".into());
        let mut ix = PodIndex::default();
        ix.apply(&old);
        ix.apply(&new);
        ix.remove(&old.uid().unwrap());
        let left = ix.owned_by(&sts.uid().unwrap());
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, new.uid().unwrap());
    }
}
