//! The agent → controller report: a node's full session snapshot.
//!
//! Reports are level-triggered: each one replaces everything the controller
//! knew about that node, so a lost or reordered report heals with the next.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::session::TIMESTAMP_MAX;
use crate::{Error, Session};

// Bounds of a report, beside those of its sessions (`session::*_MAX`). The
// SessionReport schema, `ReportLimits::default()` and the agent's encoder all
// read these, so the three cannot drift apart.

/// A node runs at most a few hundred pods; 4096 terminals is far past any
/// honest node.
pub const SESSIONS_MAX: usize = 4096;
/// The whole report's compact JSON. etcd refuses an object over 1.5 MiB (its
/// default `--max-request-bytes`), and the stored object adds metadata and
/// managedFields; a third of that leaves room, and still holds about 1500
/// sessions with short argv. The schema cannot express a total, so the agent
/// bounds to it ([`Report::bounded`]) and [`Report::validate`] checks it.
pub const REPORT_BYTES_MAX: usize = 512 << 10;
/// A node name is an RFC 1123 subdomain.
pub const NODE_NAME_MAX: usize = 253;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    /// The node this snapshot speaks for. The controller checks it against the
    /// node the authenticated agent runs on.
    #[schemars(length(min = 1, max = NODE_NAME_MAX))]
    pub node: String,
    /// When the scan that produced it finished.
    #[schemars(length(max = TIMESTAMP_MAX))]
    pub generated_at: jiff::Timestamp,
    /// Increases with every scan of one agent process; lets the controller drop
    /// a stale report that overtook a newer one.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub sequence: u64,
    #[schemars(length(max = SESSIONS_MAX))]
    pub sessions: Vec<Session>,
}

/// Bounds the controller enforces on an incoming report.
#[derive(Clone, Copy, Debug)]
pub struct ReportLimits {
    pub max_bytes: usize,
    pub max_sessions: usize,
}

impl Default for ReportLimits {
    fn default() -> Self {
        Self {
            max_bytes: REPORT_BYTES_MAX,
            max_sessions: SESSIONS_MAX,
        }
    }
}

impl Report {
    /// Parses and validates a report body: size, JSON shape, node name, counts.
    pub fn from_json(body: &[u8], limits: ReportLimits) -> Result<Self, Error> {
        if body.len() > limits.max_bytes {
            return Err(Error::Report(format!(
                "body is {} bytes, over the {} byte limit",
                body.len(),
                limits.max_bytes
            )));
        }
        let report: Report = serde_json::from_slice(body)
            .map_err(|e| Error::Report(format!("malformed JSON: {e}")))?;
        report.validate(limits)?;
        Ok(report)
    }

    /// The checks of the SessionReport schema (field bounds, counts) plus the
    /// total size, which the schema cannot express.
    pub fn validate(&self, limits: ReportLimits) -> Result<(), Error> {
        if !is_dns_subdomain(&self.node) {
            return Err(Error::Report(format!(
                "node {:?} is not a valid node name (RFC 1123 subdomain)",
                self.node
            )));
        }
        if self.sessions.len() > limits.max_sessions {
            return Err(Error::Report(format!(
                "{} sessions, over the limit of {}",
                self.sessions.len(),
                limits.max_sessions
            )));
        }
        for s in &self.sessions {
            s.validate()?;
        }
        let bytes = encoded_len(self);
        if bytes > limits.max_bytes {
            return Err(Error::Report(format!(
                "encodes to {bytes} bytes, over the {} byte limit",
                limits.max_bytes
            )));
        }
        Ok(())
    }

    /// Sessions that count as logins (consoles never do).
    pub fn logins(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter().filter(|s| s.is_login())
    }
}

/// The length of `value`'s compact JSON, as the agent sends it; counted, not
/// built.
pub(crate) fn encoded_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Only a failing writer or a map with non-string keys can fail, and a
    // report has neither.
    let _ = serde_json::to_writer(&mut n, value);
    n.0
}

/// RFC 1123 subdomain, as Kubernetes requires of node names.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= NODE_NAME_MAX
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(node: &str, n: usize) -> String {
        let s = r#"{"pod_uid":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","container_id":"CID","tty":"pts/3",
            "pid":42,"command":"bash","argv":["bash","-l"],"uid":1000,
            "started_at":"2026-11-24T01:00:00Z","processes":2}"#
            .replace("CID", &"ab".repeat(32));
        let sessions = vec![s; n].join(",");
        format!(
            r#"{{"node":"{node}","generated_at":"2026-11-24T01:00:01Z","sessions":[{sessions}]}}"#
        )
    }

    #[test]
    fn accepts_a_valid_report() {
        let r = Report::from_json(body("node-a", 2).as_bytes(), ReportLimits::default()).unwrap();
        assert_eq!(r.node, "node-a");
        assert_eq!(r.logins().count(), 2);
        assert_eq!(r.sessions[0].argv, ["bash", "-l"]);
    }

    #[test]
    fn rejects_bad_reports_with_reasons() {
        let limits = ReportLimits {
            max_bytes: 10_000,
            max_sessions: 3,
        };
        let cases = [
            (body("Node_A", 1), "not a valid node name"),
            (body("node-a", 4), "over the limit of 3"),
            (body("node-a", 40), "byte limit"),
            ("{\"node\":".to_string(), "malformed JSON"),
        ];
        for (input, want) in cases {
            let err = Report::from_json(input.as_bytes(), limits)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn validate_checks_fields_and_the_encoded_size() {
        let r = Report::from_json(body("node-a", 3).as_bytes(), ReportLimits::default()).unwrap();
        let small = ReportLimits {
            max_bytes: encoded_len(&r) - 1,
            ..ReportLimits::default()
        };
        let err = r.validate(small).unwrap_err().to_string();
        assert!(err.contains("over the"), "{err}");
        let mut long = r.clone();
        long.sessions[1].argv = vec!["x".into(); crate::session::ARGV_ITEMS_MAX + 1];
        let err = long
            .validate(ReportLimits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("argv has 65 items, over 64"), "{err}");
        r.validate(ReportLimits::default()).unwrap();
    }

    #[test]
    fn dns_subdomains() {
        assert!(is_dns_subdomain("ip-10-0-0-1.ec2.internal"));
        for bad in ["", "-a", "a-", "A", "a..b", &"a".repeat(64)] {
            assert!(!is_dns_subdomain(bad), "{bad}");
        }
    }
}
