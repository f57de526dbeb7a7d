//! kubeconfig files: client certificates for the admin and the control-plane
//! components, token files for workloads (the agent's ServiceAccount token).

use std::path::Path;

use serde_json::json;

use super::certs::CertFiles;
use crate::Result;
use crate::error::Context;

/// How a kubeconfig user authenticates.
#[derive(Clone, Copy, Debug)]
pub enum Credentials<'a> {
    Cert(&'a CertFiles),
    /// A file holding a bearer token; re-read by clients when it changes.
    TokenFile(&'a Path),
}

/// Writes a single-context kubeconfig for `server` trusting `ca`.
pub fn write(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    creds: Credentials<'_>,
) -> Result<()> {
    let auth = match creds {
        Credentials::Cert(files) => json!({
            "client-certificate": files.cert,
            "client-key": files.key,
        }),
        Credentials::TokenFile(file) => json!({ "tokenFile": file }),
    };
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "sessionguard", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{ "name": user, "user": auth }],
        "contexts": [{ "name": "sessionguard", "context": {
            "cluster": "sessionguard",
            "user": user,
        }}],
        "current-context": "sessionguard",
    });
    let text = serde_yaml::to_string(&doc)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).ctx(|| format!("writing {}", path.display()))
}

/// A client for the kubeconfig at `path`.
///
/// kube 5 retries 429/503/504 up to 15 times with exponential backoff by default, which
/// turns a PDB's refused eviction (429) into minutes of silence: tests and simulated
/// nodes must see the API server's answer as it is, so that retry layer is off.
pub async fn client(path: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}
