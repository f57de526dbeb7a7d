//! What the reconciles remember between runs. Losing it (restart, failover)
//! only costs SessionEnded events, restarts the release grace and re-sends
//! one-time warnings: everything that decides protection or eviction is read
//! back from the cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use jiff::Timestamp;
use sessionguard_core::rollout_stall::Stall;
use sessionguard_core::{Session, SessionKey};

#[derive(Debug, Default)]
pub struct PodMemory {
    /// Last time a live login was seen: drives the release grace.
    pub last_login: Option<Timestamp>,
    /// Sessions seen last time, to emit SessionStarted/SessionEnded.
    pub known: BTreeMap<SessionKey, Session>,
    pub warned_name_taken: bool,
    pub eviction_attempts: u32,
    pub postponed_at: Option<Timestamp>,
    pub scheduled_event_sent: bool,
    /// The end of protection the ProtectionExpiring warning was sent for.
    pub expiry_warned: Option<Timestamp>,
}

/// Protection nearing its cap, as the last pod reconcile saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiring {
    pub end: Timestamp,
    /// The cap as `core::cap::Cap` displays it.
    pub cap: String,
    /// When a reconcile first saw this warning.
    pub since: Timestamp,
}

#[derive(Debug, Default)]
pub struct Memory {
    /// Per pod UID.
    pods: Mutex<HashMap<String, PodMemory>>,
    /// Per StatefulSet UID, the UID of the pod its rollout last evicted: until
    /// the pod cache shows that pod terminating or gone, a lagging cache must
    /// not make the next reconcile evict (and announce) it a second time.
    rollout_evicted: Mutex<HashMap<String, String>>,
    /// Per StatefulSet UID, what its rollout has been blocked on and since
    /// when. Lost on restart, the stall starts afresh: a stuck rollout is
    /// announced one threshold later, never missed.
    rollout_stalls: Mutex<HashMap<String, Stall>>,
    /// Per pod UID, protection past its warning fraction (for the terminal
    /// notices): apart from `pods`, so the notice task's look each second
    /// touches only these few.
    expiring: Mutex<HashMap<String, Expiring>>,
}

impl Memory {
    pub fn with_pod<R>(&self, uid: &str, f: impl FnOnce(&mut PodMemory) -> R) -> R {
        let mut m = self.pods.lock().expect("memory lock");
        f(m.entry(uid.to_string()).or_default())
    }

    /// Pods whose protection is nearing its cap, by UID.
    pub fn expiring(&self) -> Vec<(String, Expiring)> {
        let m = self.expiring.lock().expect("expiring lock");
        m.iter().map(|(uid, e)| (uid.clone(), e.clone())).collect()
    }

    /// What the pod reconcile saw of the cap (`None`: not near it); the
    /// first time of one warning is kept.
    pub fn set_expiring(&self, uid: &str, e: Option<(Timestamp, String)>, now: Timestamp) {
        let mut m = self.expiring.lock().expect("expiring lock");
        match e {
            None => {
                m.remove(uid);
            }
            Some((end, cap)) => {
                let since = match m.get(uid) {
                    Some(was) if was.end == end => was.since,
                    _ => now,
                };
                m.insert(uid.to_string(), Expiring { end, cap, since });
            }
        }
    }

    /// The pod is gone: nothing of it is needed again.
    pub fn forget_pod(&self, uid: &str) {
        self.pods.lock().expect("memory lock").remove(uid);
        self.expiring.lock().expect("expiring lock").remove(uid);
    }

    /// The pod a set's rollout evicted and the cache may not yet show going.
    pub fn rollout_in_flight(
        &self,
        sts_uid: &str,
        still_running: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let mut evicted = self.rollout_evicted.lock().expect("rollout lock");
        if evicted.get(sts_uid).is_some_and(|uid| !still_running(uid)) {
            evicted.remove(sts_uid);
        }
        evicted.get(sts_uid).cloned()
    }

    /// Replaces a set's stall with what `f` makes of it.
    pub fn rollout_stall<R>(
        &self,
        sts_uid: &str,
        f: impl FnOnce(Option<Stall>) -> (Option<Stall>, R),
    ) -> R {
        let mut stalls = self.rollout_stalls.lock().expect("stall lock");
        let (next, r) = f(stalls.remove(sts_uid));
        if let Some(s) = next {
            stalls.insert(sts_uid.to_string(), s);
        }
        r
    }

    /// A set's current stall, for the gauges.
    pub fn stall_of(&self, sts_uid: &str) -> Option<Stall> {
        self.rollout_stalls
            .lock()
            .expect("stall lock")
            .get(sts_uid)
            .cloned()
    }

    pub fn rollout_evicted(&self, sts_uid: &str, pod_uid: String) {
        self.rollout_evicted
            .lock()
            .expect("rollout lock")
            .insert(sts_uid.to_string(), pod_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_warning_keeps_its_first_time_until_its_end_moves_and_is_forgotten_with_the_pod() {
        let m = Memory::default();
        let end = ts("2026-12-02T14:00:00Z");
        let cap = || "--max-protection 1h".to_string();
        m.set_expiring("u1", Some((end, cap())), ts("2026-12-02T13:48:00Z"));
        m.set_expiring("u1", Some((end, cap())), ts("2026-12-02T13:50:00Z"));
        assert_eq!(m.expiring()[0].1.since, ts("2026-12-02T13:48:00Z"));
        let later = ts("2026-12-02T15:00:00Z");
        m.set_expiring("u1", Some((later, cap())), ts("2026-12-02T13:51:00Z"));
        assert_eq!(
            m.expiring()[0].1.since,
            ts("2026-12-02T13:51:00Z"),
            "a new protection"
        );
        m.set_expiring("u1", None, ts("2026-12-02T13:52:00Z"));
        assert!(m.expiring().is_empty(), "no longer near the cap");
        m.set_expiring("u2", Some((end, cap())), ts("2026-12-02T13:48:00Z"));
        m.forget_pod("u2");
        assert!(m.expiring().is_empty(), "gone with the pod");
    }
}
