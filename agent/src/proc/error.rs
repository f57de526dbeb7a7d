//! The one error every `/proc` parser returns. It knows nothing of HTTP or
//! the API server, so the parsers can be read, tested and reused apart from
//! the daemon; the agent's crate error wraps it.

use procfs_core::ProcError;
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

    /// procfs-core reports a missing or unparsable field as an "internal
    /// error" that asks for a bug report; the innermost message and the
    /// source line (which tells the field) are kept, the plea is not. Its
    /// parsers read from the agent's buffer, never from a path, so no
    /// not-found error (a vanished pid) can come through here.
    pub(crate) fn from_procfs_core(file: &'static str, e: ProcError) -> Self {
        let reason = match e {
            ProcError::InternalError(e) => {
                let inner = e.msg.lines().last().unwrap_or_default();
                let inner = inner.trim_start_matches("Internal Unwrap Error: ");
                let what = if inner == "NoneError" {
                    "a field is missing"
                } else {
                    inner
                };
                let source = e.file.rsplit('/').next().unwrap_or(e.file);
                format!("{what} (procfs-core {source}:{})", e.line)
            }
            other => other.to_string(),
        };
        Self::new(file, reason)
    }
}
