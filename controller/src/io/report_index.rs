//! What each node's agent last said, and whether it still counts.
//!
//! Freshness is measured on the controller's clock, from when it last saw the
//! report change, so agent clock skew cannot keep a dead node's sessions alive.
//! The exception is the first sight (controller start): then the time the API
//! server last wrote the report is used (its clock, not the agent's, so a node
//! whose clock runs behind does not look silent after every controller
//! restart), falling back to the report's own `generated_at`; either way in the
//! past, so a restart does not revive a long-silent agent's sessions for
//! another full grace period.
//!
//! Silence counts only while the path from the agents to us works: the report
//! watch streams and the API server answers this replica's Lease calls. While
//! either is down nothing turns silent (the last snapshots keep counting), and
//! when both are up again every node's grace restarts from that moment. An API
//! server or etcd outage, or a controller (re)start during one, therefore
//! never releases a login the agents could not report: they get one full grace
//! after the path is back to be heard again. The cost is that a node that died
//! during an outage keeps its pods protected for one grace longer.
//!
//! Idle times arrive in steps (`sessionguard_core::idle`): the index keeps,
//! per session, when it first saw the current step, and hands out sessions
//! whose `idle_seconds` is the estimate at the time asked. A restarted
//! controller sees every step for the first time: idle is then counted from
//! the step alone, which errs towards protecting.
//!
//! A deleted report is treated like a silent agent: its last snapshot keeps
//! counting until the grace period runs out, then the pods are released with
//! the agent-silent event. Deleting the object is not a way to drop protection
//! at once (and an agent's restart may delete and recreate it).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use sessionguard_core::{PodUid, Report, Session, SessionKey, idle, node_clock};

#[derive(Clone, Debug)]
pub struct NodeReport {
    pub report: Report,
    pub heard_at: Timestamp,
    /// How far our clock is ahead of the node's, measured by this version of
    /// the report (`sessionguard_core::node_clock`): when it was written
    /// (heard live, or the API server's write time when listed) minus its
    /// `generated_at`.
    pub node_offset: SignedDuration,
    /// When the report object was deleted, if it was.
    pub deleted_at: Option<Timestamp>,
    by_pod: HashMap<PodUid, Vec<Session>>,
    /// Per session: its reported idle step and when we first saw that step.
    idle_seen: HashMap<SessionKey, (u32, Timestamp)>,
}

/// A pod's sessions as far as its node's agent is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// No report for the node (no agent, or it was deleted).
    NoReport,
    /// The agent reported recently; these are the pod's sessions.
    Fresh {
        sessions: Vec<Session>,
        /// Moves their `started_at` onto the controller's clock.
        node_offset: SignedDuration,
        /// When this stops being fresh unless the agent reports again.
        stale_at: Timestamp,
    },
    /// The agent has been silent for longer than the grace period.
    Silent { heard_at: Timestamp },
}

/// How a report reached us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A watch event: written just now.
    Live,
    /// In a (re)list, possibly written long ago: `written_at` is when the API
    /// server last wrote it, if known (managedFields time, whole seconds).
    Listed { written_at: Option<Timestamp> },
}

/// One half of the path from agents to this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathPart {
    /// Our watch of SessionReports: listed and streaming.
    ReportWatch,
    /// The API server answering this replica's own calls (the Lease).
    ApiServer,
}

/// Whether agents can be heard, and since when (see the module comment).
#[derive(Debug, Default)]
struct Path {
    watch_up: bool,
    api_up: bool,
    up_since: Option<Timestamp>,
}

#[derive(Debug, Default)]
pub struct ReportIndex {
    nodes: HashMap<String, NodeReport>,
    /// During a (re)list, the nodes whose report objects it named so far.
    relisting: Option<HashSet<String>>,
    path: Path,
}

