//! Drains that wait on a login: what the controller remembers of refused
//! evictions (a bounded map that forgets on its own), how a refusal is told
//! in its event, and when a cordoned node is announced.
//!
//! The controller's gauge and the plugin's BLOCKING column read the same
//! window, so "blocking now" means the same thing on a dashboard and in a
//! terminal.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::Session;
use crate::interaction::login_user;

/// A refusal counts as a drain still waiting for this long after it. A
/// drain retries every 5 s and autoscalers every minute or so; a drain
/// that gave up stops counting within this window.
pub const BLOCKED_WINDOW: Duration = Duration::from_secs(180);
/// Pods remembered at once per replica; beyond it the pod refused longest
/// ago is forgotten first. Bounds the gauge's series whatever the cluster does.
pub const BLOCKED_MAX: usize = 1000;

/// The latest refused eviction of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The pod's UID: a pod recreated under the same name is another pod.
    pub uid: String,
    pub node: String,
    /// Who holds the pod (see [`holder`]).
    pub user: String,
    /// Who asked for the eviction (a drain's identity, an autoscaler).
    pub requested_by: String,
    /// First refusal of this pod's current wait, and the latest (both set
    /// by [`Refusals::record`]).
    pub first: Timestamp,
    pub last: Timestamp,
}

/// Refused evictions by `(namespace, pod)`, forgotten [`BLOCKED_WINDOW`]
/// after their latest refusal and bounded to [`BLOCKED_MAX`] pods.
#[derive(Debug, Default)]
pub struct Refusals {
    by_pod: HashMap<(String, String), Refusal>,
}

impl Refusals {
    /// Records a refusal at `now`. A pod refused again within the window
    /// keeps its first refusal (the wait goes on); otherwise a new wait starts.
    pub fn record(&mut self, namespace: &str, pod: &str, mut r: Refusal, now: Timestamp) {
        self.expire(now);
        let key = (namespace.to_string(), pod.to_string());
        r.first = match self.by_pod.get(&key) {
            Some(old) if old.uid == r.uid => old.first,
            _ => now,
        };
        if !self.by_pod.contains_key(&key) && self.by_pod.len() >= BLOCKED_MAX {
            let oldest = self
                .by_pod
                .iter()
                .min_by_key(|(_, v)| v.last)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.by_pod.remove(&k);
            }
        }
        r.last = now;
        self.by_pod.insert(key, r);
    }

    /// The refusals still inside the window at `now`, sorted by pod; the
    /// rest are forgotten.
    pub fn current(&mut self, now: Timestamp) -> Vec<(String, String, Refusal)> {
        self.expire(now);
        let mut out: Vec<_> = self
            .by_pod
            .iter()
            .map(|((ns, pod), r)| (ns.clone(), pod.clone(), r.clone()))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    pub fn len(&self) -> usize {
        self.by_pod.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pod.is_empty()
    }

    fn expire(&mut self, now: Timestamp) {
        self.by_pod.retain(|_, r| waiting(r.last, now));
    }
}

/// Whether a refusal at `last` still means a drain is waiting at `now`.
pub fn waiting(last: Timestamp, now: Timestamp) -> bool {
    last > now || now.duration_since(last).unsigned_abs() < BLOCKED_WINDOW
}

/// Who holds a pod, for routing an alert to the person: the API user of
/// the last interaction when the record names one (`kubectl exec` runs as
/// some uid inside the container, which says little), else the users of
/// the live logins (`uid:N`, comma-joined), else `unknown`.
pub fn holder(last_interactor: Option<&str>, logins: &[Session]) -> String {
    if let Some(u) = last_interactor.filter(|u| !u.is_empty() && !u.starts_with("uid:")) {
        return u.to_string();
    }
    let mut users: Vec<String> = logins
        .iter()
        .filter(|s| s.is_login())
        .map(|s| login_user(s.uid))
        .collect();
    users.sort();
    users.dedup();
    if users.is_empty() {
        "unknown".into()
    } else {
        users.join(",")
    }
}

const REQUESTED_BY: &str = "eviction requested by ";

/// The note of an `EvictionBlocked` event; [`requester`] reads it back.
pub fn blocked_note(requested_by: &str, node: &str, refusal: &str) -> String {
    let by = if requested_by.is_empty() {
        "an unknown user"
    } else {
        requested_by
    };
    format!("{REQUESTED_BY}{by} (node {node}) refused: {refusal}")
}

/// Who asked, from an `EvictionBlocked` note written by [`blocked_note`].
pub fn requester(note: &str) -> Option<&str> {
    let rest = note.strip_prefix(REQUESTED_BY)?;
    let (by, _) = rest.split_once(" (node ")?;
    Some(by)
}

/// What to do about a node after its cordon or its protected pods changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CordonStep {
    /// Cordoned while holding protected pods, not yet told: one event.
    Announce,
    /// No longer both: forget, so a later cordon is told again.
    Forget,
    Nothing,
}

