//! Shared by the webhook and plugin e2e tests: the controller runs with the
//! chart's ServiceAccount and RBAC (so the harness's admin is an ordinary user to
//! the annotation guard, and every call the webhook makes is one the chart allows), with the webhooks on a loopback port that the API
//! server reaches by URL, trusting the caBundle the controller publishes.
#![allow(dead_code)]

use std::path::PathBuf;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use sessionguard_controller::face::admission::manifests::{self, Options, Target};
use sessionguard_e2e::harness::{Child, TestEnv, await_, identity, workspace_bin};
use sessionguard_e2e::{Error, Result, wait};

#[path = "../controller_support/mod.rs"]
pub mod sg;

/// The harness's admin client certificate's user.
pub const ADMIN: &str = "sessionguard-admin";

pub fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

#[allow(unused_imports)]
pub use sessionguard_e2e::check;

/// The webhook configurations' name: the chart's full name for this test (the
/// only names its controller ClusterRole lets the controller update).
pub fn config_name(env: &TestEnv) -> String {
    env.ns().to_string()
}

/// The Secret holding the generated CA and serving certificate (the chart's name).
pub fn secret_name(env: &TestEnv) -> String {
    format!("{}-webhook-tls", config_name(env))
}

/// The controller's ServiceAccount and RBAC exactly as the chart grants them
/// with the webhook on, and a kubeconfig with its token.
pub async fn controller_kubeconfig(env: &TestEnv) -> Result<PathBuf> {
    Ok(identity::chart_controller(env, true).await?.kubeconfig)
}

/// Both webhook configurations, pointed at `port` on loopback and limited to
/// the test's namespace (the cluster is shared with other tests).
pub async fn install_webhooks(env: &TestEnv, port: u16) -> Result<()> {
    let mut o = Options::excluding(
        &config_name(env),
        Target::Url(format!("https://127.0.0.1:{port}")),
        &[],
    );
    o.namespace_selector = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![env.ns().to_string()]),
        }]),
        ..Default::default()
    };
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(env.client().clone());
    let mwc: Api<MutatingWebhookConfiguration> = Api::all(env.client().clone());
    let _ = vwc.delete(&o.name, &DeleteParams::default()).await;
    let _ = mwc.delete(&o.name, &DeleteParams::default()).await;
    vwc.create(&PostParams::default(), &manifests::validating(&o))
        .await?;
    mwc.create(&PostParams::default(), &manifests::mutating(&o))
        .await?;
    Ok(())
}

