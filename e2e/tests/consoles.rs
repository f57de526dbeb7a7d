//! Consoles and debug shells, with real PID namespaces on the simulated node: a
//! `tty: true` container's console under `shareProcessNamespace` (its init is not
//! PID 1: the pause process is) is not a login, and a `kubectl debug -it` shell (PID 1
//! of its own ephemeral container) is one. The real agent and controller run as
//! processes against the real API server.

mod controller_support;

use controller_support as sg;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, wait};

/// The innermost pid of `pid` (last `NSpid` field): 1 for the init of a namespace.
fn ns_pid(pid: u64) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// The bare ID of the container named `name` in the pod's status (`ephemeral`:
/// among the ephemeral containers).
fn container_id(pod: &Pod, name: &str, ephemeral: bool) -> Option<String> {
    let status = pod.status.as_ref()?;
    let list = if ephemeral {
        status.ephemeral_container_statuses.as_ref()
    } else {
        status.container_statuses.as_ref()
    };
    let id = list?
        .iter()
        .find(|c| c.name == name)?
        .container_id
        .clone()?;
    Some(
        id.rsplit_once("://")
            .map_or(id.clone(), |(_, i)| i.to_string()),
    )
}

/// Waits until the node's report lists a session in container `cid`, and returns it.
async fn reported_session(env: &TestEnv, cid: &str) -> Result<Value> {
    let reports = sg::report_api(env.client());
    let node = env.node_name().to_string();
    wait::until(
        &format!("a session in container {}", &cid[..12]),
        await_::TIMEOUT,
        || {
            let (reports, node) = (reports.clone(), node.clone());
            async move {
                let Some(r) = reports.get_opt(&node).await? else {
                    return Ok(None);
                };
                Ok(r.data["spec"]["sessions"]
                    .as_array()
                    .and_then(|s| s.iter().find(|s| s["container_id"] == cid).cloned()))
            }
        },
    )
    .await
}

async fn pod_sessions(ctl: &sg::Controller, env: &TestEnv, pod: &str, want: f64) -> Result<()> {
    wait::until(
        &format!("sessionguard_pod_sessions{{pod={pod}}} == {want}"),
        await_::TIMEOUT,
        || async {
            let v = ctl
                .metric(
                    "sessionguard_pod_sessions",
                    &[("namespace", env.ns()), ("pod", pod)],
                )
                .await?;
            // The gauge has no series for a pod without sessions.
            Ok((v.unwrap_or(0.0) == want).then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_under_a_shared_pid_namespace_is_not_a_login() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("console-shared").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let ctl = sg::start_controller(&env, "ctl-console", &[]).await?;
    let _agent = sg::start_agent(&env, "200ms").await?;
    let pods: Api<Pod> = env.api();
    let pdbs: Api<PodDisruptionBudget> = env.api();
    env.create_yaml::<Pod>(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: bastion
  labels: {sessionguard.io/protect: "true"}
spec:
  shareProcessNamespace: true
  containers:
    - {name: console, image: ubuntu, tty: true, stdin: true}
    - {name: main, image: ubuntu}
"#,
    )
    .await?;
    let pod = await_::pod_ready(&pods, "bastion").await?;
    let cid = container_id(&pod, "console", false).expect("console container ID");

    let console = reported_session(&env, &cid).await?;
    assert_eq!(console["init"], true, "{console}");
    let pid = console["pid"].as_u64().unwrap();
    // Real: the pause process is PID 1 of the pod's namespace, the console's init is not.
    let inner = ns_pid(pid).expect("NSpid of the console");
    assert_ne!(
        inner, 1,
        "under shareProcessNamespace the console is not PID 1"
    );

    // A login beside it is counted, and only it: the console does not add a session.
    let login = env.session("bastion", "console", &["sh"]).await?;
    ctl.until_protecting(env.ns(), "bastion").await?;
    pod_sessions(&ctl, &env, "bastion", 1.0).await?;
    let logged_in = sg::report_api(env.client())
        .get(env.node_name())
        .await?
        .data["spec"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["container_id"] == cid.as_str())
        .map(|s| (s["pid"].as_u64().unwrap(), s["init"].as_bool().unwrap()))
        .collect::<Vec<_>>();
    assert!(
        logged_in.contains(&(pid, true)) && logged_in.iter().any(|&(_, init)| !init),
        "the console and the exec'd login are both reported: {logged_in:?}"
    );

    // Logging out releases the PDB although the console's terminal stays.
    login.close()?;
    wait::until("the PDB released", await_::TIMEOUT, || async {
        Ok(pdbs
            .get_opt("sessionguard-bastion")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    pod_sessions(&ctl, &env, "bastion", 0.0).await?;
    let still = reported_session(&env, &cid).await?;
    assert_eq!(
        still["pid"].as_u64(),
        Some(pid),
        "the console is still there"
    );
    let reasons = sg::event_reasons(&env, "bastion").await?;
    assert!(
        reasons.iter().filter(|r| *r == "SessionStarted").count() == 1,
        "one login, no event for the console: {reasons:?}"
    );
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_shell_in_an_ephemeral_container_is_a_login() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("debug-shell").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let ctl = sg::start_controller(&env, "ctl-debug", &[]).await?;
    let _agent = sg::start_agent(&env, "200ms").await?;
    let pods: Api<Pod> = env.api();
    env.create_yaml::<Pod>(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: app
  labels: {sessionguard.io/protect: "true"}
spec:
  containers:
    - {name: main, image: ubuntu}
"#,
    )
    .await?;
    await_::pod_ready(&pods, "app").await?;
    // The controller holds the opted-in pod (its protecting gauge reads 0).
    // No reconcile runs for it yet: a pod without sessions or state of ours
    // has nothing for one to look at.
    wait::until("the controller to cache app", await_::TIMEOUT, || async {
        let v = ctl
            .metric(
                "sessionguard_pod_protecting",
                &[("namespace", env.ns()), ("pod", "app")],
            )
            .await?;
        Ok((v == Some(0.0)).then_some(()))
    })
    .await?;
    pod_sessions(&ctl, &env, "app", 0.0).await?;

    // What `kubectl debug -it app --image=busybox` sends: an ephemeral container
    // with a terminal, through the ephemeralcontainers subresource.
    let debug = json!({"spec": {"ephemeralContainers": [
        {"name": "debugger", "image": "busybox", "tty": true, "stdin": true},
    ]}});
    pods.patch_subresource(
        "ephemeralcontainers",
        "app",
        &PatchParams::default(),
        &Patch::Strategic(&debug),
    )
    .await?;
    let pod = await_::object(&pods, "app", "the debugger running", |p| {
        container_id(p, "debugger", true).is_some()
    })
    .await?;
    let cid = container_id(&pod, "debugger", true).unwrap();
    let shell = reported_session(&env, &cid).await?;
    // PID 1 of its own namespace: the old "PID 1 is a console" rule ignored it.
    let pid = shell["pid"].as_u64().unwrap();
    assert_eq!(
        ns_pid(pid),
        Some(1),
        "the debug shell is PID 1 of its namespace"
    );
    assert_eq!(shell["init"], true, "{shell}");

    ctl.until_protecting(env.ns(), "app").await?;
    pod_sessions(&ctl, &env, "app", 1.0).await?;
    // The Protected event can land before SessionStarted: await it.
    wait::until(
        "a SessionStarted event for the debug shell (it is a login)",
        await_::TIMEOUT,
        || async {
            let reasons = sg::event_reasons(&env, "app").await?;
            Ok(reasons.iter().any(|r| r == "SessionStarted").then_some(()))
        },
    )
    .await?;
    env.finish().await
}
