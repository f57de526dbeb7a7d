//! Telling the person in the terminal (`notify.terminal`, off by default):
//! the notices the controller publishes in a node's `SessionReport` status,
//! the one line each becomes, and how often an agent may write one.
//!
//! The controller decides *what* to tell (a drain waiting on the session, its
//! protection nearing `--max-protection`); the agent, which alone reaches the
//! terminal, learns the notices from the answer to its own report write (no
//! read right on anything) and decides *when* (at most one line per session
//! per `--notify-interval`). The line is composed here, once, from
//! [`printable`] parts, and bounded: a pod or user name chosen by a tenant
//! must not become an escape sequence on someone's screen.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::interaction::{plus, rfc3339};
use crate::printable::printable;
use crate::session::{TIMESTAMP_MAX, TTY_MAX};
use crate::{PodUid, Session};

/// Notices in one node's status. One per login session of a waiting pod;
/// a node with more waiting sessions than this tells the first ones (by
/// reason, then pod and terminal) and the rest wait for a later round.
pub const NOTICES_MAX: usize = 64;
/// Characters in one line: one or two rows of a terminal, no wall of text.
pub const LINE_MAX: usize = 320;
/// Characters of a pod, node or user name inside a line.
const NAME_MAX: usize = 80;

/// What the person is told about.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Reason {
    /// A drain (an eviction of the pod) has been refused for the session for
    /// longer than the controller's `--notify-terminal-after`.
    DrainWaiting,
    /// Protection passed `--max-protection-warn-at` of its cap: it ends soon
    /// although the session continues.
    ProtectionExpiring,
}

/// One line for one session's terminal, published by the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Notice {
    pub pod_uid: PodUid,
    /// The session's terminal, as its agent reported it (`pts/3`).
    #[schemars(length(max = TTY_MAX))]
    pub tty: String,
    /// The session leader, as reported: the agent writes only to a session it
    /// still sees with this leader (a recycled terminal is someone else's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(max = u32::MAX), extend("format" = "int64"))]
    pub pid: Option<u32>,
    pub reason: Reason,
    /// Printable characters only, at most 320 (`LINE_MAX`).
    #[schemars(length(max = LINE_MAX))]
    pub line: String,
    /// Since when the reason holds (the drain's first refusal, the warning).
    #[schemars(length(max = TIMESTAMP_MAX))]
    pub since: Timestamp,
}

/// The `status` of a `SessionReport`: written by the controller only (the
/// status subresource; agents may not), read back by the agent from the
/// answer to its own write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReportStatus {
    /// What the node's agent writes into its sessions' terminals (notify.terminal).
    // Read leniently: a notice this version cannot read (a newer controller's
    // reason) is skipped, so it never makes the agent's whole write answer
    // unreadable.
    #[serde(default, deserialize_with = "readable_notices")]
    #[schemars(length(max = NOTICES_MAX))]
    pub notices: Vec<Notice>,
}

fn readable_notices<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Notice>, D::Error> {
    let raw: Vec<serde_json::Value> = Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect())
}

/// What one pod's sessions are to be told; [`for_node`] fans it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNotice {
    pub pod_uid: String,
    pub reason: Reason,
    pub line: String,
    pub since: Timestamp,
}

/// The line for a drain that waits on a login: which node, why, since when,
/// what to do.
pub fn drain_line(node: &str, pod: &str, requested_by: &str, since: Timestamp) -> String {
    let by = if requested_by.is_empty() {
        "an unknown user"
    } else {
        requested_by
    };
    printable(
        &format!(
            "sessionguard: node {} is being drained and has waited on this login since {}: the eviction of pod {} (asked by {}) is refused while you are logged in. Please save your work and log out; the drain then continues.",
            printable(node, NAME_MAX),
            rfc3339(since),
            printable(pod, NAME_MAX),
            printable(by, NAME_MAX),
        ),
        LINE_MAX,
    )
}

/// The line for protection nearing its cap (`cap` as `core::cap::Cap`
/// displays it).
pub fn expiring_line(node: &str, pod: &str, end: Timestamp, cap: &str) -> String {
    printable(
        &format!(
            "sessionguard: protection of pod {} on node {} ends at {} ({}) although you are logged in; after that the pod may be evicted (e.g. by a drain). Please save your work and log out before then.",
            printable(pod, NAME_MAX),
            printable(node, NAME_MAX),
            rfc3339(end),
            printable(cap, NAME_MAX),
        ),
        LINE_MAX,
    )
}

/// Whether a drain that started waiting at `first` is to be told at `now`.
pub fn drain_due(first: Timestamp, after: Duration, now: Timestamp) -> bool {
    now >= plus(first, after)
}

