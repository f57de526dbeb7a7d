//! Shared by the controller e2e tests: install sessionguard's CRD and admission
//! policy (the harness's `install`); run the real controller and the real agent as
//! child processes, with the chart's ServiceAccounts and RBAC (the agent with a
//! pod-bound token, as in a DaemonSet); scrape metrics; watch PDBs with timestamps.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use sessionguard_e2e::harness::{Child, TestEnv, await_, identity, tokens, workspace_bin};
// Each test binary uses a different subset.
#[allow(unused_imports)]
pub use sessionguard_e2e::harness::http::{find_metric, free_addr, http_get, metric};
use sessionguard_e2e::{Error, Result, wait};

pub use sessionguard_e2e::harness::install::install;

/// Serialises the tests of one binary: the controller is cluster-wide, so two
/// tests' controllers would act on each other's pods.
/// (A tokio Mutex: it is held across awaits, works across the tests' runtimes
/// and is not poisoned by a failed test.)
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

#[allow(unused_imports)]
pub use sessionguard_e2e::check;

/// The reasons of every event about `pod` in the test's namespace.
pub async fn event_reasons(env: &TestEnv, pod: &str) -> Result<Vec<String>> {
    let events: Api<k8s_openapi::api::events::v1::Event> = env.api();
    let lp = kube::api::ListParams::default().fields(&format!("regarding.name={pod}"));
    Ok(events
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect())
}

/// The real controller, as a child process with the chart's controller identity
/// (its ServiceAccount and RBAC, rendered from the chart for this test).
pub struct Controller {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

pub async fn start_controller(env: &TestEnv, name: &str, args: &[&str]) -> Result<Controller> {
    let id = identity::chart_controller(env, false).await?;
    let c = spawn_controller(env, &id, name, args)?;
    c.until_leader().await?;
    Ok(c)
}

/// Starts the controller without waiting for it (as kubelet restarts one,
/// whether or not the API server answers).
/// Makes no API call itself: `id` is made beforehand.
pub fn spawn_controller(
    env: &TestEnv,
    id: &identity::ControllerIdentity,
    name: &str,
    args: &[&str],
) -> Result<Controller> {
    let bin = workspace_bin("sessionguard-controller", "sessionguard-controller")?;
    let addr = free_addr()?;
    let addr_s = addr.to_string();
    let mut all: Vec<&str> = vec![
        "--listen-addr",
        &addr_s,
        "--lease-namespace",
        env.ns(),
        "--lease-name",
        &id.lease,
        "--lease-duration",
        "3s",
        "--identity",
        name,
    ];
    all.extend_from_slice(args);
    let log = env.scratch_dir().join(format!("{name}.log"));
    let kubeconfig = id.kubeconfig.display().to_string();
    let child = Child::spawn(
        &bin,
        &all,
        &[
            ("KUBECONFIG", &kubeconfig),
            ("RUST_LOG", "info,sessionguard_controller=debug,kube=warn"),
            // The chart's policies for this test's release (identity::chart_controller).
            ("SESSIONGUARD_ADMISSION_POLICIES", &id.fullname),
        ],
        &log,
    )?;
    eprintln!(
        "controller {name}: pid {}, log {}",
        child.pid(),
        log.display()
    );
    Ok(Controller {
        child: Some(child),
        addr,
        log,
    })
}

impl Controller {
    /// Waits until this replica's gauge says it protects `pod` in `ns`.
    pub async fn until_protecting(&self, ns: &str, pod: &str) -> Result<()> {
        wait::until(
            &format!("the controller to report {pod} protected"),
            await_::TIMEOUT,
            || async {
                let v = self
                    .metric(
                        "sessionguard_pod_protecting",
                        &[("namespace", ns), ("pod", pod)],
                    )
                    .await?;
                Ok((v == Some(1.0)).then_some(()))
            },
        )
        .await
    }

    /// Waits until this replica has run at least `n` pod reconciles: after a
    /// (re)start, a wrong release would have been decided by then.
    pub async fn until_reconciled(&self, n: u32) -> Result<()> {
        wait::until(
            &format!("the controller to reconcile {n} pods"),
            await_::TIMEOUT,
            || async {
                let done = self
                    .metric(
                        "sessionguard_reconcile_duration_seconds_count",
                        &[("controller", "pod")],
                    )
                    .await?
                    .unwrap_or(0.0);
                Ok((done >= f64::from(n)).then_some(()))
            },
        )
        .await
    }

    /// Waits until this replica leads with synced caches.
    pub async fn until_leader(&self) -> Result<()> {
        sessionguard_e2e::harness::http::until_leader(self.addr, await_::TIMEOUT, || Ok(())).await
    }

    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<Option<f64>> {
        metric(self.addr, name, labels).await
    }

    /// `/readyz`: its status code and body (a 503 says why).
    pub async fn readyz(&self) -> Result<(u16, String)> {
        sessionguard_e2e::harness::http::http_get_any(self.addr, "/readyz").await
    }

    /// Whether the process has exited (its log names how).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.check_running().is_err())
    }

    /// kill -9: no chance to release the Lease or finish anything.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            c.stop(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            c.stop(Duration::from_secs(5));
        }
    }

    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- controller log tail ({}) ---\n{}",
                self.log.display(),
                self.tail()
            );
        }
        self.stop();
    }
}

/// The real agent, authenticated like a DaemonSet pod: a token bound to a pod
/// running on the test's node.
pub struct Agent {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- agent log tail ({}) ---\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        if let Some(c) = self.child.take() {
            c.stop(Duration::from_secs(3));
        }
    }
}

