//! What each node's agent last said, and whether it still counts.
//!
//! Freshness is measured on the controller's clock, from when it last saw the
//! report change, so agent clock skew cannot keep a dead node's sessions alive.
//! The exception is the first sight (controller start): then the report's own
//! `generated_at` is used if it is in the past, so a restart does not revive a
//! long-silent agent's sessions for another full grace period.

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use sessionguard_core::{PodUid, Report, Session};

#[derive(Clone, Debug)]
pub struct NodeReport {
    pub report: Report,
    pub heard_at: Timestamp,
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

#[derive(Debug, Default)]
pub struct ReportIndex {
    nodes: HashMap<String, NodeReport>,
}

impl ReportIndex {
    /// Replaces a node's snapshot. Returns the pods named in the old and new
    /// snapshot, which are the ones whose state may have changed.
    pub fn apply(&mut self, report: Report, now: Timestamp) -> Vec<PodUid> {
        let mut by_pod: HashMap<PodUid, Vec<Session>> = HashMap::new();
        for s in &report.sessions {
            by_pod.entry(s.pod_uid.clone()).or_default().push(s.clone());
        }
        let previous = self.nodes.get(&report.node);
        let heard_at = match previous {
            Some(p) if p.report == report => p.heard_at,
            Some(_) => now,
            None => report.generated_at.min(now),
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
                by_pod,
            },
        );
        touched
    }

    /// Forgets a node (its report object was deleted).
    pub fn remove(&mut self, node: &str) -> Vec<PodUid> {
        self.nodes
            .remove(node)
            .map(|n| n.by_pod.into_keys().collect())
            .unwrap_or_default()
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
    fn fresh_then_silent_after_grace() {
        let mut idx = ReportIndex::default();
        let a = PodUid::parse(UID_A).unwrap();
        idx.apply(
            report("n1", "2026-11-24T01:00:00Z", vec![session(UID_A, "pts/0")]),
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
            ts("2026-11-24T01:00:00Z"),
        );
        assert_eq!(idx.get("n1").unwrap().heard_at, ts("2026-11-24T01:00:00Z"));
        idx.apply(
            report("n1", "2026-11-24T02:00:30Z", vec![]),
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
            now,
        );
        let touched = idx.apply(
            report("n1", "2026-11-24T01:00:01Z", vec![session(UID_B, "pts/1")]),
            now,
        );
        assert_eq!(touched.len(), 2);
        assert_eq!(idx.remove("n1"), vec![PodUid::parse(UID_B).unwrap()]);
    }
}
