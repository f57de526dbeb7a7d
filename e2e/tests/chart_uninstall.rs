//! `helm uninstall` while logged in leaves nothing of ours: no PDB anywhere, our labels
//! and annotations gone, the autoscaler annotations back to what the user had, and no
//! SessionReport (the post-delete hook, under its own short-lived ServiceAccount).
//!
//! Real: the chart installed and uninstalled with the pinned helm; helm's pre-delete
//! hook Job created by helm, scheduled by the scheduler onto the simulated node, tracked
//! to completion by the Job controller, and deleted by helm (hook-succeeded) before it
//! deletes the release; likewise the post-delete hook, with its ServiceAccount and RBAC. The agent, two controller replicas (leader + standby) and the
//! cleanup are the real binaries under the chart's ServiceAccount, with tokens bound
//! to the chart's pods, through the chart's RBAC and admission policy.
//!
//! Simulated: the container runtime for the hook pod. The simulated node cannot pull
//! images (it runs `sleep infinity` for every container), so the test plays the
//! runtime: it runs the hook pod's own command and environment (as rendered by helm,
//! downward API resolved) as a host process with a token bound to that pod, and then
//! reports the container's exit to the API server as the kubelet would.

mod chart_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chart_support::{self as chart, Release, check, invalid};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sessionguard_e2e::harness::install::report_api;
use sessionguard_e2e::harness::{TestEnv, await_, workspace_bin};
use sessionguard_e2e::{Result, wait};

const RELEASE: &str = "sgu";
const CA: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
const KARPENTER: &str = "karpenter.sh/do-not-disrupt";
const OURS: &str = "app.kubernetes.io/managed-by=sessionguard";

fn protected_pod(name: &str, annotations: Value) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"sessionguard.io/protect": "true"},
            "annotations": annotations,
        },
        "spec": {"containers": [{"name": "main", "image": "debian:12", "command": ["sleep", "infinity"]}]}
    }))?)
}

/// The hook Job helm renders: the controller image's binary with `cleanup`, under the
/// controller's ServiceAccount.
fn check_rendered_hook(full: &str) -> Result<()> {
    let rendered = chart::template(
        RELEASE,
        "ns",
        &["--show-only", "templates/cleanup-job.yaml"],
    )?;
    let docs = chart::docs(&rendered)?;
    let job = chart::find(&docs, "Job", Some(&format!("{full}-cleanup")))?;
    let ann = &job["metadata"]["annotations"];
    check(
        ann["helm.sh/hook"] == "pre-delete"
            && ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded",
        format!("hook annotations: {ann}"),
    )?;
    check(
        job["spec"]["activeDeadlineSeconds"].as_i64().is_some(),
        "the Job has a deadline",
    )?;
    let pod = &job["spec"]["template"]["spec"];
    check(
        pod["serviceAccountName"] == format!("{full}-controller"),
        format!("hook ServiceAccount: {}", pod["serviceAccountName"]),
    )?;
    let c = &pod["containers"][0];
    check(
        c["command"] == json!(["/usr/local/bin/sessionguard-controller"])
            && c["args"] == json!(["cleanup"]),
        format!("hook command: {} {}", c["command"], c["args"]),
    )?;
    let rendered = chart::template(
        RELEASE,
        "ns",
        &["--show-only", "templates/reports-cleanup-job.yaml"],
    )?;
    let docs = chart::docs(&rendered)?;
    let job = chart::find(&docs, "Job", Some(&format!("{full}-reports-cleanup")))?;
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    check(
        job["metadata"]["annotations"]["helm.sh/hook"] == "post-delete"
            && pod["serviceAccountName"] == format!("{full}-reports-cleanup")
            && c["args"] == json!(["delete-reports"]),
        format!(
            "post-delete hook: {} under {} running {}",
            job["metadata"]["annotations"], pod["serviceAccountName"], c["args"]
        ),
    )?;
    for d in &docs {
        let ann = &d["metadata"]["annotations"];
        check(
            ann["helm.sh/hook"] == "post-delete"
                && ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded",
            format!(
                "{} {} must be a post-delete hook deleted on success: {ann}",
                d["kind"], d["metadata"]["name"]
            ),
        )?;
    }
    let off = chart::template(RELEASE, "ns", &["--set", "cleanupOnUninstall=false"])?;
    check(
        !off.contains("-cleanup\n"),
        "cleanupOnUninstall=false renders no hook",
    )?;
    Ok(())
}

