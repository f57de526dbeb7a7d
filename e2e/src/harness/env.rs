//! One test's world: a fresh labelled namespace whose pods can only land on the test's
//! own simulated node (PodNodeSelector annotation), so parallel tests never touch each
//! other's pods, and a drain only drains this test's node.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

use super::cluster::{self, SharedCluster};
use super::{await_, dump};
use crate::controlplane::kubeconfig;
use crate::simnode::{CgroupRoot, SIM_NODE_LABEL, Session, SimNode, SimNodeConfig};
use crate::{Error, Result, paths, wait};

/// Label on every test namespace, so leftovers are easy to find and delete.
pub const E2E_LABEL: &str = "sessionguard.io/e2e";
/// Label naming the test that owns a namespace.
pub const TEST_LABEL: &str = "sessionguard.io/e2e-test";
const NODE_SELECTOR_ANNOTATION: &str = "scheduler.alpha.kubernetes.io/node-selector";

/// A test's namespace and simulated node. Call [`TestEnv::finish`] at the end; if the test
/// panics first, Drop dumps the namespace and cleans up.
pub struct TestEnv {
    client: kube::Client,
    cluster: &'static SharedCluster,
    ns: String,
    test: String,
    node_name: String,
    node: Option<SimNode>,
    started: Instant,
    /// Set by [`TestEnv::finish`]: a TestEnv dropped without it belongs to a test
    /// that failed, by a panic or by returning an error with `?`.
    finished: bool,
}

/// Why e2e tests cannot run here, if they cannot (not root, no cgroup2). In CI (`CI` set)
/// there is no excuse: the caller should fail instead of skipping.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("simulated nodes need root to create cgroup directories".into());
    }
    match CgroupRoot::detect() {
        Err(e) => Some(e.to_string()),
        Ok(root) if !root.writable() => Some(format!("{} is not writable", root.path().display())),
        Ok(_) => None,
    }
}

// === impl TestEnv ===

impl TestEnv {
    /// A namespace `sg-<test>-<rand>` with a simulated node `sim-<test>-<rand>`; `None` when
    /// the test must be skipped (reason printed; in CI a skip is an error).
    pub async fn start(test: &str) -> Result<Option<Self>> {
        if let Some(reason) = skip_reason() {
            if std::env::var_os("CI").is_some() {
                return Err(Error::Invalid(format!(
                    "e2e test {test} cannot run in CI: {reason}"
                )));
            }
            eprintln!("SKIPPED {test}: {reason}");
            return Ok(None);
        }
        let cluster = cluster::shared()?;
        let client = cluster.info.admin_client().await?;
        let suffix = random_suffix();
        let short: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(30)
            .collect();
        let short = short.to_ascii_lowercase().trim_matches('-').to_string();
        let ns = format!("sg-{short}-{suffix}");
        let node_name = format!("sim-{short}-{suffix}");

        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {
                "name": ns,
                "labels": { E2E_LABEL: "true", TEST_LABEL: short },
                "annotations": { NODE_SELECTOR_ANNOTATION: format!("{SIM_NODE_LABEL}={node_name}") },
            }
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        let mut env = Self {
            client: client.clone(),
            cluster,
            ns: ns.clone(),
            test: test.to_string(),
            node_name: node_name.clone(),
            node: None,
            started: Instant::now(),
            finished: false,
        };
        let node_client = kubeconfig::client(&cluster.info.node_kubeconfig(&node_name)?).await?;
        env.node = Some(SimNode::start(node_client, SimNodeConfig::new(&node_name)?).await?);
        // Pods are refused until the controller-manager has made the default ServiceAccount.
        let sas: Api<ServiceAccount> = Api::namespaced(client, &ns);
        await_::object(&sas, "default", "created by the controller-manager", |_| {
            true
        })
        .await?;
        eprintln!("e2e {test}: namespace {ns}, node {node_name}");
        Ok(Some(env))
    }

