//! ServiceAccount tokens bound to a pod, as the kubelet projects them into a pod's
//! volume: the API server adds the pod's name and UID and, for a pod bound to a node,
//! the node's name and UID, which is how a report can be tied to its node.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::controlplane::ClusterInfo;
use crate::controlplane::apiserver::SERVICE_ACCOUNT_ISSUER;
use crate::error::Context;
use crate::{Error, Result};

/// Requests a token for ServiceAccount `sa` bound to `pod` (TokenRequest API,
/// boundObjectRef kind Pod). `audiences` empty means the API server's own audience.
pub async fn pod_token(
    client: &kube::Client,
    sa: &str,
    pod: &Pod,
    audiences: &[&str],
    seconds: i64,
) -> Result<String> {
    let ns = pod
        .metadata
        .namespace
        .as_deref()
        .ok_or_else(|| Error::Invalid("pod has no namespace".into()))?;
    let audiences: Vec<&str> = if audiences.is_empty() {
        vec![SERVICE_ACCOUNT_ISSUER]
    } else {
        audiences.to_vec()
    };
    let req: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": audiences,
            "expirationSeconds": seconds,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.metadata.name,
                "uid": pod.metadata.uid,
            },
        },
    }))?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let resp: TokenRequest = sas
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await?;
    resp.status
        .map(|s| s.token)
        .ok_or_else(|| Error::Invalid("TokenRequest answered without a token".into()))
}

/// Writes `token` to `<dir>/<name>.token` and a kubeconfig `<dir>/<name>.kubeconfig` that
/// reads it (`tokenFile`, re-read on change, like a projected token). Returns the kubeconfig.
pub fn write_token_kubeconfig(
    info: &ClusterInfo,
    dir: &Path,
    name: &str,
    token: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let token_file = dir.join(format!("{name}.token"));
    std::fs::write(&token_file, token).ctx(|| format!("writing {}", token_file.display()))?;
    let kubeconfig = dir.join(format!("{name}.kubeconfig"));
    info.write_token_kubeconfig(&kubeconfig, name, &token_file)?;
    Ok(kubeconfig)
}
