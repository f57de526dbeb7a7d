//! Shared by the chart and Prometheus tests: render the Helm chart with the pinned
//! helm, install it on the real control plane, and run the real agent and controller
//! as child processes under the chart's own ServiceAccounts (tokens bound to the
//! chart's pods on the simulated node), so the chart's RBAC and admission policy are
//! what the binaries get. Also: external tools (promtool, prometheus) found or skipped.
#![allow(dead_code)]

pub mod prom;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;
use sessionguard_e2e::harness::{Child, TestEnv, await_, tokens, workspace_bin};
// Each test binary uses a different subset.
#[allow(unused_imports)]
pub use sessionguard_e2e::harness::http::{find_metric, free_addr, http_get, metric};
use sessionguard_e2e::{Error, Result, paths, wait};

/// The Kubernetes version the pinned control plane runs (e2e/build-tools.sh); helm
/// template needs it because the chart requires >= 1.30 and a helm built from source
/// defaults to 1.20.
pub fn kube_version() -> String {
    sessionguard_e2e::paths::kube_version()
        .trim_start_matches('v')
        .to_string()
}

pub fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

pub fn check(cond: bool, what: impl Into<String>) -> Result<()> {
    if cond { Ok(()) } else { Err(invalid(what)) }
}

pub fn chart_dir() -> PathBuf {
    paths::repo_root().join("charts/sessionguard")
}

pub fn all_on_values() -> PathBuf {
    chart_dir().join("ci/all-on-values.yaml")
}

/// A tool from PATH (Debian's prometheus package: prometheus, promtool). Missing: an
/// error in CI (`CI` set; .ci/install-deps.sh installs it), elsewhere a printed skip.
pub fn external_tool(name: &str, test: &str) -> Result<Option<PathBuf>> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    match found {
        Some(p) => Ok(Some(p)),
        None if std::env::var_os("CI").is_some() => Err(invalid(format!(
            "{test}: `{name}` is not installed; CI installs it with .ci/install-deps.sh \
             (Debian package prometheus)"
        ))),
        None => {
            eprintln!(
                "SKIPPED {test}: `{name}` is not installed (apt-get install prometheus, \
                 or run .ci/install-deps.sh)"
            );
            Ok(None)
        }
    }
}

