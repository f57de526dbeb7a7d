use thiserror::Error;

/// Everything the core's validators and parsers can reject.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "invalid pod UID {0:?}: expected 36 characters like 0f1e2d3c-...-..., or a 32-hex static pod hash"
    )]
    PodUid(String),
    #[error(
        "invalid container ID {0:?}: expected 64 lowercase hex characters without a runtime prefix"
    )]
    ContainerId(String),
    #[error(
        "invalid duration {input:?}: {reason}; use Go-style units such as 90s, 15m, 1h30m or 2d"
    )]
    Duration { input: String, reason: &'static str },
    #[error("report rejected: {0}")]
    Report(String),
}
