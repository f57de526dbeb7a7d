//! What the agent asks the notifier, over the Unix socket the two containers
//! share: one JSON line per connection (`{"pid":…,"tty":"pts/N","line":…}`),
//! answered by one outcome word and a newline.
//!
//! The notifier trusts nothing in it: the line is made printable and cut to
//! `core::notice`'s length on its side (`terminal_bytes`), the terminal is
//! checked against the process's own `stat`, and a request longer than
//! [`REQUEST_MAX`] is refused unread.

use serde::{Deserialize, Serialize};

/// More than any valid request (a pid, `pts/N`, a line cut to 240 characters
/// of at most 4 bytes each, JSON escaping): anything longer is not one.
pub const REQUEST_MAX: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub pid: u32,
    pub tty: String,
    pub line: String,
}

/// Every answer the notifier gives, and the agent's own outcomes when it gets
/// none; each is a label value of `sessionguard_agent_terminal_notices_total`.
pub const OUTCOMES: &[&str] = &[
    "written",
    "partial",
    "write_failed",
    "open_failed",
    "no_tty",
    "bad_request",
    "notifier_unavailable",
    "notifier_error",
];

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("a request always serialises");
        v.push(b'\n');
        v
    }

    /// One request from the bytes read (up to and including the newline).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > REQUEST_MAX {
            return None;
        }
        let line = bytes.strip_suffix(b"\n")?;
        serde_json::from_slice(line).ok()
    }
}

/// The outcome in an answer, as one of [`OUTCOMES`]; anything else is the
/// notifier's error (a newer notifier, or not a notifier at all).
pub fn outcome(answer: &[u8]) -> &'static str {
    let word = std::str::from_utf8(answer).unwrap_or("").trim_end();
    OUTCOMES
        .iter()
        .find(|o| **o == word)
        .copied()
        .unwrap_or("notifier_error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_nothing_else_decodes() {
        let r = Request {
            pid: 42,
            tty: "pts/3".into(),
            line: "sessionguard: node n is being drained".into(),
        };
        assert_eq!(Request::decode(&r.encode()), Some(r));
        for bad in [
            &b"{\"pid\":1,\"tty\":\"pts/0\",\"line\":\"x\"}"[..], // no newline
            b"{\"pid\":-1,\"tty\":\"pts/0\",\"line\":\"x\"}\n",
            b"{\"pid\":1,\"tty\":\"pts/0\",\"line\":\"x\",\"path\":\"/etc/shadow\"}\n",
            b"{\"pid\":1,\"tty\":\"pts/0\"}\n",
            b"not json\n",
        ] {
            assert_eq!(
                Request::decode(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(
            "{{\"pid\":1,\"tty\":\"pts/0\",\"line\":\"{}\"}}\n",
            "x".repeat(REQUEST_MAX)
        );
        assert_eq!(Request::decode(long.as_bytes()), None);
    }

    #[test]
    fn answers_are_known_outcomes_or_an_error() {
        assert_eq!(outcome(b"written\n"), "written");
        assert_eq!(outcome(b"no_tty\n"), "no_tty");
        assert_eq!(outcome(b"rm -rf /\n"), "notifier_error");
        assert_eq!(outcome(b""), "notifier_error");
    }
}
