//! `kubectl sessions nodes`: per node, the pods sessionguard protects, who
//! is logged in (and how long idle, once agents report it), and whether a
//! drain would block now. Pure: the caller lists nodes, our PDBs' pods,
//! reports and events.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use sessionguard_core::Report;
use sessionguard_core::interaction::login_user;
use sessionguard_core::printable::printable;

use crate::blocking::Blocking;
use crate::output::align;

/// One login on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Login {
    /// `namespace/pod` (the pod UID when its pod cannot be read).
    pub pod: String,
    pub user: String,
    pub tty: String,
    pub since: Timestamp,
    /// Seconds since the session's last activity; `None` while the node's
    /// agent does not report it (`idle_seconds`).
    pub idle_seconds: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub node: String,
    /// `None` when Nodes cannot be read (RBAC).
    pub cordoned: Option<bool>,
    /// `namespace/pod` of each pod with a sessionguard PDB on this node.
    pub protected_pods: Vec<String>,
    pub logins: Vec<Login>,
    /// A drain would be refused now: some pod here has our PDB
    /// (maxUnavailable 0), so its eviction waits.
    pub drain_blocks: bool,
    /// Drains already waiting here, from the pods' EvictionBlocked events:
    /// the longest wait.
    pub waiting: Option<Blocking>,
}

/// A node's report as listed, with the idle time of each session in the
/// order of `report.sessions` (read from the raw object, so a field the
/// typed report does not know yet still shows).
pub struct NodeReport {
    pub report: Report,
    pub idle: Vec<Option<u64>>,
}

impl NodeReport {
    /// From a listed SessionReport's `spec`; `None` if it does not parse.
    pub fn from_spec(spec: &Value) -> Option<Self> {
        let report: Report = serde_json::from_value(spec.clone()).ok()?;
        let idle = spec["sessions"]
            .as_array()
            .map(|a| a.iter().map(|s| s["idle_seconds"].as_u64()).collect())
            .unwrap_or_default();
        Some(Self { report, idle })
    }
}

/// One row per node: every node listed (`nodes`, with its cordon), and any
/// other node that has protected pods or a report.
/// `names` maps a reported pod UID to `namespace/pod` (from the pods
/// themselves: agents report UIDs only).
pub fn rows(
    nodes: Option<&[(String, bool)]>,
    protected: &[(String, String)],
    reports: &[NodeReport],
    names: &BTreeMap<String, String>,
    waits: &BTreeMap<(String, String), Blocking>,
) -> Vec<NodeRow> {
    let mut out: BTreeMap<String, NodeRow> = BTreeMap::new();
    let cordon: BTreeMap<&str, bool> = nodes
        .into_iter()
        .flatten()
        .map(|(n, c)| (n.as_str(), *c))
        .collect();
    let known = nodes.is_some();
    let cordoned = |node: &str| known.then(|| cordon.get(node).copied().unwrap_or(false));
    for (n, _) in nodes.into_iter().flatten() {
        row_of(&mut out, n, cordoned(n));
    }
    for (node, pod) in protected {
        let r = row_of(&mut out, node, cordoned(node));
        r.protected_pods.push(pod.clone());
        r.drain_blocks = true;
    }
    for nr in reports {
        let r = row_of(&mut out, &nr.report.node, cordoned(&nr.report.node));
        for (i, s) in nr.report.sessions.iter().enumerate() {
            if !s.is_login() {
                continue;
            }
            let pod = match (names.get(s.pod_uid.as_str()), &s.namespace, &s.pod_name) {
                (Some(name), _, _) => name.clone(),
                (None, Some(ns), Some(p)) => format!("{ns}/{p}"),
                _ => s.pod_uid.as_str().to_string(),
            };
            r.logins.push(Login {
                pod,
                user: login_user(s.uid),
                tty: s.tty.clone(),
                since: s.started_at,
                idle_seconds: nr.idle.get(i).copied().flatten(),
            });
        }
    }
    for b in waits.values() {
        let r = row_of(&mut out, &b.node, cordoned(&b.node));
        if r.waiting.as_ref().is_none_or(|w| b.since < w.since) {
            r.waiting = Some(b.clone());
        }
    }
    let mut rows: Vec<NodeRow> = out.into_values().collect();
    for r in &mut rows {
        r.protected_pods.sort();
        r.logins
            .sort_by(|a, b| (&a.pod, &a.tty).cmp(&(&b.pod, &b.tty)));
    }
    rows
}

fn row_of<'a>(
    out: &'a mut BTreeMap<String, NodeRow>,
    node: &str,
    cordoned: Option<bool>,
) -> &'a mut NodeRow {
    out.entry(node.to_string()).or_insert_with(|| NodeRow {
        node: node.to_string(),
        cordoned,
        protected_pods: vec![],
        logins: vec![],
        drain_blocks: false,
        waiting: None,
    })
}

