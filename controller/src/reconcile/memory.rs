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
}

impl Memory {
    pub fn with_pod<R>(&self, uid: &str, f: impl FnOnce(&mut PodMemory) -> R) -> R {
        let mut m = self.pods.lock().expect("memory lock");
        f(m.entry(uid.to_string()).or_default())
    }

    /// The pod is gone: nothing of it is needed again.
    pub fn forget_pod(&self, uid: &str) {
        self.pods.lock().expect("memory lock").remove(uid);
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
