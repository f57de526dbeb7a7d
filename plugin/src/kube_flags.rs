//! The standard kubeconfig flags and the client they make: what every
//! command connects with (its own module, so the commands that use it do not
//! depend on each other).

use clap::Args;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The standard kubeconfig flags.
#[derive(Debug, Args)]
pub struct KubeFlags {
    /// Path to the kubeconfig file.
    #[arg(long, global = true, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, env = "SESSIONGUARD_CONTEXT")]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true, env = "SESSIONGUARD_CLUSTER")]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true, env = "SESSIONGUARD_USER")]
    pub user: Option<String>,
    /// Namespace (default: the context's).
    #[arg(short = 'n', long, global = true, env = "SESSIONGUARD_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Reads `--kubeconfig` (or KUBECONFIG): like kubectl, a list of files
/// separated by the platform's path separator, merged in order (the first
/// file to set a value wins). Without it, `~/.kube/config`.
pub fn read_kubeconfig(path: Option<&std::path::Path>) -> Result<Kubeconfig> {
    let kerr = |e: kube::config::KubeconfigError| Error::Kubeconfig(e.to_string());
    let Some(path) = path else {
        return Kubeconfig::read().map_err(kerr);
    };
    let mut merged: Option<Kubeconfig> = None;
    for file in std::env::split_paths(path.as_os_str()).filter(|p| !p.as_os_str().is_empty()) {
        let kc = Kubeconfig::read_from(&file)
            .map_err(|e| Error::Kubeconfig(format!("{}: {e}", file.display())))?;
        merged = Some(match merged {
            None => kc,
            Some(m) => m.merge(kc).map_err(kerr)?,
        });
    }
    merged.ok_or_else(|| Error::Usage(format!("--kubeconfig {path:?} names no file")))
}

pub async fn client(flags: &KubeFlags) -> Result<(Client, String)> {
    let kc = read_kubeconfig(flags.kubeconfig.as_deref())?;
    let opts = KubeConfigOptions {
        context: flags.context.clone(),
        cluster: flags.cluster.clone(),
        user: flags.user.clone(),
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let ns = flags
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok((client, ns))
}