impl ReportIndex {
    /// Replaces a node's snapshot. Returns the pods named in the old and new
    /// snapshot, which are the ones whose state may have changed.
    pub fn apply(&mut self, report: Report, seen: Seen, now: Timestamp) -> Vec<PodUid> {
        let mut by_pod: HashMap<PodUid, Vec<Session>> = HashMap::new();
        for s in &report.sessions {
            by_pod.entry(s.pod_uid.clone()).or_default().push(s.clone());
        }
        let previous = self.nodes.get(&report.node);
        let idle_seen = report
            .sessions
            .iter()
            .map(|s| {
                let key = s.key();
                let since = match previous.and_then(|p| p.idle_seen.get(&key)) {
                    Some(&(step, at)) if step == s.idle_seconds => at,
                    _ => now,
                };
                (key, (s.idle_seconds, since))
            })
            .collect();
        let heard_at = match (previous, seen) {
            (Some(p), _) if p.report == report && p.deleted_at.is_none() => p.heard_at,
            (Some(_), _) | (None, Seen::Live) => now,
            (None, Seen::Listed { written_at }) => {
                written_at.unwrap_or(report.generated_at).min(now)
            }
        };
        // When this version was written, on a clock other than the node's: a
        // listed report's API server write time, else the moment we heard it
        // (later than the write: the offset errs towards later, never earlier).
        let written = match (previous, seen) {
            (Some(p), _) if p.report == report => None,
            (_, Seen::Live) => Some(now),
            (_, Seen::Listed { written_at }) => Some(written_at.unwrap_or(now).min(now)),
        };
        let node_offset = match written {
            Some(at) => node_clock::offset(at, report.generated_at),
            None => previous.map_or(SignedDuration::ZERO, |p| p.node_offset),
        };
        let mut touched: Vec<PodUid> = by_pod.keys().cloned().collect();
        if let Some(p) = previous {
            touched.extend(p.by_pod.keys().cloned());
        }
        touched.sort();
        touched.dedup();
        self.nodes.insert(
            report.node.clone(),
            NodeReport {
                report,
                heard_at,
                node_offset,
                deleted_at: None,
                by_pod,
                idle_seen,
            },
        );
        touched
    }

    /// The node's report object was deleted: its snapshot keeps counting until
    /// the grace period runs out (see the module comment). Deleted nodes whose
    /// grace is over are forgotten here, so the index does not grow with node
    /// churn. Returns the pods to look at again.
    pub fn mark_deleted(&mut self, node: &str, now: Timestamp, grace: Duration) -> Vec<PodUid> {
        let up_since = self.path.up_since;
        self.nodes.retain(|_, n| {
            n.deleted_at.is_none()
                || up_since.is_none_or(|up| stale_at(n.heard_at.max(up), grace) > now)
        });
        let Some(n) = self.nodes.get_mut(node) else {
            return Vec::new();
        };
        n.deleted_at.get_or_insert(now);
        n.by_pod.keys().cloned().collect()
    }

    /// A (re)list starts: a node it does not name before
    /// [`ReportIndex::finish_relist`] lost its report while the watch was down.
    pub fn begin_relist(&mut self) {
        self.relisting = Some(HashSet::new());
    }

    /// The (re)list named this node's report object (valid or not: a report
    /// refused as malformed still exists, and its node keeps its snapshot).
    pub fn listed(&mut self, node: &str) {
        if let Some(seen) = &mut self.relisting {
            seen.insert(node.to_string());
        }
    }

    /// The (re)list is complete: nodes it did not name are treated as deleted.
    /// Returns the pods to look at again.
    pub fn finish_relist(&mut self, now: Timestamp, grace: Duration) -> Vec<PodUid> {
        let Some(seen) = self.relisting.take() else {
            return Vec::new();
        };
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        gone.iter()
            .flat_map(|node| self.mark_deleted(node, now, grace))
            .collect()
    }

