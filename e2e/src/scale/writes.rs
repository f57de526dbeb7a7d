//! The controller's API calls by operation, from `sessionguard_writes_total{op,outcome}`,
//! and what the steady-write figure counts of them.
//!
//! The counter covers every call the controller's writer makes, so a quiet window holds
//! three kinds: the Lease renewals every leader makes whatever happens in the cluster
//! (`*_lease`: a read and an update per renew period), reads the interaction-record
//! writer makes before it folds (`get_*`), and writes caused by the cluster's state.
//! Only the last count as steady writes (goal 0); the Lease is shown beside them.

use std::collections::BTreeMap;

/// `op/outcome` → count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calls(pub BTreeMap<String, f64>);

/// Where one operation belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Lease,
    Read,
    Write,
}

pub fn class(op: &str) -> Class {
    if op.ends_with("_lease") {
        Class::Lease
    } else if op.starts_with("get_") || op == "self_subject_review" {
        Class::Read
    } else {
        Class::Write
    }
}

impl Calls {
    /// Every `sessionguard_writes_total` series of a Prometheus text exposition.
    pub fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for l in text.lines() {
            let Some(rest) = l.strip_prefix("sessionguard_writes_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let label = |k: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
                    .unwrap_or_default()
            };
            *m.entry(format!("{}/{}", label("op"), label("outcome")))
                .or_default() += v;
        }
        Self(m)
    }

    /// What was counted since `before` (series that did not move are left out).
    pub fn since(&self, before: &Calls) -> Calls {
        Calls(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0)))
                .filter(|(_, d)| *d > 0.0)
                .collect(),
        )
    }

    /// The calls of one class.
    pub fn total(&self, c: Class) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| class(k.split('/').next().unwrap_or("")) == c)
            .map(|(_, v)| v)
            .sum::<f64>()
            // An empty f64 sum is -0.0, which would print as "-0.0 /min".
            + 0.0
    }

    /// `op/outcome count, ...` for the progress lines and the table.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_by_op_and_classifies_them() {
        let before = Calls::parse(
            "sessionguard_writes_total{op=\"update_lease\",outcome=\"ok\"} 10\n\
             sessionguard_writes_total{op=\"patch_pod\",outcome=\"error\"} 4\n",
        );
        let after = Calls::parse(
            "# TYPE sessionguard_writes counter\n\
             sessionguard_writes_total{op=\"update_lease\",outcome=\"ok\"} 14\n\
             sessionguard_writes_total{op=\"get_lease\",outcome=\"ok\"} 4\n\
             sessionguard_writes_total{op=\"get_pod\",outcome=\"ok\"} 2\n\
             sessionguard_writes_total{op=\"patch_pod\",outcome=\"error\"} 7\n\
             sessionguard_writes_total{op=\"create_event\",outcome=\"ok\"} 1\n\
             sessionguard_writes_totally 100\n",
        );
        let d = after.since(&before);
        assert_eq!(d.0["patch_pod/error"], 3.0);
        assert_eq!(d.total(Class::Lease), 8.0);
        assert_eq!(d.total(Class::Read), 2.0);
        assert_eq!(d.total(Class::Write), 4.0);
        assert!(d.describe().contains("patch_pod/error 3"));
        assert_eq!(Calls::default().describe(), "none");
        assert!(Calls::default().total(Class::Write).is_sign_positive());
    }
}
