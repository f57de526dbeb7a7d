//! Which pod of an OnDelete StatefulSet to replace next.
//!
//! The StatefulSet controller never replaces OnDelete pods itself; we do, one
//! at a time, highest ordinal first (as RollingUpdate would), waiting for each
//! replacement to be Ready, and stepping past logged-in pods instead of
//! queueing behind them. Outdated pods that are not Ready go first: they serve
//! nothing, and waiting for them would stall the rollout that may fix them.

/// One pod of the set, as the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub ordinal: u32,
    /// The pod's `controller-revision-hash` label.
    pub revision: String,
    pub ready: bool,
    pub terminating: bool,
    /// Someone is logged in (or protection is still held): never replaced.
    pub logged_in: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No update pending.
    Idle,
    /// Evict this pod; the StatefulSet controller recreates it at the new revision.
    Replace(String),
    /// A replacement is in flight (or a pod is missing or unready): wait.
    Wait(String),
    /// Only logged-in pods are outdated; they are replaced after logout.
    Held(Vec<String>),
    /// Every pod runs the update revision, but status.currentRevision still
    /// names the old one (the StatefulSet controller leaves it for OnDelete).
    MarkCurrent,
}

/// Does sessionguard drive a set's updates? Only OnDelete sets (RollingUpdate
/// sets are the StatefulSet controller's) that opted in.
pub fn manages(update_strategy: Option<&str>, opt: &crate::protection::OptIn) -> bool {
    update_strategy == Some("OnDelete") && opt.protect
}

/// Decides the next step. `replicas` is spec.replicas; members with an ordinal
/// at or above it are being scaled away and are ignored.
pub fn next_step(
    members: &[Member],
    replicas: u32,
    current_revision: &str,
    update_revision: &str,
) -> Step {
    let members: Vec<&Member> = members.iter().filter(|m| m.ordinal < replicas).collect();
    let mut outdated: Vec<&&Member> = members
        .iter()
        .filter(|m| m.revision != update_revision)
        .collect();
    if outdated.is_empty() && members.len() as u32 == replicas {
        return if current_revision == update_revision {
            Step::Idle
        } else {
            Step::MarkCurrent
        };
    }
    if current_revision == update_revision && outdated.is_empty() {
        return Step::Idle;
    }
    if let Some(m) = members.iter().find(|m| m.terminating) {
        return Step::Wait(format!("{} is terminating", m.name));
    }
    if (members.len() as u32) < replicas {
        return Step::Wait(format!(
            "{} of {replicas} pods exist; waiting for the replacement",
            members.len()
        ));
    }
    // A replacement that is not Ready yet gates the next step: one pod at a
    // time. A logged-in pod never gates (it is never replaced anyway), and an
    // unready *outdated* pod does not either: it is broken at the old revision
    // (a crash loop the update may fix), so it is replaced first instead of
    // stalling the rollout forever, as it would under RollingUpdate.
    if let Some(m) = members
        .iter()
        .find(|m| !m.ready && !m.logged_in && m.revision == update_revision)
    {
        return Step::Wait(format!("{} is not Ready yet", m.name));
    }
    outdated.sort_by_key(|m| (m.ready, std::cmp::Reverse(m.ordinal)));
    match outdated.iter().find(|m| !m.logged_in) {
        Some(m) => Step::Replace(m.name.clone()),
        None => Step::Held(outdated.iter().map(|m| m.name.clone()).collect()),
    }
}

/// The ordinal from a StatefulSet pod's name (`<set>-<n>`).
pub fn ordinal(set: &str, pod: &str) -> Option<u32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(n: u32) -> Member {
        Member {
            name: format!("web-{n}"),
            ordinal: n,
            revision: "old".into(),
            ready: true,
            terminating: false,
            logged_in: false,
        }
    }

    impl Member {
        fn updated(mut self) -> Self {
            self.revision = "new".into();
            self
        }
        fn logged_in(mut self) -> Self {
            self.logged_in = true;
            self
        }
        fn unready(mut self) -> Self {
            self.ready = false;
            self
        }
        fn terminating(mut self) -> Self {
            self.terminating = true;
            self
        }
    }

    #[test]
    fn replaces_highest_ordinal_first() {
        let set = [pod(0), pod(1), pod(2)];
        assert_eq!(
            next_step(&set, 3, "old", "new"),
            Step::Replace("web-2".into())
        );
    }

    #[test]
    fn steps_past_logged_in_pods() {
        let set = [pod(0), pod(1).logged_in(), pod(2).updated()];
        assert_eq!(
            next_step(&set, 3, "old", "new"),
            Step::Replace("web-0".into())
        );
        let set = [pod(0).updated(), pod(1).logged_in().unready()];
        assert_eq!(
            next_step(&set, 2, "old", "new"),
            Step::Held(vec!["web-1".into()]),
            "an unready logged-in pod neither blocks nor gets replaced"
        );
    }

    #[test]
    fn waits_for_the_replacement() {
        let set = [pod(0), pod(1).updated().unready()];
        assert!(matches!(next_step(&set, 2, "old", "new"), Step::Wait(m) if m.contains("web-1")));
        let set = [pod(0), pod(1).terminating()];
        assert!(
            matches!(next_step(&set, 2, "old", "new"), Step::Wait(m) if m.contains("terminating"))
        );
        let set = [pod(0)];
        assert!(matches!(next_step(&set, 2, "old", "new"), Step::Wait(m) if m.contains("1 of 2")));
    }

    #[test]
    fn a_broken_outdated_pod_is_replaced_first_not_waited_for() {
        let set = [pod(0), pod(1).unready(), pod(2)];
        assert_eq!(
            next_step(&set, 3, "old", "new"),
            Step::Replace("web-1".into()),
            "unready at the old revision: replaced before the healthy web-2"
        );
        let set = [pod(0).unready(), pod(1).updated().unready(), pod(2)];
        assert!(
            matches!(next_step(&set, 3, "old", "new"), Step::Wait(m) if m.contains("web-1")),
            "an unready replacement still gates the next step"
        );
        let set = [pod(0).logged_in().unready(), pod(1)];
        assert_eq!(
            next_step(&set, 2, "old", "new"),
            Step::Replace("web-1".into()),
            "never a logged-in pod, ready or not"
        );
    }

    #[test]
    fn marks_current_when_all_updated() {
        let set = [pod(0).updated(), pod(1).updated()];
        assert_eq!(next_step(&set, 2, "old", "new"), Step::MarkCurrent);
        assert_eq!(next_step(&set, 2, "new", "new"), Step::Idle);
        let set = [pod(0).updated(), pod(1).updated(), pod(5)];
        assert_eq!(
            next_step(&set, 2, "old", "new"),
            Step::MarkCurrent,
            "scaled-away ordinals ignored"
        );
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "webx-1"), None);
        assert_eq!(ordinal("web", "web-a"), None);
    }
}