/// A pod on `node` with the chart's agent ServiceAccount (and RBAC), and a token
/// bound to it: the identity the DaemonSet gives the agent.
pub async fn agent_kubeconfig(env: &TestEnv, pod_name: &str, node: &str) -> Result<(Pod, PathBuf)> {
    let sa = identity::chart_agent(env).await?;
    let pods: Api<Pod> = env.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": pod_name, "labels": {"app": "sessionguard-agent"}},
        "spec": {
            "nodeName": node,
            "serviceAccountName": sa,
            "containers": [{"name": "agent", "image": "sessionguard/agent:dev"}]
        }
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let pod = await_::pod_ready(&pods, pod_name).await?;
    let token = tokens::pod_token(env.client(), &sa, &pod, &[], 3600).await?;
    let kubeconfig =
        tokens::write_token_kubeconfig(&env.cluster().info, &env.scratch_dir(), pod_name, &token)?;
    Ok((pod, kubeconfig))
}

pub async fn start_agent(env: &TestEnv, interval: &str) -> Result<Agent> {
    start_agent_at(
        env,
        interval,
        "127.0.0.1:0".parse().expect("literal address"),
    )
    .await
}

/// [`start_agent`] serving `/metrics` on `listen`, for tests that scrape it.
pub async fn start_agent_at(env: &TestEnv, interval: &str, listen: SocketAddr) -> Result<Agent> {
    start_agent_full(env, interval, listen, "30s").await
}

/// [`start_agent_at`] with a heartbeat (`--report-interval`) of the test's
/// choosing, for tests that shorten the controller's agent grace.
pub async fn start_agent_full(
    env: &TestEnv,
    interval: &str,
    listen: SocketAddr,
    heartbeat: &str,
) -> Result<Agent> {
    start_agent_with(env, interval, listen, heartbeat, &[]).await
}

/// [`start_agent_full`] with more `run` flags.
pub async fn start_agent_with(
    env: &TestEnv,
    interval: &str,
    listen: SocketAddr,
    heartbeat: &str,
    extra: &[&str],
) -> Result<Agent> {
    let listen = listen.to_string();
    let node = env.node_name().to_string();
    let (_pod, kubeconfig) = agent_kubeconfig(env, "sessionguard-agent", &node).await?;
    let bin = workspace_bin("sessionguard-agent", "sessionguard-agent")?;
    let log = env.scratch_dir().join("agent.log");
    let kc = kubeconfig.display().to_string();
    let mut args = vec![
        "run",
        "--node-name",
        &node,
        "--proc-root",
        "/proc",
        "--listen-addr",
        &listen,
        "--report-interval",
        heartbeat,
        "--interval",
        interval,
    ];
    args.extend_from_slice(extra);
    let child = Child::spawn(
        &bin,
        &args,
        &[("KUBECONFIG", &kc), ("RUST_LOG", "info")],
        &log,
    )?;
    eprintln!("agent: pid {}, log {}", child.pid(), log.display());
    let agent = Agent {
        child: Some(child),
        log,
        kubeconfig,
    };
    let reports = report_api(env.client());
    await_::object(&reports, &node, "written by the agent", |_| true).await?;
    Ok(agent)
}

pub use sessionguard_e2e::harness::install::report_api;

/// Sessions in the node's report for `pod_uid`.
pub fn report_sessions(report: &DynamicObject, pod_uid: &str) -> usize {
    report.data["spec"]["sessions"]
        .as_array()
        .map_or(0, |s| s.iter().filter(|s| s["pod_uid"] == pod_uid).count())
}

/// Watches our PDBs in the namespace and reports when `name` appears or
/// disappears, with the instant it was observed (not polled).
pub struct PdbWatch {
    rx: tokio::sync::mpsc::UnboundedReceiver<(Instant, String, bool)>,
    task: tokio::task::JoinHandle<()>,
    present: BTreeMap<String, (bool, Instant)>,
}

impl PdbWatch {
    pub fn start(env: &TestEnv) -> Self {
        let api: Api<PodDisruptionBudget> = env.api();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = s.next().await {
                let now = Instant::now();
                match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        let _ = tx.send((now, p.metadata.name.unwrap_or_default(), true));
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        let _ = tx.send((now, p.metadata.name.unwrap_or_default(), false));
                    }
                    _ => {}
                }
            }
        });
        Self {
            rx,
            task,
            present: BTreeMap::new(),
        }
    }

    /// Waits until `name` is `present` (or not); returns when it was seen so.
    pub async fn until(&mut self, name: &str, present: bool, timeout: Duration) -> Result<Instant> {
        while let Ok(ev) = self.rx.try_recv() {
            self.present.insert(ev.1.clone(), (ev.2, ev.0));
        }
        if let Some((p, at)) = self.present.get(name)
            && *p == present
        {
            return Ok(*at);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| {
                    invalid(format!(
                        "PDB {name} to be {}: timed out after {timeout:?}",
                        if present { "created" } else { "deleted" }
                    ))
                })?
                .ok_or_else(|| invalid("PDB watch ended"))?;
            self.present.insert(ev.1.clone(), (ev.2, ev.0));
            if ev.1 == name && ev.2 == present {
                return Ok(ev.0);
            }
        }
    }

    /// Names of PDBs currently present, as far as the watch has told us.
    pub fn current(&mut self) -> Vec<String> {
        while let Ok(ev) = self.rx.try_recv() {
            self.present.insert(ev.1.clone(), (ev.2, ev.0));
        }
        self.present
            .iter()
            .filter(|(_, (p, _))| *p)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

impl Drop for PdbWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