/// Points the configurations at another port (keeping the caBundle).
pub async fn retarget(env: &TestEnv, port: u16) -> Result<()> {
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(env.client().clone());
    let mut c = vwc.get(&config_name(env)).await?;
    for w in c.webhooks.iter_mut().flatten() {
        let url = w.client_config.url.clone().unwrap_or_default();
        let path = url
            .rsplit_once(':')
            .map(|(_, p)| {
                p.split_once('/')
                    .map(|(_, p)| p.to_string())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        w.client_config.url = Some(format!("https://127.0.0.1:{port}/{path}"));
    }
    vwc.replace(&config_name(env), &PostParams::default(), &c)
        .await?;
    Ok(())
}

pub async fn remove_webhooks(env: &TestEnv) {
    let name = config_name(env);
    let _ = Api::<ValidatingWebhookConfiguration>::all(env.client().clone())
        .delete(&name, &DeleteParams::default())
        .await;
    let _ = Api::<MutatingWebhookConfiguration>::all(env.client().clone())
        .delete(&name, &DeleteParams::default())
        .await;
}

pub fn free_port() -> Result<u16> {
    Ok(sg::free_addr()?.port())
}

/// The real controller with the webhooks on `webhook_port`. `leader`: wait
/// until it leads (else only until it serves).
pub async fn start(
    env: &TestEnv,
    kubeconfig: &std::path::Path,
    name: &str,
    webhook_port: u16,
    leader: bool,
    extra: &[&str],
) -> Result<sg::Controller> {
    let bin = workspace_bin("sessionguard-controller", "sessionguard-controller")?;
    let addr = sg::free_addr()?;
    let (addr_s, wh) = (addr.to_string(), format!("127.0.0.1:{webhook_port}"));
    let cfg = config_name(env);
    // The chart's names for this test's release (see identity::chart_controller).
    let (lease, secret) = (format!("{cfg}-controller"), secret_name(env));
    let mut args: Vec<&str> = vec![
        "--listen-addr",
        &addr_s,
        "--lease-namespace",
        env.ns(),
        "--lease-name",
        &lease,
        "--webhook-secret",
        &secret,
        "--lease-duration",
        "3s",
        "--identity",
        name,
        "--webhook",
        "true",
        "--webhook-addr",
        &wh,
        "--webhook-extra-sans",
        "127.0.0.1",
        "--webhook-validating-config",
        &cfg,
        "--webhook-mutating-config",
        &cfg,
        "--webhook-cert-check-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    let log = env.scratch_dir().join(format!("{name}.log"));
    let kc = kubeconfig.display().to_string();
    let child = Child::spawn(
        &bin,
        &args,
        &[
            ("KUBECONFIG", &kc),
            ("RUST_LOG", "info,sessionguard_controller=debug,kube=warn"),
            // The chart's policies for this test's release (identity::chart_controller).
            ("SESSIONGUARD_ADMISSION_POLICIES", &cfg),
        ],
        &log,
    )?;
    eprintln!(
        "controller {name}: pid {}, log {}",
        child.pid(),
        log.display()
    );
    let c = sg::Controller {
        child: Some(child),
        addr,
        log,
    };
    wait::until(
        &format!("controller {name} to serve"),
        await_::TIMEOUT,
        || async {
            let m = sg::metric(addr, "sessionguard_webhook_cert_not_after_seconds", &[])
                .await
                .ok()
                .flatten();
            let l = sg::metric(addr, "sessionguard_leader", &[])
                .await
                .ok()
                .flatten();
            Ok((m.is_some_and(|v| v > 0.0) && (!leader || l == Some(1.0))).then_some(()))
        },
    )
    .await?;
    Ok(c)
}

/// Waits until the API server calls our guard: a dry-run edit of a record
/// annotation is denied (dry runs go through validating webhooks).
pub async fn await_guard(env: &TestEnv, pod: &str) -> Result<()> {
    wait::until(
        "the annotation guard to be called",
        await_::TIMEOUT,
        || async {
            let (ok, out) = env
                .kubectl(&[
                    "-n",
                    env.ns(),
                    "annotate",
                    "pod",
                    pod,
                    "--overwrite",
                    "--dry-run=server",
                    "sessionguard.io/ttl=99h",
                ])
                .await?;
            Ok((!ok && out.contains("managed by sessionguard")).then_some(()))
        },
    )
    .await
}

pub async fn pod(env: &TestEnv, name: &str) -> Result<Pod> {
    let pods: Api<Pod> = env.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "infinity"]}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    await_::pod_ready(&pods, name).await
}

/// sessionguard's events about `pod`, oldest first: (reason, note, reporting instance).
pub async fn events(env: &TestEnv, pod: &str) -> Result<Vec<(String, String, String)>> {
    let api: Api<Event> = env.api();
    let lp = ListParams::default().fields(&format!("regarding.name={pod}"));
    let mut evs = api.list(&lp).await?.items;
    evs.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    Ok(evs
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("sessionguard.io/controller"))
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.reporting_instance.unwrap_or_default(),
            )
        })
        .collect())
}