/// Runs a program; its stdout on success, else an error with its stderr.
pub fn run(program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| invalid(format!("running {}: {e}", program.display())))?;
    if !out.status.success() {
        return Err(invalid(format!(
            "{} {} failed ({}):\n{}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pinned helm with `args`.
pub fn helm(args: &[&str]) -> Result<String> {
    run(&paths::tool("helm")?, args)
}

/// `helm template <release> <chart> -n <ns> --kube-version ... <extra>`.
pub fn template(release: &str, ns: &str, extra: &[&str]) -> Result<String> {
    let chart = chart_dir().display().to_string();
    let version = kube_version();
    let mut args = vec![
        "template",
        release,
        &chart,
        "--namespace",
        ns,
        "--kube-version",
        &version,
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

/// The YAML documents of a rendering, as JSON values (empty documents dropped).
pub use sessionguard_e2e::harness::identity::yaml_docs as docs;

/// The one object of `kind` (named `name` if given) in `docs`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: Option<&str>) -> Result<&'a Value> {
    let mut it = docs.iter().filter(|d| {
        d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"].as_str() == Some(n))
    });
    let first = it
        .next()
        .ok_or_else(|| invalid(format!("no {kind} {name:?} in the rendering")))?;
    check(
        it.next().is_none(),
        format!("more than one {kind} {name:?}"),
    )?;
    Ok(first)
}

/// Header of the generated plain rules file.
pub const RULES_HEADER: &str = "# Generated from charts/sessionguard/files/alerts.yaml (default values) by\n\
# `make manifests`; edit that file, not this one. Check: promtool check rules <this file>\n";

/// The alert rules as a plain Prometheus rules file, rendered from the chart's single
/// source (files/alerts.yaml) with `--set` overrides (e.g. a short threshold).
pub fn rules_file(sets: &[&str]) -> Result<String> {
    let mut extra = vec!["--show-only", "templates/alerts-configmap.yaml"];
    let mut all = vec!["alerts.configMap=true".to_string()];
    all.extend(sets.iter().map(|s| s.to_string()));
    let joined = all.join(",");
    extra.push("--set");
    extra.push(&joined);
    let rendered = template("sessionguard", "sessionguard-system", &extra)?;
    let d = docs(&rendered)?;
    let cm = find(&d, "ConfigMap", None)?;
    let body = cm["data"]["sessionguard-alerts.yaml"]
        .as_str()
        .ok_or_else(|| invalid("the alerts ConfigMap has no sessionguard-alerts.yaml"))?;
    Ok(format!("{RULES_HEADER}{body}"))
}

/// Object-name prefix the chart uses for `release` (its `sessionguard.fullname`).
pub fn fullname(release: &str) -> String {
    if release.contains("sessionguard") {
        release.to_string()
    } else {
        format!("{release}-sessionguard")
    }
}

// === installs on the real control plane ===

/// A Helm release in a test's namespace; uninstalled on Drop, so its cluster-scoped
/// objects (ClusterRoles, the admission policy, webhook configurations) never leak
/// into a reused cluster.
pub struct Release {
    pub name: String,
    pub ns: String,
    kubeconfig: PathBuf,
    installed: bool,
}

impl Release {
    /// `helm install` of the chart into the test's namespace with `extra` arguments.
    pub fn install(env: &TestEnv, name: &str, extra: &[&str]) -> Result<Self> {
        let chart = chart_dir().display().to_string();
        let kubeconfig = env.kubeconfig().display().to_string();
        let mut args = vec![
            "install",
            name,
            &chart,
            "--namespace",
            env.ns(),
            "--kubeconfig",
            &kubeconfig,
            "--timeout",
            "60s",
        ];
        args.extend_from_slice(extra);
        let out = helm(&args)?;
        eprintln!("helm install {name}:\n{out}");
        Ok(Self {
            name: name.to_string(),
            ns: env.ns().to_string(),
            kubeconfig: env.kubeconfig().to_path_buf(),
            installed: true,
        })
    }

    pub fn fullname(&self) -> String {
        fullname(&self.name)
    }

    /// `helm uninstall --no-hooks`: the simulated node runs a stand-in for every
    /// container, so the pre-delete hook Job (`sessionguard-controller cleanup`) would
    /// never complete; `chart_uninstall.rs` plays its container runtime instead and
    /// uses [`Release::uninstall_with_hooks`].
    pub fn uninstall(mut self) -> Result<()> {
        self.installed = false;
        helm_uninstall(&self.name, &self.ns, &self.kubeconfig, false)
    }

    /// `helm uninstall` with its hooks: the caller must make the hook Job complete.
    pub fn uninstall_with_hooks(mut self) -> Result<()> {
        self.installed = false;
        helm_uninstall(&self.name, &self.ns, &self.kubeconfig, true)
    }
}

fn helm_uninstall(name: &str, ns: &str, kubeconfig: &Path, hooks: bool) -> Result<()> {
    let kc = kubeconfig.display().to_string();
    let mut args = vec![
        "uninstall",
        name,
        "--namespace",
        ns,
        "--kubeconfig",
        &kc,
        "--wait",
        "--timeout",
        "60s",
    ];
    if !hooks {
        args.push("--no-hooks");
    }
    helm(&args).map(|_| ())
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.installed
            && let Err(e) = helm_uninstall(&self.name, &self.ns, &self.kubeconfig, false)
        {
            eprintln!("helm uninstall {} failed: {e}", self.name);
        }
    }
}

/// The running pods of one chart component on the test's node.
pub async fn component_pods(env: &TestEnv, release: &str, component: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = env.api();
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={release},app.kubernetes.io/component={component}"
    ));
    Ok(pods
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(env.node_name())
                && await_::is_running_ready(p)
        })
        .collect())
}

/// Waits until `n` pods of `component` run on the test's node.
pub async fn await_component(
    env: &TestEnv,
    release: &str,
    component: &str,
    n: usize,
) -> Result<Vec<Pod>> {
    wait::until(
        &format!(
            "{n} {component} pod(s) of {release} Running on {}",
            env.node_name()
        ),
        await_::TIMEOUT,
        || async {
            let pods = component_pods(env, release, component).await?;
            Ok((pods.len() >= n).then_some(pods))
        },
    )
    .await
}

/// A kubeconfig with a token of `pod`'s ServiceAccount bound to `pod`: what the kubelet
/// would project into it.
pub async fn pod_kubeconfig(env: &TestEnv, pod: &Pod) -> Result<PathBuf> {
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .ok_or_else(|| invalid("pod has no service account"))?;
    let token = tokens::pod_token(env.client(), &sa, pod, &[], 3600).await?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    tokens::write_token_kubeconfig(&env.cluster().info, &env.scratch_dir(), &name, &token)
}