/// A node's notices: each pod notice for each of that pod's login sessions
/// (`sessions`: the node's reported sessions), drains first, then by pod and
/// terminal, at most [`NOTICES_MAX`]. The order is total, so the same
/// situation always gives the same list and the controller writes only when
/// something changed.
pub fn for_node(pods: &[PodNotice], sessions: &[Session]) -> Vec<Notice> {
    let mut out: Vec<Notice> = pods
        .iter()
        .flat_map(|p| {
            sessions
                .iter()
                .filter(move |s| s.is_login() && s.pod_uid.as_str() == p.pod_uid)
                .map(move |s| Notice {
                    pod_uid: s.pod_uid.clone(),
                    tty: s.tty.clone(),
                    pid: Some(s.pid),
                    reason: p.reason,
                    line: printable(&p.line, LINE_MAX),
                    since: p.since,
                })
        })
        .collect();
    out.sort_by(|a, b| {
        (a.reason, a.pod_uid.as_str(), &a.tty, a.pid).cmp(&(
            b.reason,
            b.pod_uid.as_str(),
            &b.tty,
            b.pid,
        ))
    });
    out.dedup_by(|a, b| {
        (a.reason, &a.pod_uid, &a.tty, a.pid) == (b.reason, &b.pod_uid, &b.tty, b.pid)
    });
    out.truncate(NOTICES_MAX);
    out
}

/// The bytes written to the terminal: the line, made printable and bounded
/// again (the agent trusts nothing it reads back), on a line of its own as
/// `wall` does (the cursor may be mid-line in the person's prompt).
pub fn terminal_bytes(line: &str) -> Vec<u8> {
    format!("\r\n{}\r\n", printable(line, LINE_MAX)).into_bytes()
}

/// At most one line per key (a session) per interval, however often the
/// notices arrive. Keys whose interval has passed are forgotten, so the map
/// holds at most the sessions told within one interval.
#[derive(Debug)]
pub struct RateLimit<K> {
    interval: Duration,
    last: HashMap<K, Instant>,
}