/// Waits for an event with `reason` whose note contains `text`.
pub async fn await_event(
    env: &TestEnv,
    pod: &str,
    reason: &str,
    text: &str,
) -> Result<(String, String, String)> {
    wait::until(
        &format!("{reason} event on {pod} mentioning {text:?}"),
        await_::TIMEOUT,
        || async {
            Ok(events(env, pod)
                .await?
                .into_iter()
                .find(|(r, n, _)| r == reason && n.contains(text)))
        },
    )
    .await
}

pub fn annotation(p: &Pod, key: &str) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
}

/// Runs the pinned kubectl as admin with a short request timeout: exec and
/// attach pass admission, then fail to reach the simulated node's kubelet.
pub async fn kubectl(env: &TestEnv, args: &[&str]) -> Result<(bool, String)> {
    let mut all = vec!["--request-timeout=20s", "-n", env.ns()];
    all.extend_from_slice(args);
    env.kubectl(&all).await
}

/// Runs `kubectl sessions ...` through kubectl's plugin discovery (the
/// binary on PATH, krew-style). Returns (exit code, stdout, stderr).
pub async fn plugin(env: &TestEnv, args: &[&str]) -> Result<(i32, String, String)> {
    let bin = workspace_bin("sessionguard-plugin", "kubectl-sessions")?;
    let dir = bin.parent().ok_or_else(|| invalid("plugin dir"))?;
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = tokio::process::Command::new(sessionguard_e2e::paths::tool("kubectl")?)
        // kubectl looks a plugin up only when no flag comes first.
        .arg("sessions")
        .arg(format!("--kubeconfig={}", env.kubeconfig().display()))
        .args(args)
        .env("PATH", path)
        .env_remove("KUBECONFIG")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| invalid(format!("running kubectl sessions: {e}")))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The URL path (token included) and the CA bundle that the validating
/// configuration gives the API server for `webhook` (e.g.
/// `interactions.sessionguard.io`): what only cluster admins can read.
pub async fn published(env: &TestEnv, port: u16, webhook: &str) -> Result<(String, String)> {
    let vwc = Api::<ValidatingWebhookConfiguration>::all(env.client().clone())
        .get(&config_name(env))
        .await?;
    let w = vwc
        .webhooks
        .iter()
        .flatten()
        .find(|w| w.name == webhook)
        .ok_or_else(|| invalid(format!("no {webhook} webhook in {}", config_name(env))))?;
    let url = w.client_config.url.clone().unwrap_or_default();
    let bundle = w
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    let path = url
        .split_once(&format!("127.0.0.1:{port}"))
        .map(|(_, p)| p.to_string())
        .ok_or_else(|| invalid(format!("{webhook} points elsewhere: {url}")))?;
    Ok((path, bundle))
}

/// POSTs `body` over HTTPS to 127.0.0.1:`port`, trusting `bundle_pem` (the
/// public CA, as any client could), and returns (status code, response body).
pub async fn https_post(
    port: u16,
    bundle_pem: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    https_post_as(port, bundle_pem, None, path, body).await
}

/// [`https_post`] presenting `client` (certificate and key PEM) if given.
pub async fn https_post_as(
    port: u16,
    bundle_pem: &str,
    client: Option<(&str, &str)>,
    path: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()).flatten() {
        roots.add(c).map_err(|e| invalid(format!("CA: {e}")))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_root_certificates(roots);
    let cfg = match client {
        None => cfg.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("client certificate: {e}")))?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| invalid(format!("client key: {e}")))?;
            cfg.with_client_auth_cert(chain, key)
                .map_err(|e| invalid(format!("client certificate: {e}")))?
        }
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| invalid(format!("connect: {e}")))?;
    let name =
        rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| invalid(e.to_string()))?;
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| invalid(format!("TLS: {e}")))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| invalid(e.to_string()))?;
    // A server that answers before reading a too-large body may close early:
    // the status line it sent is still what counts.
    let _ = tls.write_all(body).await;
    let mut out = Vec::new();
    // A server closing without close_notify is fine: the status line is in.
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid(format!("no HTTP status in {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.to_string()))
}