/// A real binary started for a test: killed on Drop, log tail printed on failure.
pub struct Running {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub name: String,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::pid)
    }

    pub fn check_running(&mut self) -> Result<()> {
        match self.child.as_mut() {
            Some(c) => c.check_running(),
            None => Err(invalid(format!("{} was stopped", self.name))),
        }
    }

    /// Resident memory from /proc/<pid>/status, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            c.stop(Duration::from_secs(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- {} log tail ({}) ---\n{}",
                self.name,
                self.log.display(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        self.stop();
    }
}

/// The real agent, with a token of the chart's agent ServiceAccount bound to the
/// chart's DaemonSet pod on the test's node: exactly the identity the DaemonSet gives it.
pub async fn start_agent(env: &TestEnv, agent_pod: &Pod, interval: &str) -> Result<Running> {
    let kubeconfig = pod_kubeconfig(env, agent_pod).await?;
    let bin = workspace_bin("sessionguard-agent", "sessionguard-agent")?;
    let addr = free_addr()?;
    let (addr_s, kc) = (addr.to_string(), kubeconfig.display().to_string());
    let log = env.scratch_dir().join("agent.log");
    let child = Child::spawn(
        &bin,
        &[
            "run",
            "--node-name",
            env.node_name(),
            "--proc-root",
            "/proc",
            "--listen-addr",
            &addr_s,
            "--interval",
            interval,
            "--report-interval",
            "5s",
        ],
        &[("KUBECONFIG", &kc), ("SESSIONGUARD_LOG", "info")],
        &log,
    )?;
    eprintln!("agent: pid {}, {addr}, log {}", child.pid(), log.display());
    let mut agent = Running {
        child: Some(child),
        addr,
        log,
        name: "agent".into(),
    };
    let cell = std::cell::RefCell::new(&mut agent);
    wait::until("the agent to be ready", await_::TIMEOUT, || async {
        cell.borrow_mut().check_running()?;
        Ok(http_get(addr, "/readyz").await.ok())
    })
    .await?;
    Ok(agent)
}

/// The real controller, with a token of the chart's controller ServiceAccount bound to
/// one of the chart's controller pods, using the chart's Lease name in the release
/// namespace (the only Lease its Role lets it update).
pub async fn start_controller(env: &TestEnv, release: &str, ctl_pod: &Pod) -> Result<Running> {
    start_controller_as(env, release, ctl_pod, "controller", "leader").await
}

/// [`start_controller`] under another log name, awaiting `/readyz` to name `role`
/// ("leader" or "standby": a second replica stays standby while the first leads).
pub async fn start_controller_as(
    env: &TestEnv,
    release: &str,
    ctl_pod: &Pod,
    name: &str,
    role: &str,
) -> Result<Running> {
    let kubeconfig = pod_kubeconfig(env, ctl_pod).await?;
    let bin = workspace_bin("sessionguard-controller", "sessionguard-controller")?;
    let addr = free_addr()?;
    let lease = format!("{}-controller", fullname(release));
    let (addr_s, kc) = (addr.to_string(), kubeconfig.display().to_string());
    let identity = ctl_pod.metadata.name.clone().unwrap_or_default();
    let policies = fullname(release);
    let log = env.scratch_dir().join(format!("{name}.log"));
    let child = Child::spawn(
        &bin,
        &[
            "--listen-addr",
            &addr_s,
            "--lease-namespace",
            env.ns(),
            "--lease-name",
            &lease,
            "--lease-duration",
            "5s",
            "--identity",
            &identity,
        ],
        &[
            ("KUBECONFIG", &kc),
            ("RUST_LOG", "info,sessionguard_controller=debug,kube=warn"),
            ("SESSIONGUARD_ADMISSION_POLICIES", &policies),
        ],
        &log,
    )?;
    eprintln!("{name}: pid {}, {addr}, log {}", child.pid(), log.display());
    let mut ctl = Running {
        child: Some(child),
        addr,
        log,
        name: name.into(),
    };
    let cell = std::cell::RefCell::new(&mut ctl);
    wait::until(
        &format!("the {name} to be ready as {role}"),
        await_::TIMEOUT,
        || async {
            cell.borrow_mut().check_running()?;
            let ready = http_get(addr, "/readyz").await.ok();
            Ok(ready.filter(|r| r.starts_with(role)).map(|_| ()))
        },
    )
    .await?;
    Ok(ctl)
}