/// The container's environment as the kubelet builds it: literal values and the
/// downward API fields the chart uses.
fn container_env(pod: &Pod) -> Result<Vec<(String, String)>> {
    let c = &pod
        .spec
        .as_ref()
        .ok_or_else(|| invalid("no spec"))?
        .containers[0];
    let mut out = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                let path = from
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.as_str())
                    .ok_or_else(|| {
                        invalid(format!("env {}: only fieldRef is simulated", e.name))
                    })?;
                match path {
                    "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
                    "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
                    other => return Err(invalid(format!("env {}: fieldRef {other}", e.name))),
                }
            }
            (None, None) => String::new(),
        };
        out.push((e.name.clone(), value));
    }
    Ok(out)
}

/// Plays the container runtime for the hook pod: runs its command (the workspace's
/// controller binary in place of the image's path) with its environment and a token
/// bound to it; returns the exit code and the log.
async fn run_hook_container(env: &TestEnv, pod: &Pod, log: &str) -> Result<(i32, String)> {
    let c = &pod
        .spec
        .as_ref()
        .ok_or_else(|| invalid("no spec"))?
        .containers[0];
    let command = c.command.clone().unwrap_or_default();
    check(
        command == ["/usr/local/bin/sessionguard-controller"],
        format!("hook pod command {command:?}"),
    )?;
    let args = c.args.clone().unwrap_or_default();
    let bin = workspace_bin("sessionguard-controller", "sessionguard-controller")?;
    let kubeconfig = chart::pod_kubeconfig(env, pod).await?;
    let log = env.scratch_dir().join(log);
    let file = std::fs::File::create(&log).map_err(|e| invalid(e.to_string()))?;
    let err = file.try_clone().map_err(|e| invalid(e.to_string()))?;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(&args)
        .env_clear()
        .envs(container_env(pod)?)
        .env("KUBECONFIG", &kubeconfig)
        .stdout(file)
        .stderr(err)
        .kill_on_drop(true);
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(90), cmd.status())
        .await
        .map_err(|_| invalid("the cleanup did not exit within 90s"))?
        .map_err(|e| invalid(format!("running {}: {e}", bin.display())))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "cleanup exited {status} after {:?}; log {}:\n{text}",
        started.elapsed(),
        log.display()
    );
    Ok((status.code().unwrap_or(-1), text))
}

/// The pod of the release's hook Job of `component`, once the scheduler has put it
/// on the simulated node and it runs; checked to run as `service_account`.
async fn running_hook_pod(
    all_pods: &Api<Pod>,
    component: &str,
    service_account: &str,
) -> Result<Pod> {
    let lp = ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
    ));
    let pod = wait::until(
        &format!("helm's {component} hook pod Running on the simulated node"),
        await_::TIMEOUT,
        || async {
            Ok(all_pods
                .list(&lp)
                .await?
                .items
                .into_iter()
                .find(await_::is_running_ready))
        },
    )
    .await?;
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone());
    check(
        sa.as_deref() == Some(service_account),
        format!("{component} hook pod ServiceAccount {sa:?}, not {service_account}"),
    )?;
    Ok(pod)
}

/// What the kubelet reports when a `restartPolicy: Never` container exits.
async fn report_exit(pods: &Api<Pod>, pod: &Pod, code: i32) -> Result<()> {
    let now = jiff::Timestamp::now().to_string();
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    let c = &pod
        .spec
        .as_ref()
        .ok_or_else(|| invalid("no spec"))?
        .containers[0];
    let status = json!({"status": {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}],
        "containerStatuses": [{
            "name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0,
            "started": false,
            "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                     "startedAt": now, "finishedAt": now}}
        }]
    }});
    pods.patch_status(
        pod.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    Ok(())
}

