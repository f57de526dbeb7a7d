//! The one error every `/proc` parser returns. It knows nothing of HTTP or
//! the API server, so the parsers can be read, tested and reused apart from
//! the daemon; the agent's crate error wraps it.

use thiserror::Error;

#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("malformed {file}: {reason}")]
pub struct ParseError {
    file: &'static str,
    reason: String,
}

impl ParseError {
    pub fn new(file: &'static str, reason: impl Into<String>) -> Self {
        Self {
            file,
            reason: reason.into(),
        }
    }

    /// What was malformed (`stat`, `status`, `cgroup`, `/proc/stat`,
    /// `/proc/uptime`, `starttime`): the label of the scan-errors metric.
    pub fn kind(&self) -> &'static str {
        self.file
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}
