use thiserror::Error;

/// Everything kubectl-sessions reports to the user. `exit_code` follows
/// kubectl: 1 for failures, 2 for bad usage.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("pod {namespace}/{pod} not found")]
    PodNotFound { namespace: String, pod: String },
    #[error("pod {pod} not found in any namespace")]
    PodNotFoundAnywhere { pod: String },
    #[error(
        "pod {namespace}/{pod} was never interacted with (no sessionguard.io/first-interaction annotation); it has no eviction time to extend"
    )]
    NeverInteracted { namespace: String, pod: String },
    #[error("pod {namespace}/{pod}: {reason}")]
    Pod {
        namespace: String,
        pod: String,
        reason: String,
    },
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("{op}: {source}")]
    Kube {
        op: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Core(#[from] sessionguard_core::Error),
    #[error("{failed} of {total} pod(s) could not be extended")]
    Partial { failed: usize, total: usize },
    #[error("encoding output: {0}")]
    Encode(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Core(_) => 2,
            _ => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
