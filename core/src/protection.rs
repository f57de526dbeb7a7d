//! Whether a pod is protected, and the autoscaler annotations that go with it.
//!
//! Opt-in is read from the pod, its owners (StatefulSet, ReplicaSet,
//! Deployment) and its namespace; the controller gathers those label and
//! annotation maps and asks these functions, so the rules are testable on
//! literal maps.

use std::collections::BTreeMap;

use crate::keys;

pub type Map = BTreeMap<String, String>;

/// What the pod and the objects above it say about protection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptIn {
    /// Some object in the chain carries `protect: "true"` (ours or the alias).
    pub protect: bool,
    /// Some object in the chain carries `no-pdb: "true"`: the pod may be
    /// disrupted even while logged in (login-protector's escape hatch).
    pub no_pdb: bool,
}

impl OptIn {
    /// `labels` and `annotations` of the pod, each owner, and the namespace, in
    /// any order: one "true" anywhere opts the pod in (or out, for no-pdb).
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = (&'a Map, &'a Map)>) -> Self {
        let mut out = Self::default();
        for (labels, annotations) in objects {
            out.protect |= is_set(labels, keys::PROTECT, keys::LP_PROTECT);
            // The seed puts no-pdb in annotations; accept a label too, since
            // users reach for labels first and the intent is unambiguous.
            out.no_pdb |= is_set(annotations, keys::NO_PDB, keys::LP_NO_PDB)
                || is_set(labels, keys::NO_PDB, keys::LP_NO_PDB);
        }
        out
    }

    /// A PDB (and the autoscaler annotations) is wanted while logged in.
    pub fn wants_protection(&self) -> bool {
        self.protect && !self.no_pdb
    }
}

fn is_set(map: &Map, ours: &str, alias: &str) -> bool {
    keys::is_true(map.get(ours).map(String::as_str))
        || keys::is_true(map.get(alias).map(String::as_str))
}

/// The annotations that keep autoscalers from removing a logged-in pod's node.
pub const AUTOSCALER: [(&str, &str); 2] = [
    (keys::CA_SAFE_TO_EVICT, "false"),
    (keys::KARPENTER_DO_NOT_DISRUPT, "true"),
];

/// The annotation changes to make when protection starts: the autoscaler
/// values, plus the previous values saved as JSON (null = was absent) so they
/// can be restored exactly. Idempotent: if a save already exists it is kept,
/// so a second call never saves our own "false" as the user's value.
pub fn protect_annotations(current: &Map) -> BTreeMap<String, Option<String>> {
    let mut patch = BTreeMap::new();
    if !current.contains_key(keys::SAVED_ANNOTATIONS) {
        let saved: BTreeMap<&str, Option<&String>> = AUTOSCALER
            .iter()
            .map(|(k, _)| (*k, current.get(*k)))
            .collect();
        patch.insert(
            keys::SAVED_ANNOTATIONS.to_string(),
            Some(serde_json::to_string(&saved).expect("string map serialises")),
        );
    }
    for (k, v) in AUTOSCALER {
        if current.get(k).map(String::as_str) != Some(v) {
            patch.insert(k.to_string(), Some(v.to_string()));
        }
    }
    patch
}

/// The annotation changes that undo [`protect_annotations`]: previous values
/// back (or removed if they were absent), and the save removed. Without a save
/// (we never protected this pod) nothing changes. An unreadable save removes
/// only what we would have set, as the least surprising recovery.
pub fn restore_annotations(current: &Map) -> BTreeMap<String, Option<String>> {
    let mut patch = BTreeMap::new();
    let Some(raw) = current.get(keys::SAVED_ANNOTATIONS) else {
        return patch;
    };
    let saved: BTreeMap<String, Option<String>> = serde_json::from_str(raw).unwrap_or_default();
    for (k, ours) in AUTOSCALER {
        match saved.get(k) {
            Some(prev) if current.get(k) != prev.as_ref() => {
                patch.insert(k.to_string(), prev.clone());
            }
            Some(_) => {}
            None if current.get(k).map(String::as_str) == Some(ours) => {
                patch.insert(k.to_string(), None);
            }
            None => {}
        }
    }
    patch.insert(keys::SAVED_ANNOTATIONS.to_string(), None);
    patch
}

