//! The one error type of the e2e crate.

use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::errno::Errno,
    },

    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),

    #[error("YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),

    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),

    #[error("{} is missing: run `make tools` (or point SESSIONGUARD_BIN_DIR at the built tools)", .0.display())]
    MissingTool(PathBuf),

    #[error("{name} exited before it was ready ({status}); its log is {}", log.display())]
    Exited {
        name: String,
        status: String,
        log: PathBuf,
    },

    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },

    #[error("{0}")]
    Invalid(String),
}

/// Attaches "what we were doing" to I/O and syscall errors, so a failure names its file.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            what: what(),
            source,
        })
    }
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sys {
            what: what(),
            source,
        })
    }
}

/// `Ok` if `cond`, else an error saying `what` should have held: the one
/// assertion every e2e test returns through (a test's `?` then dumps state).
pub fn check(cond: bool, what: impl Into<String>) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Invalid(what.into()))
    }
}