/// The table: NODE CORDONED PROTECTED LOGGED-IN IDLE DRAIN.
pub fn table(rows: &[NodeRow], now: Timestamp) -> String {
    let mut lines: Vec<Vec<String>> = vec![
        [
            "NODE",
            "CORDONED",
            "PROTECTED",
            "LOGGED-IN",
            "IDLE",
            "DRAIN",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    for r in rows {
        let dash = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        let logins = dash(
            r.logins
                .iter()
                .map(|l| format!("{}@{}:{}", l.user, l.pod, l.tty))
                .collect(),
        );
        let idle = dash(
            r.logins
                .iter()
                .map(|l| l.idle_seconds.map_or("-".into(), short))
                .collect(),
        );
        let drain = match (&r.waiting, r.drain_blocks) {
            (Some(w), true) => format!("waiting {}", crate::blocking::waited(w, now)),
            (_, true) => format!(
                "would block ({} pod{})",
                r.protected_pods.len(),
                if r.protected_pods.len() == 1 { "" } else { "s" }
            ),
            (_, false) => "no".into(),
        };
        let cells = [
            r.node.clone(),
            match r.cordoned {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "?".into(),
            },
            dash(r.protected_pods.clone()),
            logins,
            idle,
            drain,
        ];
        lines.push(cells.iter().map(|c| printable(c, 1024)).collect());
    }
    align(&lines)
}

/// `45s`, `12m`, `3h`.
fn short(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn report(idle: Option<u64>) -> NodeReport {
        let mut s = json!({
            "pod_uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "container_id": "a".repeat(64),
            "tty": "pts/0", "pid": 42, "command": "bash", "uid": 1000,
            "started_at": "2026-11-24T00:59:00Z", "processes": 1, "console": false,
            "namespace": "ops", "pod_name": "bastion-0", "container_name": "app"
        });
        if let Some(i) = idle {
            s["idle_seconds"] = json!(i);
        }
        let console = json!({
            "pod_uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "container_id": "b".repeat(64),
            "tty": "pts/1", "pid": 1, "command": "sh", "uid": 0,
            "started_at": "2026-11-24T00:50:00Z", "processes": 1, "console": true
        });
        NodeReport::from_spec(&json!({
            "node": "n1", "generated_at": "2026-11-24T01:00:00Z", "sequence": 1,
            "sessions": [console, s]
        }))
        .unwrap()
    }

    #[test]
    fn protected_pods_logins_and_idle_per_node() {
        let nodes = [("n1".to_string(), true), ("n2".to_string(), false)];
        let protected = [("n1".to_string(), "ops/bastion-0".to_string())];
        let rows = rows(
            Some(&nodes),
            &protected,
            &[report(Some(754))],
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].logins.len(), 1, "the console is not a login");
        assert_eq!(rows[0].logins[0].idle_seconds, Some(754));
        let t = table(&rows, ts("2026-11-24T01:00:00Z"));
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            [
                "NODE",
                "CORDONED",
                "PROTECTED",
                "LOGGED-IN",
                "IDLE",
                "DRAIN"
            ]
        );
        assert_eq!(
            lines[1],
            [
                "n1",
                "yes",
                "ops/bastion-0",
                "uid:1000@ops/bastion-0:pts/0",
                "12m",
                "would",
                "block",
                "(1",
                "pod)"
            ]
        );
        assert_eq!(lines[2], ["n2", "no", "-", "-", "-", "no"]);
    }

    #[test]
    fn idle_is_a_dash_until_reported_and_a_waiting_drain_shows() {
        let protected = [("n1".to_string(), "ops/bastion-0".to_string())];
        let mut waits = BTreeMap::new();
        waits.insert(
            ("ops".to_string(), "bastion-0".to_string()),
            Blocking {
                node: "n1".into(),
                since: ts("2026-11-24T00:48:00Z"),
                last: ts("2026-11-24T00:59:58Z"),
                requested_by: Some("admin".into()),
            },
        );
        let rows = rows(None, &protected, &[report(None)], &BTreeMap::new(), &waits);
        assert_eq!(rows[0].cordoned, None, "nodes not readable");
        let t = table(&rows, ts("2026-11-24T01:00:00Z"));
        let line: Vec<&str> = t.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(line[1], "?");
        assert_eq!(line[4], "-", "no idle_seconds yet");
        assert_eq!(line[5..], ["waiting", "12m"]);
    }

    #[test]
    fn a_login_is_named_from_the_pods_when_the_report_has_uids_only() {
        let mut r = report(None);
        for s in &mut r.report.sessions {
            (s.namespace, s.pod_name) = (None, None);
        }
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let unnamed = rows(
            None,
            &[],
            std::slice::from_ref(&r),
            &BTreeMap::new(),
            &BTreeMap::new(),
        );
        assert_eq!(unnamed[0].logins[0].pod, uid, "no pod read: the UID");
        let names = BTreeMap::from([(uid.to_string(), "ops/bastion-0".to_string())]);
        let named = rows(None, &[], &[r], &names, &BTreeMap::new());
        assert_eq!(named[0].logins[0].pod, "ops/bastion-0");
    }
}