/// The PDB's name: `sessionguard-<pod>`, shortened with a hash suffix when the
/// pod's name is too long for the 253-character object-name limit.
pub fn pdb_name(pod: &str) -> String {
    let name = format!("sessionguard-{pod}");
    if name.len() <= 253 {
        return name;
    }
    // FNV-1a: stable across releases (unlike std's hasher), no dependency.
    let hash = pod.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let mut cut = 253 - 17;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash:016x}", name[..cut].trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn opt_in_from_any_object_and_either_key() {
        let empty = Map::new();
        let sts = map(&[("login-protector.cybozu.io/protect", "true")]);
        let ns = map(&[("sessionguard.io/protect", "true")]);
        let no_pdb = map(&[("login-protector.cybozu.io/no-pdb", "true")]);

        let o = OptIn::from_objects([(&empty, &empty), (&sts, &empty)]);
        assert!(o.protect && o.wants_protection());
        let o = OptIn::from_objects([(&empty, &empty), (&ns, &empty)]);
        assert!(o.wants_protection());
        let o = OptIn::from_objects([(&empty, &no_pdb), (&sts, &empty)]);
        assert!(o.protect && o.no_pdb && !o.wants_protection());
        let off = map(&[("sessionguard.io/protect", "false")]);
        assert!(!OptIn::from_objects([(&off, &empty)]).protect);
    }

    #[test]
    fn saves_previous_values_and_restores_them() {
        let user = map(&[
            ("cluster-autoscaler.kubernetes.io/safe-to-evict", "true"),
            ("team", "ops"),
        ]);
        let patch = protect_annotations(&user);
        assert_eq!(
            patch["sessionguard.io/saved-annotations"].as_deref(),
            Some(
                r#"{"cluster-autoscaler.kubernetes.io/safe-to-evict":"true","karpenter.sh/do-not-disrupt":null}"#
            )
        );
        assert_eq!(
            patch["cluster-autoscaler.kubernetes.io/safe-to-evict"].as_deref(),
            Some("false")
        );

        let mut protected = user.clone();
        for (k, v) in &patch {
            protected.insert(k.clone(), v.clone().unwrap());
        }
        // A second protect pass must not overwrite the save with our own values.
        assert!(protect_annotations(&protected).is_empty());

        let undo = restore_annotations(&protected);
        assert_eq!(
            undo["cluster-autoscaler.kubernetes.io/safe-to-evict"].as_deref(),
            Some("true")
        );
        assert_eq!(undo["karpenter.sh/do-not-disrupt"], None);
        assert_eq!(undo["sessionguard.io/saved-annotations"], None);
        assert!(
            restore_annotations(&user).is_empty(),
            "nothing saved, nothing to undo"
        );
    }

    #[test]
    fn unreadable_save_removes_only_our_values() {
        let current = map(&[
            ("sessionguard.io/saved-annotations", "{not json"),
            ("karpenter.sh/do-not-disrupt", "true"),
            ("cluster-autoscaler.kubernetes.io/safe-to-evict", "maybe"),
        ]);
        let undo = restore_annotations(&current);
        assert_eq!(undo.get("karpenter.sh/do-not-disrupt"), Some(&None));
        assert!(!undo.contains_key("cluster-autoscaler.kubernetes.io/safe-to-evict"));
    }

    #[test]
    fn pdb_names_fit() {
        assert_eq!(pdb_name("target-sts-0"), "sessionguard-target-sts-0");
        let long = "a".repeat(253);
        let n = pdb_name(&long);
        assert_eq!(n.len(), 253);
        assert_ne!(n, pdb_name(&"a".repeat(252)));
    }
}
