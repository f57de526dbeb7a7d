use thiserror::Error;

/// Everything the controller can fail at. Reconcile errors are counted by
/// [`Error::kind`] and retried with backoff; none of them stop the process
/// except losing the Lease.
#[derive(Debug, Error)]
pub enum Error {
    #[error("kubernetes API call {op} failed: {source}")]
    Kube {
        op: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("kubernetes API call {op} timed out after {secs}s")]
    Timeout { op: &'static str, secs: u64 },
    #[error("not the leader: refusing to write ({op})")]
    NotLeader { op: &'static str },
    #[error("{0}")]
    Core(#[from] sessionguard_core::Error),
    #[error("watch of {resource} failed: {source}")]
    Watch {
        resource: &'static str,
        #[source]
        source: kube::runtime::watcher::Error,
    },
    #[error("leader election: {0}")]
    Leader(String),
    #[error("metrics server: {0}")]
    Server(#[from] std::io::Error),
    #[error("admission webhook: {0}")]
    Webhook(String),
    #[error("cleanup: {0}")]
    Cleanup(String),
    #[error(
        "admission policies no longer in force, stopping: {0} (restore them, e.g. helm upgrade; or run with --require-admission-policies=false)"
    )]
    PoliciesGone(String),
    #[error("{0} (set KUBECONFIG, or run in a pod with a service account)")]
    Credentials(String),
}

impl Error {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "api",
            Error::Timeout { .. } => "timeout",
            Error::NotLeader { .. } => "not_leader",
            Error::Core(_) => "invalid_data",
            Error::Watch { .. } => "watch",
            Error::Leader(_) => "leader",
            Error::Server(_) => "server",
            Error::Webhook(_) => "webhook",
            Error::Credentials(_) => "credentials",
            Error::Cleanup(_) => "cleanup",
            Error::PoliciesGone(_) => "policies_gone",
        }
    }

    /// The HTTP status of an API error, if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