impl<K: Eq + Hash> RateLimit<K> {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: HashMap::new(),
        }
    }

    /// Whether a line for `key` may be written at `now`; if so, it counts as
    /// written (a failed write also waits a full interval: a terminal that
    /// refuses is not hammered).
    pub fn admit(&mut self, key: K, now: Instant) -> bool {
        let interval = self.interval;
        self.last
            .retain(|_, t| now.checked_duration_since(*t).is_none_or(|d| d < interval));
        if self.last.contains_key(&key) {
            return false;
        }
        self.last.insert(key, now);
        true
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{session, ts};

    const POD_A: &str = "0f1e2d3c-4b5a-6978-8796-00000000000a";
    const POD_B: &str = "0f1e2d3c-4b5a-6978-8796-00000000000b";

    #[test]
    fn the_drain_line_says_which_node_why_since_when_and_what_to_do() {
        assert_eq!(
            drain_line(
                "node-3",
                "ops/db-0",
                "system:serviceaccount:kube-system:kured",
                ts("2026-12-02T13:00:00Z")
            ),
            "sessionguard: node node-3 is being drained and has waited on this login since 2026-12-02T13:00:00Z: the eviction of pod ops/db-0 (asked by system:serviceaccount:kube-system:kured) is refused while you are logged in. Please save your work and log out; the drain then continues."
        );
        assert!(
            drain_line("n", "p", "", ts("2026-12-02T13:00:00Z"))
                .contains("asked by an unknown user")
        );
    }

    #[test]
    fn the_expiring_line_says_when_protection_ends() {
        assert_eq!(
            expiring_line(
                "node-3",
                "ops/db-0",
                ts("2026-12-02T15:00:00Z"),
                "--max-protection 2h"
            ),
            "sessionguard: protection of pod ops/db-0 on node node-3 ends at 2026-12-02T15:00:00Z (--max-protection 2h) although you are logged in; after that the pod may be evicted (e.g. by a drain). Please save your work and log out before then."
        );
    }

    #[test]
    fn hostile_names_cannot_reach_the_terminal_raw_and_lines_are_bounded() {
        let user = format!("evil\u{1b}]0;owned\u{7}\r\n{}", "x".repeat(500));
        let l = drain_line(
            "node-3",
            "ops/db\u{202e}0",
            &user,
            ts("2026-12-02T13:00:00Z"),
        );
        assert!(!l.chars().any(|c| c.is_control()), "{l:?}");
        assert!(l.contains("evil\\u{1b}]0;owned\\u{7}\\u{d}\\u{a}"), "{l}");
        assert!(l.contains("ops/db\\u{202e}0"), "{l}");
        assert!(l.chars().count() <= LINE_MAX);
        let bytes = terminal_bytes(&format!("a\u{1b}[2Jb{}", "y".repeat(1000)));
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("\r\na\\u{1b}[2Jb") && text.ends_with("…\r\n"),
            "{text:?}"
        );
        assert_eq!(
            text.trim_end_matches("\r\n")
                .trim_start_matches("\r\n")
                .chars()
                .count(),
            LINE_MAX
        );
        assert_eq!(terminal_bytes("hi"), b"\r\nhi\r\n");
    }

    #[test]
    fn a_drain_is_told_after_the_configured_wait() {
        let first = ts("2026-12-02T13:00:00Z");
        let after = Duration::from_secs(120);
        assert!(!drain_due(first, after, ts("2026-12-02T13:01:59Z")));
        assert!(drain_due(first, after, ts("2026-12-02T13:02:00Z")));
        assert!(drain_due(first, Duration::ZERO, first));
    }

    #[test]
    fn notices_go_to_each_login_of_the_pod_in_a_stable_order() {
        let sessions = [
            session().in_pod(POD_B).tty("pts/2").build(),
            session().in_pod(POD_A).tty("pts/1").build(),
            session().in_pod(POD_A).tty("pts/0").console().build(),
            session().in_pod(POD_A).tty("pts/4").build(),
        ];
        let since = ts("2026-12-02T13:00:00Z");
        let pods = [
            PodNotice {
                pod_uid: POD_A.into(),
                reason: Reason::ProtectionExpiring,
                line: "cap".into(),
                since,
            },
            PodNotice {
                pod_uid: POD_A.into(),
                reason: Reason::DrainWaiting,
                line: "drain".into(),
                since,
            },
            PodNotice {
                pod_uid: "0f1e2d3c-4b5a-6978-8796-0000000000ff".into(),
                reason: Reason::DrainWaiting,
                line: "no session here".into(),
                since,
            },
        ];
        let ns = for_node(&pods, &sessions);
        let got: Vec<(Reason, &str, &str)> = ns
            .iter()
            .map(|n| (n.reason, n.tty.as_str(), n.line.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (Reason::DrainWaiting, "pts/1", "drain"),
                (Reason::DrainWaiting, "pts/4", "drain"),
                (Reason::ProtectionExpiring, "pts/1", "cap"),
                (Reason::ProtectionExpiring, "pts/4", "cap"),
            ],
            "the console is not told; a pod without sessions tells nobody"
        );
        assert_eq!(ns[0].pid, Some(42));
        let mut reversed = pods.to_vec();
        reversed.reverse();
        assert_eq!(for_node(&reversed, &sessions), ns, "order-independent");
    }

    #[test]
    fn a_node_publishes_a_bounded_number_of_notices() {
        let sessions: Vec<Session> = (0..NOTICES_MAX + 10)
            .map(|i| session().in_pod(POD_A).tty(&format!("pts/{i}")).build())
            .collect();
        let pods = [PodNotice {
            pod_uid: POD_A.into(),
            reason: Reason::DrainWaiting,
            line: "x".into(),
            since: ts("2026-12-02T13:00:00Z"),
        }];
        assert_eq!(for_node(&pods, &sessions).len(), NOTICES_MAX);
    }

    #[test]
    fn one_line_per_session_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = RateLimit::new(s(300));
        assert!(r.admit("pts/1", t0));
        assert!(!r.admit("pts/1", t0 + s(1)), "the next heartbeat");
        assert!(r.admit("pts/2", t0 + s(1)), "another session is its own");
        assert!(!r.admit("pts/1", t0 + s(299)));
        assert!(
            r.admit("pts/1", t0 + s(300)),
            "a reminder after the interval"
        );
        assert_eq!(r.len(), 2);
        assert!(r.admit("pts/3", t0 + s(900)));
        assert_eq!(r.len(), 1, "sessions told long ago are forgotten");
    }

    #[test]
    fn the_status_reads_what_the_schema_allows() {
        let st: ReportStatus = serde_json::from_value(serde_json::json!({
            "notices": [{
                "pod_uid": POD_A, "tty": "pts/1", "pid": 7, "reason": "DrainWaiting",
                "line": "hello", "since": "2026-12-02T13:00:00Z"
            }, {
                "pod_uid": POD_B, "tty": "pts/2", "reason": "ProtectionExpiring",
                "line": "bye", "since": "2026-12-02T13:00:00Z"
            }]
        }))
        .unwrap();
        assert_eq!(st.notices[0].pid, Some(7));
        assert_eq!(st.notices[1].pid, None);
        let empty: ReportStatus = serde_json::from_value(serde_json::json!({})).unwrap();
        assert!(empty.notices.is_empty());
        let newer: ReportStatus = serde_json::from_value(serde_json::json!({
            "notices": [{
                "pod_uid": POD_A, "tty": "pts/1", "reason": "SomethingNew",
                "line": "?", "since": "2026-12-02T13:00:00Z"
            }, {
                "pod_uid": POD_A, "tty": "pts/1", "reason": "DrainWaiting",
                "line": "ok", "since": "2026-12-02T13:00:00Z"
            }]
        }))
        .unwrap();
        assert_eq!(
            newer.notices.len(),
            1,
            "an unknown notice is skipped, not fatal"
        );
        assert_eq!(newer.notices[0].line, "ok");
    }
}