    pub fn get(&self, node: &str) -> Option<&NodeReport> {
        self.nodes.get(node)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeReport> {
        self.nodes.values()
    }

    /// One half of the path from agents to us went up or down. Returns true
    /// when the whole path just came up: every node's grace restarts now.
    pub fn set_path(&mut self, part: PathPart, up: bool, now: Timestamp) -> bool {
        let p = &mut self.path;
        match part {
            PathPart::ReportWatch => p.watch_up = up,
            PathPart::ApiServer => p.api_up = up,
        }
        let was_up = p.up_since.is_some();
        if p.watch_up && p.api_up {
            p.up_since.get_or_insert(now);
        } else {
            p.up_since = None;
        }
        !was_up && p.up_since.is_some()
    }

    /// Since when agents could be heard, if they can now.
    pub fn path_up_since(&self) -> Option<Timestamp> {
        self.path.up_since
    }

    /// The sessions of `pod` on `node`, if that node's agent is still heard,
    /// with their idle time as estimated at `now`.
    /// While the path is down nobody is silent: the last snapshot counts, and
    /// the answer is to be asked again a grace from now.
    pub fn liveness(&self, node: &str, pod: &PodUid, now: Timestamp, grace: Duration) -> Liveness {
        let Some(n) = self.nodes.get(node) else {
            return Liveness::NoReport;
        };
        let stale_at = match self.path.up_since {
            Some(up) => stale_at(n.heard_at.max(up), grace),
            None => stale_at(now, grace),
        };
        if now >= stale_at {
            return Liveness::Silent {
                heard_at: n.heard_at,
            };
        }
        let mut sessions = n.by_pod.get(pod).cloned().unwrap_or_default();
        for s in &mut sessions {
            if let Some(&(step, since)) = n.idle_seen.get(&s.key()) {
                let elapsed = Duration::try_from(now.duration_since(since)).unwrap_or_default();
                s.idle_seconds = idle::estimate(step, elapsed);
            }
        }
        Liveness::Fresh {
            sessions,
            node_offset: n.node_offset,
            stale_at,
        }
    }
}

fn stale_at(heard: Timestamp, grace: Duration) -> Timestamp {
    heard
        .checked_add(SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

impl NodeReport {
    pub fn pods(&self) -> impl Iterator<Item = (&PodUid, &Vec<Session>)> {
        self.by_pod.iter()
    }

    /// Whether this report holds sessions of the pod with this UID.
    pub fn names(&self, pod: &PodUid) -> bool {
        self.by_pod.contains_key(pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID_A: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const UID_B: &str = "1f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn session(uid: &str, tty: &str) -> Session {
        serde_json::from_value(serde_json::json!({
            "pod_uid": uid, "container_id": "ab".repeat(32), "tty": tty, "pid": 7,
            "command": "bash", "uid": 1000, "started_at": "2026-11-24T01:00:00Z", "processes": 1
        }))
        .unwrap()
    }

    /// An index whose agents could be heard all along (since midnight).
    fn heard_since_midnight() -> ReportIndex {
        let mut idx = ReportIndex::default();
        let midnight = ts("2026-11-24T00:00:00Z");
        assert!(!idx.set_path(PathPart::ReportWatch, true, midnight));
        assert!(idx.set_path(PathPart::ApiServer, true, midnight), "path up");
        idx
    }

    fn report(node: &str, at: &str, sessions: Vec<Session>) -> Report {
        Report {
            node: node.into(),
            generated_at: ts(at),
            sequence: 1,
            sessions,
        }
    }

    #[test]
    fn a_relist_that_misses_a_node_treats_its_report_as_deleted() {
        let mut idx = heard_since_midnight();
        let t0 = ts("2026-11-24T01:00:00Z");
        let grace = Duration::from_secs(120);
        for node in ["n1", "n2", "n3"] {
            let uid = if node == "n1" { UID_A } else { UID_B };
            idx.apply(
                report(node, "2026-11-24T01:00:00Z", vec![session(uid, "pts/0")]),
                Seen::Live,
                t0,
            );
        }
        idx.begin_relist();
        idx.listed("n2");
        idx.listed("n3"); // refused as malformed, but its object exists
        let gone = idx.finish_relist(t0, grace);
        assert_eq!(gone, vec![PodUid::parse(UID_A).unwrap()]);
        assert!(idx.get("n1").unwrap().deleted_at.is_some());
        assert!(idx.get("n2").unwrap().deleted_at.is_none());
        assert!(idx.get("n3").unwrap().deleted_at.is_none());
        assert!(
            idx.finish_relist(t0, grace).is_empty(),
            "outside a relist nothing is swept"
        );
    }

    #[test]
    fn idle_steps_grow_on_our_clock_from_when_we_first_saw_them() {
        let mut idx = heard_since_midnight();
        let a = PodUid::parse(UID_A).unwrap();
        let grace = Duration::from_secs(3600);
        let idle = |step: u32, at: &str| {
            let mut s = session(UID_A, "pts/0");
            s.idle_seconds = step;
            report("n1", at, vec![s])
        };
        let idle_at = |idx: &ReportIndex, t: &str| match idx.liveness("n1", &a, ts(t), grace) {
            Liveness::Fresh { sessions, .. } => sessions[0].idle_seconds,
            other => panic!("{other:?}"),
        };
        idx.apply(
            idle(60, "2026-11-24T01:00:00Z"),
            Seen::Live,
            ts("2026-11-24T01:00:00Z"),
        );
        assert_eq!(idle_at(&idx, "2026-11-24T01:00:20Z"), 80);
        // A heartbeat with the same step does not restart it.
        idx.apply(
            idle(60, "2026-11-24T01:00:30Z"),
            Seen::Live,
            ts("2026-11-24T01:00:30Z"),
        );
        assert_eq!(idle_at(&idx, "2026-11-24T01:00:45Z"), 105);
        assert_eq!(
            idle_at(&idx, "2026-11-24T01:30:00Z"),
            120,
            "never past the next step the agent would have sent"
        );
        idx.apply(
            idle(120, "2026-11-24T01:01:00Z"),
            Seen::Live,
            ts("2026-11-24T01:01:00Z"),
        );
        assert_eq!(idle_at(&idx, "2026-11-24T01:01:10Z"), 130);
        // Activity: the step goes back to 0 and stays there.
        idx.apply(
            idle(0, "2026-11-24T01:01:20Z"),
            Seen::Live,
            ts("2026-11-24T01:01:20Z"),
        );
        assert_eq!(idle_at(&idx, "2026-11-24T01:05:00Z"), 0);
    }

    #[test]
    fn the_node_clock_offset_is_measured_on_each_new_version() {
        let mut idx = heard_since_midnight();
        let a = PodUid::parse(UID_A).unwrap();
        let grace = Duration::from_secs(120);
        let offset = |idx: &ReportIndex, now| match idx.liveness("n1", &a, ts(now), grace) {
            Liveness::Fresh { node_offset, .. } => node_offset,
            other => panic!("{other:?}"),
        };
        // Listed after a controller restart: the API server's write time, not
        // our later receipt, against the node's (30 minutes behind) clock.
        idx.apply(
            report("n1", "2026-11-24T00:30:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Listed {
                written_at: Some(ts("2026-11-24T01:00:01Z")),
            },
            ts("2026-11-24T01:00:20Z"),
        );
        let thirty = SignedDuration::from_secs(30 * 60);
        assert_eq!(
            offset(&idx, "2026-11-24T01:00:20Z"),
            thirty + SignedDuration::from_secs(1)
        );
        // The same version again (a relist) keeps it; a new one heard live
        // measures again, by our clock.
        idx.apply(
            report("n1", "2026-11-24T00:30:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Live,
            ts("2026-11-24T01:00:30Z"),
        );
        assert_eq!(
            offset(&idx, "2026-11-24T01:00:30Z"),
            thirty + SignedDuration::from_secs(1)
        );
        idx.apply(
            report("n1", "2026-11-24T00:31:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Live,
            ts("2026-11-24T01:01:00Z"),
        );
        assert_eq!(offset(&idx, "2026-11-24T01:01:00Z"), thirty);
        // A write time in our future (the API server's clock ahead of ours) is
        // taken as now: never an offset we have not lived through.
        idx.apply(
            report("n1", "2026-11-24T00:32:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Listed {
                written_at: Some(ts("2026-11-24T02:00:00Z")),
            },
            ts("2026-11-24T01:02:00Z"),
        );
        assert_eq!(offset(&idx, "2026-11-24T01:02:00Z"), thirty);
    }

    #[test]
    fn fresh_then_silent_after_grace() {
        let mut idx = heard_since_midnight();
        let a = PodUid::parse(UID_A).unwrap();
        idx.apply(
            report("n1", "2026-11-24T01:00:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Listed { written_at: None },
            ts("2026-11-24T01:00:01Z"),
        );
        let grace = Duration::from_secs(120);
        match idx.liveness("n1", &a, ts("2026-11-24T01:01:00Z"), grace) {
            Liveness::Fresh {
                sessions, stale_at, ..
            } => {
                assert_eq!(sessions.len(), 1);
                assert_eq!(
                    stale_at,
                    ts("2026-11-24T01:02:00Z"),
                    "first sight counts from generated_at"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            idx.liveness("n1", &a, ts("2026-11-24T01:02:00Z"), grace),
            Liveness::Silent { .. }
        ));
        assert_eq!(
            idx.liveness("n2", &a, ts("2026-11-24T01:01:00Z"), grace),
            Liveness::NoReport
        );
    }

    #[test]
    fn a_heartbeat_moves_freshness_to_our_clock() {
        let mut idx = heard_since_midnight();
        // An agent whose clock runs an hour ahead cannot stretch freshness.
        idx.apply(
            report("n1", "2026-11-24T02:00:00Z", vec![]),
            Seen::Live,
            ts("2026-11-24T01:00:00Z"),
        );
        assert_eq!(idx.get("n1").unwrap().heard_at, ts("2026-11-24T01:00:00Z"));
        idx.apply(
            report("n1", "2026-11-24T02:00:30Z", vec![]),
            Seen::Live,
            ts("2026-11-24T01:00:30Z"),
        );
        assert_eq!(idx.get("n1").unwrap().heard_at, ts("2026-11-24T01:00:30Z"));
    }

    #[test]
    fn touched_pods_include_those_that_left() {
        let mut idx = heard_since_midnight();
        let now = ts("2026-11-24T01:00:00Z");
        idx.apply(
            report("n1", "2026-11-24T01:00:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Live,
            now,
        );
        let touched = idx.apply(
            report("n1", "2026-11-24T01:00:01Z", vec![session(UID_B, "pts/1")]),
            Seen::Live,
            now,
        );
        assert_eq!(touched.len(), 2);
        assert_eq!(
            idx.mark_deleted("n1", now, Duration::from_secs(120)),
            vec![PodUid::parse(UID_B).unwrap()]
        );
    }

    #[test]
    fn first_sight_trusts_the_api_servers_write_time_over_a_slow_agent_clock() {
        let mut idx = heard_since_midnight();
        let a = PodUid::parse(UID_A).unwrap();
        let grace = Duration::from_secs(120);
        // The agent's clock is 10 minutes behind; the API server wrote the
        // report 5 s before this (restarted) controller listed it.
        idx.apply(
            report("n1", "2026-11-24T00:50:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Listed {
                written_at: Some(ts("2026-11-24T00:59:55Z")),
            },
            ts("2026-11-24T01:00:00Z"),
        );
        assert!(
            matches!(idx.liveness("n1", &a, ts("2026-11-24T01:00:00Z"), grace), Liveness::Fresh { sessions, .. } if sessions.len() == 1),
            "a restart must not release a skewed node's logins"
        );
    }

    #[test]
    fn a_deleted_report_counts_until_the_grace_runs_out_then_is_forgotten() {
        let mut idx = heard_since_midnight();
        let a = PodUid::parse(UID_A).unwrap();
        let grace = Duration::from_secs(120);
        let t0 = ts("2026-11-24T01:00:00Z");
        idx.apply(
            report("n1", "2026-11-24T01:00:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Live,
            t0,
        );
        // Heard at t0 (listed first, written then); deleted 30 s later.
        assert_eq!(
            idx.mark_deleted("n1", ts("2026-11-24T01:00:30Z"), grace),
            vec![a.clone()]
        );
        assert!(matches!(
            idx.liveness("n1", &a, ts("2026-11-24T01:01:00Z"), grace),
            Liveness::Fresh { sessions, .. } if sessions.len() == 1
        ));
        assert!(matches!(
            idx.liveness("n1", &a, ts("2026-11-24T01:02:00Z"), grace),
            Liveness::Silent { .. }
        ));
        // Recreated by the agent: fresh again, on our clock.
        idx.apply(
            report("n1", "2026-11-24T01:00:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Live,
            ts("2026-11-24T01:03:00Z"),
        );
        assert!(idx.get("n1").unwrap().deleted_at.is_none());
        assert_eq!(idx.get("n1").unwrap().heard_at, ts("2026-11-24T01:03:00Z"));
        // Another node's deletion after n1's grace prunes nothing of n1 (live),
        // but a long-deleted node is forgotten.
        idx.apply(report("n2", "2026-11-24T01:00:00Z", vec![]), Seen::Live, t0);
        idx.mark_deleted("n2", ts("2026-11-24T01:00:10Z"), grace);
        idx.mark_deleted("n3", ts("2026-11-24T01:10:00Z"), grace);
        assert!(idx.get("n2").is_none(), "deleted and past its grace");
        assert!(idx.get("n1").is_some());
    }

    #[test]
    fn nothing_turns_silent_while_the_api_server_is_away_and_the_grace_restarts_when_it_is_back() {
        let mut idx = heard_since_midnight();
        let a = PodUid::parse(UID_A).unwrap();
        let grace = Duration::from_secs(120);
        idx.apply(
            report("n1", "2026-11-24T01:00:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Live,
            ts("2026-11-24T01:00:00Z"),
        );
        // The API server stops answering 30 s later, for ten minutes.
        assert!(!idx.set_path(PathPart::ApiServer, false, ts("2026-11-24T01:00:30Z")));
        assert_eq!(idx.path_up_since(), None);
        match idx.liveness("n1", &a, ts("2026-11-24T01:10:00Z"), grace) {
            Liveness::Fresh {
                sessions, stale_at, ..
            } => {
                assert_eq!(sessions.len(), 1, "the last snapshot still counts");
                assert_eq!(
                    stale_at,
                    ts("2026-11-24T01:12:00Z"),
                    "asked again a grace later"
                );
            }
            other => panic!("an outage released a login: {other:?}"),
        }
        // Back: a full grace from now, not from the last report.
        assert!(idx.set_path(PathPart::ApiServer, true, ts("2026-11-24T01:10:30Z")));
        assert!(matches!(
            idx.liveness("n1", &a, ts("2026-11-24T01:12:29Z"), grace),
            Liveness::Fresh { stale_at, .. } if stale_at == ts("2026-11-24T01:12:30Z")
        ));
        // An agent that stays silent after that is silent.
        assert!(matches!(
            idx.liveness("n1", &a, ts("2026-11-24T01:12:30Z"), grace),
            Liveness::Silent { heard_at } if heard_at == ts("2026-11-24T01:00:00Z")
        ));
    }

    #[test]
    fn a_controller_started_after_a_long_outage_gives_every_node_a_fresh_grace() {
        let mut idx = ReportIndex::default();
        let a = PodUid::parse(UID_A).unwrap();
        let grace = Duration::from_secs(120);
        let start = ts("2026-11-24T01:10:00Z");
        // Listed once the API server is back: last written ten minutes ago,
        // when the outage began.
        idx.apply(
            report("n1", "2026-11-24T01:00:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Listed {
                written_at: Some(ts("2026-11-24T01:00:00Z")),
            },
            start,
        );
        assert!(
            matches!(idx.liveness("n1", &a, start, grace), Liveness::Fresh { .. }),
            "before the path is known to work, nobody is silent"
        );
        assert!(!idx.set_path(PathPart::ApiServer, true, start));
        assert!(idx.set_path(PathPart::ReportWatch, true, ts("2026-11-24T01:10:01Z")));
        assert!(matches!(
            idx.liveness("n1", &a, ts("2026-11-24T01:12:00Z"), grace),
            Liveness::Fresh { sessions, stale_at, .. } if sessions.len() == 1 && stale_at == ts("2026-11-24T01:12:01Z")
        ));
        // A broken watch is as much an outage as a silent API server.
        assert!(!idx.set_path(PathPart::ReportWatch, false, ts("2026-11-24T01:11:00Z")));
        assert!(matches!(
            idx.liveness("n1", &a, ts("2026-11-24T01:20:00Z"), grace),
            Liveness::Fresh { .. }
        ));
    }

    #[test]
    fn a_deleted_report_is_not_forgotten_while_the_path_is_down() {
        let mut idx = heard_since_midnight();
        let grace = Duration::from_secs(120);
        idx.apply(
            report("n1", "2026-11-24T01:00:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Live,
            ts("2026-11-24T01:00:00Z"),
        );
        idx.mark_deleted("n1", ts("2026-11-24T01:00:10Z"), grace);
        idx.set_path(PathPart::ApiServer, false, ts("2026-11-24T01:00:20Z"));
        idx.mark_deleted("n2", ts("2026-11-24T01:30:00Z"), grace);
        assert!(idx.get("n1").is_some(), "kept while agents cannot be heard");
        idx.set_path(PathPart::ApiServer, true, ts("2026-11-24T01:30:00Z"));
        idx.mark_deleted("n2", ts("2026-11-24T01:32:00Z"), grace);
        assert!(
            idx.get("n1").is_none(),
            "forgotten a grace after the path is back"
        );
    }
}
