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
//! A deleted report is treated like a silent agent: its last snapshot keeps
//! counting until the grace period runs out, then the pods are released with
//! the agent-silent event. Deleting the object is not a way to drop protection
//! at once (and an agent's restart may delete and recreate it).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use sessionguard_core::{PodUid, Report, Session};

#[derive(Clone, Debug)]
pub struct NodeReport {
    pub report: Report,
    pub heard_at: Timestamp,
    /// When the report object was deleted, if it was.
    pub deleted_at: Option<Timestamp>,
    by_pod: HashMap<PodUid, Vec<Session>>,
}

/// A pod's sessions as far as its node's agent is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// No report for the node (no agent, or it was deleted).
    NoReport,
    /// The agent reported recently; these are the pod's sessions.
    Fresh {
        sessions: Vec<Session>,
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

#[derive(Debug, Default)]
pub struct ReportIndex {
    nodes: HashMap<String, NodeReport>,
    /// During a (re)list, the nodes whose report objects it named so far.
    relisting: Option<HashSet<String>>,
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
        let heard_at = match (previous, seen) {
            (Some(p), _) if p.report == report && p.deleted_at.is_none() => p.heard_at,
            (Some(_), _) | (None, Seen::Live) => now,
            (None, Seen::Listed { written_at }) => {
                written_at.unwrap_or(report.generated_at).min(now)
            }
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
                deleted_at: None,
                by_pod,
            },
        );
        touched
    }

    /// The node's report object was deleted: its snapshot keeps counting until
    /// the grace period runs out (see the module comment). Deleted nodes whose
    /// grace is over are forgotten here, so the index does not grow with node
    /// churn. Returns the pods to look at again.
    pub fn mark_deleted(&mut self, node: &str, now: Timestamp, grace: Duration) -> Vec<PodUid> {
        let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
        self.nodes.retain(|_, n| {
            n.deleted_at.is_none() || n.heard_at.checked_add(grace).is_ok_and(|end| end > now)
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

    /// The sessions of `pod` on `node`, if that node's agent is still heard.
    pub fn liveness(&self, node: &str, pod: &PodUid, now: Timestamp, grace: Duration) -> Liveness {
        let Some(n) = self.nodes.get(node) else {
            return Liveness::NoReport;
        };
        let stale_at = n
            .heard_at
            .checked_add(SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX))
            .unwrap_or(Timestamp::MAX);
        if now >= stale_at {
            return Liveness::Silent {
                heard_at: n.heard_at,
            };
        }
        Liveness::Fresh {
            sessions: n.by_pod.get(pod).cloned().unwrap_or_default(),
            stale_at,
        }
    }
}

impl NodeReport {
    pub fn pods(&self) -> impl Iterator<Item = (&PodUid, &Vec<Session>)> {
        self.by_pod.iter()
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
        let mut idx = ReportIndex::default();
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
    fn fresh_then_silent_after_grace() {
        let mut idx = ReportIndex::default();
        let a = PodUid::parse(UID_A).unwrap();
        idx.apply(
            report("n1", "2026-11-24T01:00:00Z", vec![session(UID_A, "pts/0")]),
            Seen::Listed { written_at: None },
            ts("2026-11-24T01:00:01Z"),
        );
        let grace = Duration::from_secs(120);
        match idx.liveness("n1", &a, ts("2026-11-24T01:01:00Z"), grace) {
            Liveness::Fresh { sessions, stale_at } => {
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
        let mut idx = ReportIndex::default();
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
        let mut idx = ReportIndex::default();
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
        let mut idx = ReportIndex::default();
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
        let mut idx = ReportIndex::default();
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
}
