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

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    pod: ObjectRef<Pod>,
    owner: Option<String>,
    node: Option<String>,
    /// A mirror pod's config hash: the UID its static pod's cgroup (and so
    /// its agent's report) carries.
    hash: Option<String>,
}

#[derive(Debug, Default)]
pub struct PodIndex {
    by_uid: HashMap<String, Entry>,
    /// Mirror pods' config hash → pod UID.
    by_hash: HashMap<String, String>,
    /// Controller UID → pod UID → pod.
    by_owner: HashMap<String, HashMap<String, ObjectRef<Pod>>>,
    /// Node name → pod UID → pod.
    by_node: HashMap<String, HashMap<String, ObjectRef<Pod>>>,
}

fn controller_uid(pod: &Pod) -> Option<String> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn unlink(map: &mut HashMap<String, HashMap<String, ObjectRef<Pod>>>, key: &str, uid: &str) {
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
    pub fn apply(&mut self, pod: &Pod) {
        let Some(uid) = pod.uid() else {
            return;
        };
        let entry = Entry {
            pod: ObjectRef::from_obj(pod),
            owner: controller_uid(pod),
            node: node_of(pod),
            hash: sessionguard_api::config_hash(pod),
        };
        if self.by_uid.get(&uid) == Some(&entry) {
            return;
        }
        self.remove(&uid);
        if let Some(o) = &entry.owner {
            self.by_owner
                .entry(o.clone())
                .or_default()
                .insert(uid.clone(), entry.pod.clone());
        }
        if let Some(n) = &entry.node {
            self.by_node
                .entry(n.clone())
                .or_default()
                .insert(uid.clone(), entry.pod.clone());
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
            && self.by_hash.get(h).is_some_and(|u| u == uid)
        {
            self.by_hash.remove(h);
        }
    }

    /// The pod an agent reports under `uid`: its API UID, or a mirror pod's
    /// config hash.
    pub fn by_uid(&self, uid: &str) -> Option<ObjectRef<Pod>> {
        let uid = self.by_hash.get(uid).map_or(uid, String::as_str);
        self.by_uid.get(uid).map(|e| e.pod.clone())
    }

    /// (pod UID, pod) of the pods whose controller has this UID.
    pub fn owned_by(&self, owner_uid: &str) -> Vec<(String, ObjectRef<Pod>)> {
        collect(self.by_owner.get(owner_uid))
    }

    /// (pod UID, pod) of the pods on this node.
    pub fn on_node(&self, node: &str) -> Vec<(String, ObjectRef<Pod>)> {
        collect(self.by_node.get(node))
    }
}

fn collect(set: Option<&HashMap<String, ObjectRef<Pod>>>) -> Vec<(String, ObjectRef<Pod>)> {
    set.into_iter()
        .flatten()
        .map(|(u, r)| (u.clone(), r.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{pod, statefulset};

    fn names(v: Vec<(String, ObjectRef<Pod>)>) -> Vec<String> {
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
