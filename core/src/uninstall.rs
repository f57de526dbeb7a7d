//! What uninstalling sessionguard undoes on a pod (the controller's `cleanup`
//! command, run by the chart's pre-delete hook).
//!
//! Everything sessionguard wrote goes: the pod-UID label our PDB selects by,
//! the interaction record (label and annotations, the extension with it: it
//! means nothing without the record), the protection annotations; and the
//! autoscaler annotations are put back to what they were before protection
//! (the save [`crate::protection::protect_annotations`] keeps). What the
//! user wrote to opt in or out (`protect`, `no-pdb`) stays: it is their
//! intent, not our state, and a reinstall should find it.

use std::collections::BTreeMap;

use crate::keys;
use crate::protection::{Map, restore_annotations};

/// Keys under [`keys::PREFIX`] that users write and uninstalling keeps.
pub const USER_KEYS: [&str; 2] = [keys::PROTECT, keys::NO_PDB];

/// A merge patch's worth of changes: `None` removes the key.
pub type Changes = BTreeMap<String, Option<String>>;

/// The label and annotation changes that leave `pod` as if sessionguard had
/// never been installed. Empty maps: nothing to do (so a second run is a no-op).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PodUndo {
    pub labels: Changes,
    pub annotations: Changes,
}

impl PodUndo {
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

fn ours(key: &str) -> bool {
    key.starts_with(keys::PREFIX) && !USER_KEYS.contains(&key)
}

/// The changes for a pod with these labels and annotations.
pub fn pod_undo(labels: &Map, annotations: &Map) -> PodUndo {
    let mut undo = PodUndo {
        labels: labels
            .keys()
            .filter(|k| ours(k))
            .map(|k| (k.clone(), None))
            .collect(),
        // The autoscaler values first, from the save; then every key of ours.
        annotations: restore_annotations(annotations),
    };
    for k in annotations.keys().filter(|k| ours(k)) {
        undo.annotations.insert(k.clone(), None);
    }
    undo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protection::protect_annotations;

    fn map(pairs: &[(&str, &str)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn apply(m: &mut Map, changes: &Changes) {
        for (k, v) in changes {
            match v {
                Some(v) => m.insert(k.clone(), v.clone()),
                None => m.remove(k),
            };
        }
    }

    #[test]
    fn a_protected_pod_goes_back_to_what_it_was() {
        let labels_before = map(&[("app", "db"), (keys::PROTECT, "true")]);
        let annotations_before = map(&[(keys::CA_SAFE_TO_EVICT, "true"), ("team", "ops")]);
        let mut labels = labels_before.clone();
        labels.insert(keys::POD_UID_LABEL.into(), "u-1".into());
        labels.insert(keys::INTERACTED.into(), "true".into());
        let mut annotations = annotations_before.clone();
        apply(&mut annotations, &protect_annotations(&annotations_before));
        for k in [
            keys::PROTECTED_SINCE,
            keys::FIRST_INTERACTION,
            keys::LAST_INTERACTION,
            keys::INTERACTOR,
            keys::TTL,
            keys::EVICT_AT,
            keys::EXTENSION,
        ] {
            annotations.insert(k.into(), "x".into());
        }
        assert_eq!(annotations[keys::CA_SAFE_TO_EVICT], "false");

        let undo = pod_undo(&labels, &annotations);
        apply(&mut labels, &undo.labels);
        apply(&mut annotations, &undo.annotations);
        assert_eq!(labels, labels_before, "the user's opt-in label stays");
        assert_eq!(
            annotations, annotations_before,
            "safe-to-evict back to true"
        );
        assert!(pod_undo(&labels, &annotations).is_empty(), "idempotent");
    }

    #[test]
    fn an_absent_autoscaler_annotation_is_removed_again() {
        let mut annotations = Map::new();
        apply(&mut annotations, &protect_annotations(&Map::new()));
        let undo = pod_undo(&Map::new(), &annotations);
        assert_eq!(undo.annotations[keys::CA_SAFE_TO_EVICT], None);
        assert_eq!(undo.annotations[keys::KARPENTER_DO_NOT_DISRUPT], None);
        assert_eq!(undo.annotations[keys::SAVED_ANNOTATIONS], None);
        apply(&mut annotations, &undo.annotations);
        assert!(annotations.is_empty(), "{annotations:?}");
    }

    #[test]
    fn a_pod_we_never_touched_is_left_alone() {
        // Autoscaler annotations the user set themselves, no save: not ours.
        let annotations = map(&[
            (keys::CA_SAFE_TO_EVICT, "false"),
            (keys::KARPENTER_DO_NOT_DISRUPT, "true"),
            (keys::NO_PDB, "true"),
        ]);
        let labels = map(&[(keys::PROTECT, "true"), ("sessionguard.iox/other", "1")]);
        assert!(pod_undo(&labels, &annotations).is_empty());
    }

    #[test]
    fn an_unreadable_save_still_removes_our_values_and_keys() {
        let annotations = map(&[
            (keys::SAVED_ANNOTATIONS, "{not json"),
            (keys::KARPENTER_DO_NOT_DISRUPT, "true"),
            (keys::CA_SAFE_TO_EVICT, "maybe"),
        ]);
        let undo = pod_undo(&Map::new(), &annotations);
        assert_eq!(
            undo.annotations.get(keys::KARPENTER_DO_NOT_DISRUPT),
            Some(&None)
        );
        assert!(
            !undo.annotations.contains_key(keys::CA_SAFE_TO_EVICT),
            "a value we never write is the user's"
        );
        assert_eq!(undo.annotations[keys::SAVED_ANNOTATIONS], None);
    }
}
