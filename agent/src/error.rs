use std::path::PathBuf;

use thiserror::Error;

use crate::proc::{Filtered, ParseError};

/// Everything the agent can fail at. Per-pid parse and read errors are counted
/// and skipped by the scanner; they never fail a whole scan.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a proc filesystem root: {reason} (pass --proc-root pointing at the host's /proc)"
    )]
    ProcRoot { path: PathBuf, reason: String },
    /// The proc root hides processes: a scan of it would under-report.
    #[error("{path} hides processes ({}): {filtered}", filtered.reason.label())]
    Filtered { path: PathBuf, filtered: Filtered },
    #[error("HTTP server: {0}")]
    Http(String),
    #[error("Kubernetes API: {0}")]
    Kube(String),
    /// The API server refused a write as invalid (400, 413, 422).
    #[error("the API server refused the report ({code}): {reason}")]
    Refused { code: u16, reason: String },
    #[error(transparent)]
    Core(#[from] sessionguard_core::Error),
}

impl Error {
    /// The label used for the scan-errors metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Parse(e) => e.kind(),
            Self::Io { .. } => "io",
            Self::ProcRoot { .. } => "proc_root",
            Self::Filtered { .. } => "filtered",
            Self::Http(_) => "http",
            Self::Kube(_) => "kube",
            Self::Refused { .. } => "refused",
            Self::Core(_) => "invalid_id",
        }
    }
}