    /// The admin client (system:masters).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    pub fn cluster(&self) -> &'static SharedCluster {
        self.cluster
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    pub fn node(&self) -> &SimNode {
        self.node.as_ref().expect("node runs until finish")
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// This test's scratch directory (logs of the binaries it runs, kubeconfigs,
    /// tokens): removed when the test passes, kept and named when it fails.
    pub fn scratch_dir(&self) -> std::path::PathBuf {
        let dir = scratch_dir(&self.ns);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    /// An Api for namespaced objects in this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates the object in `yaml` (e.g. a fixture) in this namespace, unchanged otherwise.
    pub async fn create_yaml<K>(&self, yaml: &str) -> Result<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let obj: K = serde_yaml::from_str(yaml)?;
        Ok(self.api::<K>().create(&PostParams::default(), &obj).await?)
    }

    /// Opens a pty session in a container of a pod of this namespace.
    pub async fn session(&self, pod: &str, container: &str, argv: &[&str]) -> Result<Session> {
        Session::open_in_pod(&self.client, &self.ns, pod, container, argv).await
    }

    /// Runs the pinned kubectl as admin; returns (success, stdout + stderr).
    pub async fn kubectl(&self, args: &[&str]) -> Result<(bool, String)> {
        let out = tokio::process::Command::new(paths::tool("kubectl")?)
            .arg(format!(
                "--kubeconfig={}",
                self.cluster.info.admin_kubeconfig.display()
            ))
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::Invalid(format!("running kubectl: {e}")))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }

    /// The admin kubeconfig (for child processes).
    pub fn kubeconfig(&self) -> &Path {
        &self.cluster.info.admin_kubeconfig
    }

    /// Prints this test's objects (see [`dump::namespace`]) to stderr.
    pub async fn dump(&self) {
        dump::namespace(&self.client, &self.ns, Some(&self.node_name)).await;
        dump::logs(&scratch_dir(&self.ns));
    }

    /// Deletes the namespace and the node, stops the node's processes, removes its
    /// cgroups and the scratch directory.
    pub async fn finish(mut self) -> Result<()> {
        if let Some(node) = self.node.take() {
            node.stop().await?;
        }
        cleanup_api(&self.client, &self.ns, Some(&self.node_name)).await?;
        let _ = std::fs::remove_dir_all(scratch_dir(&self.ns));
        self.finished = true;
        eprintln!(
            "e2e {}: passed in {:.1}s",
            self.test,
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

fn scratch_dir(ns: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sessionguard-e2e-{ns}"))
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Dropped without finish(): the test failed, whether it panicked or
        // returned an error. Keep the control plane's logs and show the state.
        cluster::mark_failed();
        let how = if std::thread::panicking() {
            "panicked"
        } else {
            "returned an error"
        };
        // Processes and cgroups go first and synchronously: they outlive nothing.
        drop(self.node.take());
        let name = self.node_name.clone();
        // API cleanup on a thread with its own runtime: Drop can't await, and the test's
        // runtime may be a current-thread one that is blocked right here.
        let info = self.cluster.info.clone();
        let ns = self.ns.clone();
        let test = self.test.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(client) = info.admin_client().await else {
                    return;
                };
                eprintln!("e2e {test} FAILED ({how}); state of namespace {ns}:");
                dump::namespace(&client, &ns, Some(&name)).await;
                let scratch = scratch_dir(&ns);
                dump::logs(&scratch);
                eprintln!(
                    "e2e {test}: its logs and kubeconfigs are kept in {}",
                    scratch.display()
                );
                if let Err(e) = cleanup_api(&client, &ns, Some(&name)).await {
                    eprintln!("e2e {test}: cleanup of {ns} failed: {e}");
                }
            });
        })
        .join();
    }
}

/// Deletes the namespace (force-deleting its pods, whose node is gone) and the node.
async fn cleanup_api(client: &kube::Client, ns: &str, node: Option<&str>) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    ignore_404(
        namespaces
            .delete(ns, &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let force = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for p in pods.list(&ListParams::default()).await?.items {
        let name = p.metadata.name.unwrap_or_default();
        ignore_404(pods.delete(&name, &force).await.map(|_| ()))?;
    }
    if let Some(node) = node {
        ignore_404(
            Api::<Node>::all(client.clone())
                .delete(node, &DeleteParams::default())
                .await
                .map(|_| ()),
        )?;
    }
    wait::until(
        &format!("namespace {ns} to be deleted"),
        await_::TIMEOUT,
        || async { Ok(namespaces.get_opt(ns).await?.is_none().then_some(())) },
    )
    .await
}

fn ignore_404(r: kube::Result<()>) -> Result<()> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => Ok(other?),
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    let n: u32 = rand::rng().random();
    format!("{:06x}", n & 0xff_ffff)
}

/// Labels a simulated node carries for a given test (for extra nodes a test adds).
pub fn node_labels(node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(SIM_NODE_LABEL.to_string(), node.to_string())])
}