fn ours_left(pod: &Pod) -> Vec<String> {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    labels
        .keys()
        .chain(annotations.keys())
        .filter(|k| k.starts_with("sessionguard.io/") && *k != "sessionguard.io/protect")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_uninstall_while_logged_in_leaves_nothing_of_ours() -> Result<()> {
    let Some(env) = TestEnv::start("chart-uninstall").await? else {
        return Ok(());
    };
    let full = chart::fullname(RELEASE);
    check_rendered_hook(&full)?;

    // Before install: one pod whose user says safe-to-evict "true", one with nothing.
    let pods: Api<Pod> = env.api();
    pods.create(
        &PostParams::default(),
        &protected_pod("keep", json!({CA: "true", "team": "ops"}))?,
    )
    .await?;
    pods.create(&PostParams::default(), &protected_pod("bare", json!({}))?)
        .await?;
    for p in ["keep", "bare"] {
        await_::pod_ready(&pods, p).await?;
    }

    // The harness's controllers use a 5s Lease; the hook gets the same value.
    let release = Release::install(
        &env,
        RELEASE,
        &[
            "--set",
            "webhook.namespaceSelector.matchLabels.sessionguard\\.io/e2e-webhook-slot=never-set",
            "--set",
            "controller.leaseDuration=5s",
        ],
    )?;
    let agents = chart::await_component(&env, RELEASE, "agent", 1).await?;
    let controllers = chart::await_component(&env, RELEASE, "controller", 2).await?;
    let _agent = chart::start_agent(&env, &agents[0], "500ms").await?;
    let mut leader = chart::start_controller(&env, RELEASE, &controllers[0]).await?;
    let standby =
        chart::start_controller_as(&env, RELEASE, &controllers[1], "standby", "standby").await?;

    // Logged in to both: PDBs and autoscaler annotations appear.
    let pdbs: Api<PodDisruptionBudget> = env.api();
    let mut sessions = Vec::new();
    for p in ["keep", "bare"] {
        sessions.push(env.session(p, "main", &["sh"]).await?);
        await_::object(
            &pdbs,
            &format!("sessionguard-{p}"),
            "created for the login",
            |_| true,
        )
        .await?;
        await_::object(&pods, p, "safe-to-evict false", |pod| {
            pod.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.get(CA).map(String::as_str) == Some("false"))
        })
        .await?;
    }

    // --- helm uninstall, its pre-delete hook run for real by helm ---
    let uninstall = tokio::task::spawn_blocking(move || release.uninstall_with_hooks());
    let all_pods: Api<Pod> = env.api();
    let hook_pod = running_hook_pod(&all_pods, "cleanup", &format!("{full}-controller")).await?;
    let (code, log) = run_hook_container(&env, &hook_pod, "cleanup.log").await?;
    check(code == 0, format!("cleanup exited {code}"))?;
    check(
        // The chart's default logFormat is json.
        log.contains("cleanup summary")
            && log.contains(r#""pdbs_deleted":2,"#)
            && log.contains(r#""pods_restored":2,"#),
        "the summary counts the two PDBs and the two pods",
    )?;
    // Idempotent: a second run (a retried Job pod) finds nothing to do.
    let (code, log) = run_hook_container(&env, &hook_pod, "cleanup-again.log").await?;
    check(
        code == 0 && log.contains(r#""pdbs_deleted":0,"#) && log.contains(r#""pods_restored":0,"#),
        format!("a second cleanup exited {code} and did something"),
    )?;

    // Before reporting the exit (helm still waits on the hook): the old leader has
    // stepped down, the standby stays standby past several Lease durations, and no
    // PDB comes back for the pods still logged in. An absence can only be watched for
    // a while: four of the controllers' 5s Lease durations.
    let leader = std::cell::RefCell::new(&mut leader);
    wait::until("the old leader to step down", await_::TIMEOUT, || async {
        Ok(leader.borrow_mut().check_running().is_err().then_some(()))
    })
    .await?;
    let leases: Api<Lease> = env.api();
    let lease_name = format!("{full}-controller");
    let watch_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < watch_until {
        let lease = leases.get(&lease_name).await?;
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        check(
            holder.ends_with("-cleanup"),
            format!("the Lease went back to {holder:?} before the release was deleted"),
        )?;
        let back = pdbs.list(&ListParams::default().labels(OURS)).await?;
        check(
            back.items.is_empty(),
            format!(
                "a PDB came back: {:?}",
                back.items
                    .iter()
                    .map(|p| p.metadata.name.clone())
                    .collect::<Vec<_>>()
            ),
        )?;
        let r = chart::http_get(standby.addr, "/readyz")
            .await
            .unwrap_or_default();
        check(r.starts_with("standby"), format!("the standby says {r:?}"))?;
        tokio::time::sleep(wait::POLL * 5).await;
    }
    report_exit(&all_pods, &hook_pod, code).await?;

    // --- the post-delete hook: helm has deleted the release (the agent's pod with
    // it, so its token is refused from now on); the reports go ---
    let reports_pod = running_hook_pod(
        &all_pods,
        "reports-cleanup",
        &format!("{full}-reports-cleanup"),
    )
    .await?;
    let reports = report_api(env.client());
    check(
        reports.get_opt(env.node_name()).await?.is_some(),
        "the agent's SessionReport is there before the hook runs",
    )?;
    let (code, log) = run_hook_container(&env, &reports_pod, "delete-reports.log").await?;
    check(
        code == 0 && log.contains("report cleanup summary") && log.contains(r#""ok":true"#),
        format!("delete-reports exited {code}"),
    )?;
    check(
        reports.get_opt(env.node_name()).await?.is_none(),
        "the agent's SessionReport is deleted",
    )?;
    report_exit(&all_pods, &reports_pod, code).await?;
    uninstall
        .await
        .map_err(|e| invalid(format!("helm uninstall task: {e}")))??;

    // --- nothing of ours is left ---
    let all_pdbs: Api<PodDisruptionBudget> = Api::all(env.client().clone());
    let left = all_pdbs.list(&ListParams::default().labels(OURS)).await?;
    check(
        left.items.is_empty(),
        format!(
            "PDBs of ours left: {:?}",
            left.items
                .iter()
                .map(|p| p.metadata.name.clone())
                .collect::<Vec<_>>()
        ),
    )?;
    let keep = pods.get("keep").await?;
    let a = keep.metadata.annotations.clone().unwrap_or_default();
    check(
        a.get(CA).map(String::as_str) == Some("true")
            && !a.contains_key(KARPENTER)
            && a["team"] == "ops",
        format!("keep's annotations not restored: {a:?}"),
    )?;
    let bare = pods.get("bare").await?;
    let a = bare.metadata.annotations.clone().unwrap_or_default();
    check(
        !a.contains_key(CA) && !a.contains_key(KARPENTER),
        format!("bare's autoscaler annotations not removed: {a:?}"),
    )?;
    for p in [&keep, &bare] {
        let left = ours_left(p);
        check(left.is_empty(), format!("keys of ours left: {left:?}"))?;
        check(
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key("sessionguard.io/protect")),
            "the user's opt-in label stays",
        )?;
    }
    // The hook Job went with hook-succeeded; the Lease with the ServiceAccount it is
    // owned by (a reinstall must not wait out the 10-minute hold).
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = env.api();
    check(
        jobs.get_opt(&format!("{full}-cleanup")).await?.is_none()
            && jobs
                .get_opt(&format!("{full}-reports-cleanup"))
                .await?
                .is_none(),
        "helm deleted the hook Jobs",
    )?;
    let sas: Api<ServiceAccount> = env.api();
    let roles: Api<ClusterRole> = Api::all(env.client().clone());
    check(
        sas.get_opt(&format!("{full}-reports-cleanup"))
            .await?
            .is_none()
            && roles
                .get_opt(&format!("{full}-reports-cleanup"))
                .await?
                .is_none(),
        "the post-delete hook's ServiceAccount and ClusterRole went with its Job",
    )?;
    wait::until(
        "the Lease to go with its owner",
        await_::TIMEOUT,
        || async { Ok(leases.get_opt(&lease_name).await?.is_none().then_some(())) },
    )
    .await?;
    drop(sessions);
    env.finish().await
}
