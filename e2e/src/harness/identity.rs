//! The controller's identity exactly as the Helm chart grants it, for tests that run
//! the real controller: the chart's `controller-rbac.yaml` and `controller-policy.yaml`
//! (the admission policies bound to its ServiceAccount), rendered with `helm
//! template`, applied in the test's namespace, and a kubeconfig with a token of its
//! ServiceAccount. A call the chart does not allow fails in every test that makes it,
//! not only in the chart's own install test.
//!
//! The release's full name is the test namespace, so the cluster-scoped ClusterRole
//! and binding never collide with another test's or a real install's; they are owned
//! by the test's Namespace object and garbage-collected with it.

use std::path::PathBuf;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use super::{TestEnv, tokens};
use crate::controlplane::apiserver::SERVICE_ACCOUNT_ISSUER;
use crate::{Error, Result, paths};

/// What a controller started with this identity must be told.
#[derive(Clone, Debug)]
pub struct ControllerIdentity {
    pub kubeconfig: PathBuf,
    /// `system:serviceaccount:<ns>:<sa>`: the username the API server sees.
    pub user: String,
    /// The chart's full name: the webhook configurations' name.
    pub fullname: String,
    /// The only Lease the chart's Role lets the controller update.
    pub lease: String,
    /// The only Secret it may read and update (webhook certificates).
    pub webhook_secret: String,
}

/// Renders and applies the chart's controller RBAC (with the webhook's rules if
/// `webhook`) for this test and returns the identity, with a new token. Calling it
/// again in the same test (a restarted controller) keeps the objects.
pub async fn chart_controller(env: &TestEnv, webhook: bool) -> Result<ControllerIdentity> {
    chart_controller_with(env, webhook, &[]).await
}

/// [`chart_controller`] as the chart grants it with more values set
/// (`key=value`, e.g. `notify.terminal.enabled=true`).
pub async fn chart_controller_with(
    env: &TestEnv,
    webhook: bool,
    values: &[&str],
) -> Result<ControllerIdentity> {
    let fullname = env.ns().to_string();
    let sa = apply_rbac(env, "controller-rbac.yaml", webhook, values)
        .await?
        .ok_or_else(|| Error::Invalid("controller-rbac.yaml has no ServiceAccount".into()))?;
    // The admission policies that narrow its pod patches and PDB writes, bound to
    // this ServiceAccount: every test under this identity runs with them.
    apply_rbac(env, "controller-policy.yaml", webhook, values).await?;
    let req: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [SERVICE_ACCOUNT_ISSUER], "expirationSeconds": 7200}
    }))?;
    let token = env
        .api::<ServiceAccount>()
        .create_subresource::<_, TokenRequest>("token", &sa, &PostParams::default(), &req)
        .await?
        .status
        .ok_or_else(|| Error::Invalid("TokenRequest answered without a token".into()))?
        .token;
    let kubeconfig =
        tokens::write_token_kubeconfig(&env.cluster().info, &env.scratch_dir(), &sa, &token)?;
    Ok(ControllerIdentity {
        kubeconfig,
        user: format!("system:serviceaccount:{}:{sa}", env.ns()),
        lease: format!("{fullname}-controller"),
        webhook_secret: format!("{fullname}-webhook-tls"),
        fullname,
    })
}

/// The chart's agent ServiceAccount and RBAC for this test; returns the
/// ServiceAccount's name. Tokens bound to a pod on the node come from
/// [`tokens::pod_token`], as the kubelet would project them.
pub async fn chart_agent(env: &TestEnv) -> Result<String> {
    apply_rbac(env, "agent-rbac.yaml", false, &[])
        .await?
        .ok_or_else(|| Error::Invalid("agent-rbac.yaml has no ServiceAccount".into()))
}

/// Renders one RBAC or policy template of the chart for this test and applies it
/// (objects already there from an earlier call are kept); returns the name of the
/// ServiceAccount it defines, if any.
async fn apply_rbac(
    env: &TestEnv,
    template: &str,
    webhook: bool,
    values: &[&str],
) -> Result<Option<String>> {
    let chart = paths::repo_root().join("charts/sessionguard");
    let mut helm = std::process::Command::new(paths::tool("helm")?);
    helm.args(["template", "e2e"]);
    for v in values {
        helm.args(["--set", v]);
    }
    let out = helm
        .arg(&chart)
        .args(["--namespace", env.ns()])
        .args(["--kube-version", &crate::paths::kube_version()])
        .args(["--show-only", &format!("templates/{template}")])
        .args(["--set", &format!("fullnameOverride={}", env.ns())])
        .args(["--set", &format!("webhook.enabled={webhook}")])
        .output()
        .map_err(|e| Error::Invalid(format!("running helm template: {e}")))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "helm template of {template} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let docs = yaml_docs(&String::from_utf8_lossy(&out.stdout))?;
    let client = env.client().clone();
    let namespace = Api::<Namespace>::all(client.clone()).get(env.ns()).await?;
    let owner = json!([{
        "apiVersion": "v1", "kind": "Namespace",
        "name": env.ns(), "uid": namespace.metadata.uid,
    }]);
    let mut sa_name = None;
    for mut doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "ServiceAccount" => {
                sa_name = doc["metadata"]["name"].as_str().map(str::to_string);
                create(env.api::<ServiceAccount>(), doc).await?;
            }
            "Role" => create(env.api::<Role>(), doc).await?,
            "RoleBinding" => create(env.api::<RoleBinding>(), doc).await?,
            "ClusterRole"
            | "ClusterRoleBinding"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding" => {
                doc["metadata"]["ownerReferences"] = owner.clone();
                match kind.as_str() {
                    "ClusterRole" => create(Api::<ClusterRole>::all(client.clone()), doc).await?,
                    "ClusterRoleBinding" => {
                        create(Api::<ClusterRoleBinding>::all(client.clone()), doc).await?
                    }
                    "ValidatingAdmissionPolicy" => {
                        create(Api::<ValidatingAdmissionPolicy>::all(client.clone()), doc).await?
                    }
                    _ => {
                        create(
                            Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()),
                            doc,
                        )
                        .await?
                    }
                }
            }
            other => {
                return Err(Error::Invalid(format!(
                    "{template} rendered an unexpected {other}"
                )));
            }
        }
    }
    Ok(sa_name)
}

/// Creates the rendered object; one already there (applied earlier in this
/// test) is kept.
async fn create<K>(api: Api<K>, doc: Value) -> Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(doc)?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The YAML documents of a rendering (`helm template`), as JSON values; empty
/// documents dropped. Shared with the chart tests.
pub fn yaml_docs(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(d)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}
