//! The BLOCKING column: which protected pods a drain (or any eviction) is
//! waiting on now, read from the `EvictionBlocked` events the controller's
//! eviction webhook writes (one series per pod and requester). A refusal
//! counts for `core::drain::BLOCKED_WINDOW` after the latest one, the window
//! the controller's `sessionguard_drain_blocked` gauge uses.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use serde::Serialize;
use sessionguard_core::drain::{requester, waiting};

/// The event reason the eviction webhook writes.
pub const REASON: &str = "EvictionBlocked";

/// A wait on one pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blocking {
    /// The node of the pod: what the drain is draining.
    pub node: String,
    /// First refusal of the current wait, and the latest.
    pub since: Timestamp,
    pub last: Timestamp,
    pub requested_by: Option<String>,
}

/// `drain of node-3, 12m`.
pub fn describe(b: &Blocking, now: Timestamp) -> String {
    format!("drain of {}, {}", b.node, waited(b, now))
}

/// How long the drain has waited: `45s`, `12m`, `3h5m`, `2d4h`.
pub fn waited(b: &Blocking, now: Timestamp) -> String {
    age((now.as_second() - b.since.as_second()).max(0) as u64)
}

fn age(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}

/// Waits by `(namespace, pod)` from the events, for pods on `node_of`'s
/// nodes. Several series (replicas, requesters) of one pod merge: the
/// earliest start of those still waiting, the latest refusal.
pub fn waits(
    events: &[Event],
    node_of: impl Fn(&str, &str) -> Option<String>,
    now: Timestamp,
) -> BTreeMap<(String, String), Blocking> {
    let mut out: BTreeMap<(String, String), Blocking> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.reason.as_deref() == Some(REASON))
    {
        let Some(r) = &e.regarding else { continue };
        let (Some(ns), Some(pod)) = (r.namespace.clone(), r.name.clone()) else {
            continue;
        };
        let Some(first) = e.event_time.as_ref().map(|t| t.0) else {
            continue;
        };
        let last = e
            .series
            .as_ref()
            .map(|s| s.last_observed_time.0)
            .unwrap_or(first)
            .max(first);
        if !waiting(last, now) {
            continue;
        }
        let Some(node) = node_of(&ns, &pod) else {
            continue;
        };
        let by = e.note.as_deref().and_then(requester).map(str::to_string);
        let b = Blocking {
            node,
            since: first,
            last,
            requested_by: by,
        };
        out.entry((ns, pod))
            .and_modify(|o| {
                if b.since < o.since {
                    o.since = b.since;
                }
                if b.last > o.last {
                    o.last = b.last;
                    o.requested_by = b.requested_by.clone();
                }
            })
            .or_insert(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn event(pod: &str, first: &str, last: Option<&str>, by: &str) -> Event {
        let mut e = json!({
            "metadata": {"name": format!("{pod}.1"), "namespace": "ops"},
            "eventTime": first,
            "reason": "EvictionBlocked",
            "regarding": {"kind": "Pod", "namespace": "ops", "name": pod},
            "note": sessionguard_core::drain::blocked_note(by, "n1", "ops/x has 1 login"),
        });
        if let Some(l) = last {
            e["series"] = json!({"count": 4, "lastObservedTime": l});
        }
        serde_json::from_value(e).unwrap()
    }

    #[test]
    fn a_recent_series_blocks_and_an_old_one_does_not() {
        let now = ts("2026-12-02T13:20:00Z");
        let evs = [
            event(
                "db-0",
                "2026-12-02T13:08:00Z",
                Some("2026-12-02T13:19:55Z"),
                "admin",
            ),
            event(
                "old-0",
                "2026-12-02T12:00:00Z",
                Some("2026-12-02T13:00:00Z"),
                "admin",
            ),
        ];
        let w = waits(&evs, |_, _| Some("n1".into()), now);
        assert_eq!(w.len(), 1, "{w:?}");
        let b = &w[&("ops".to_string(), "db-0".to_string())];
        assert_eq!(b.requested_by.as_deref(), Some("admin"));
        assert_eq!(describe(b, now), "drain of n1, 12m");
    }

    #[test]
    fn series_of_one_pod_merge_and_young_waits_count_seconds() {
        let now = ts("2026-12-02T13:20:00Z");
        let evs = [
            event("db-0", "2026-12-02T13:19:40Z", None, "autoscaler"),
            event(
                "db-0",
                "2026-12-02T13:19:30Z",
                Some("2026-12-02T13:19:50Z"),
                "drainer",
            ),
        ];
        let w = waits(&evs, |_, _| Some("n1".into()), now);
        let b = &w[&("ops".to_string(), "db-0".to_string())];
        assert_eq!(b.since, ts("2026-12-02T13:19:30Z"));
        assert_eq!(
            b.requested_by.as_deref(),
            Some("drainer"),
            "the latest refusal's"
        );
        assert_eq!(describe(b, now), "drain of n1, 30s");
        assert!(
            waits(&evs, |_, _| None, now).is_empty(),
            "pod gone: nothing"
        );
    }
}