/// One event per cordon of a node that holds protected pods: `announced`
/// says whether this one was already told.
pub fn cordon_step(announced: bool, cordoned: bool, protected_pods: usize) -> CordonStep {
    match (announced, cordoned && protected_pods > 0) {
        (false, true) => CordonStep::Announce,
        (true, false) => CordonStep::Forget,
        _ => CordonStep::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{session, ts};

    fn refusal(uid: &str) -> Refusal {
        Refusal {
            uid: uid.into(),
            node: "n1".into(),
            user: "uid:1000".into(),
            requested_by: "admin".into(),
            first: ts("2026-12-02T13:00:00Z"),
            last: ts("2026-12-02T13:00:00Z"),
        }
    }

    #[test]
    fn a_wait_keeps_its_start_and_expires_after_the_window() {
        let mut r = Refusals::default();
        r.record("ops", "db-0", refusal("u1"), ts("2026-12-02T13:00:00Z"));
        r.record("ops", "db-0", refusal("u1"), ts("2026-12-02T13:02:00Z"));
        let now = r.current(ts("2026-12-02T13:04:00Z"));
        assert_eq!(now.len(), 1);
        assert_eq!(
            now[0].2.first,
            ts("2026-12-02T13:00:00Z"),
            "the wait goes on"
        );
        assert_eq!(now[0].2.last, ts("2026-12-02T13:02:00Z"));
        assert!(
            r.current(ts("2026-12-02T13:05:00Z")).is_empty(),
            "3m after the last"
        );
        assert!(r.is_empty(), "forgotten, not only hidden");
        // A new pod under the same name starts its own wait.
        r.record("ops", "db-0", refusal("u1"), ts("2026-12-02T14:00:00Z"));
        r.record("ops", "db-0", refusal("u2"), ts("2026-12-02T14:01:00Z"));
        let now = r.current(ts("2026-12-02T14:01:00Z"));
        assert_eq!(now[0].2.first, ts("2026-12-02T14:01:00Z"));
    }

    #[test]
    fn the_map_is_bounded_by_forgetting_the_oldest() {
        let mut r = Refusals::default();
        let base = ts("2026-12-02T13:00:00Z");
        for i in 0..BLOCKED_MAX + 5 {
            let at = base + jiff::SignedDuration::from_millis(i as i64);
            r.record("ops", &format!("p{i}"), refusal("u"), at);
        }
        assert_eq!(r.len(), BLOCKED_MAX);
        let pods: Vec<String> = r.current(base).into_iter().map(|(_, p, _)| p).collect();
        assert!(!pods.contains(&"p0".to_string()) && !pods.contains(&"p4".to_string()));
        assert!(
            pods.contains(&"p5".to_string()) && pods.contains(&format!("p{}", BLOCKED_MAX + 4))
        );
    }

    #[test]
    fn the_holder_is_the_api_user_when_known() {
        let s = [
            session().uid(0).build(),
            session().tty("pts/1").uid(1000).build(),
        ];
        assert_eq!(holder(Some("alice@example.com"), &s), "alice@example.com");
        assert_eq!(holder(Some("uid:0"), &s), "uid:0,uid:1000");
        assert_eq!(holder(None, &[]), "unknown");
        let console = [session().console().build()];
        assert_eq!(holder(None, &console), "unknown", "a console is nobody");
    }

    #[test]
    fn the_requester_is_read_back_from_the_note() {
        let n = blocked_note(
            "system:serviceaccount:kube-system:drainer",
            "n1",
            "ops/db-0 has 1 login",
        );
        assert_eq!(
            requester(&n),
            Some("system:serviceaccount:kube-system:drainer")
        );
        assert_eq!(
            requester(&blocked_note("", "n1", "x")),
            Some("an unknown user")
        );
        assert_eq!(requester("something else"), None);
    }

    #[test]
    fn a_cordon_is_told_once() {
        use CordonStep::*;
        assert_eq!(cordon_step(false, true, 2), Announce);
        assert_eq!(cordon_step(true, true, 2), Nothing, "told already");
        assert_eq!(cordon_step(true, true, 0), Forget, "the last login ended");
        assert_eq!(cordon_step(true, false, 2), Forget, "uncordoned");
        assert_eq!(cordon_step(false, false, 2), Nothing);
        assert_eq!(cordon_step(false, true, 0), Nothing, "nothing protected");
    }

    #[test]
    fn waiting_is_the_window() {
        let t = ts("2026-12-02T13:00:00Z");
        assert!(waiting(t, ts("2026-12-02T13:02:59Z")));
        assert!(!waiting(t, ts("2026-12-02T13:03:00Z")));
        assert!(
            waiting(t, ts("2026-12-02T12:59:00Z")),
            "a refusal ahead of our clock"
        );
    }
}
