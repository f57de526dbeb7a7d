//! Reports are node-bound; foreign PDBs are never touched; a controller
//! restart (kill -9) loses no protection.

mod controller_support;

use std::time::Duration;

use controller_support as sg;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Error, Result, check, wait};

const BASTION: &str = r#"
metadata:
  name: bastion
  labels: {sessionguard.io/protect: "true"}
spec:
  containers: [{name: main, image: debian:12}]
"#;

async fn await_event(env: &TestEnv, pod: &str, reason: &str) -> Result<Event> {
    let events: Api<Event> = env.api();
    let lp = ListParams::default().fields(&format!("regarding.name={pod}"));
    wait::until(
        &format!("event {reason} on {pod}"),
        await_::TIMEOUT,
        || async {
            Ok(events
                .list(&lp)
                .await?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason)))
        },
    )
    .await
}

fn report(node: &str, name: &str, pod: &Pod) -> Result<DynamicObject> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let cid = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c[0].container_id.clone().unwrap_or_default())
        .unwrap_or_default();
    let cid = cid.rsplit("://").next().unwrap_or_default().to_string();
    let now = jiff::Timestamp::now().to_string();
    Ok(serde_json::from_value(json!({
        "apiVersion": "sessionguard.io/v1alpha1",
        "kind": "SessionReport",
        "metadata": {"name": name},
        "spec": {"node": node, "generated_at": now, "sequence": 1, "sessions": [{
            "pod_uid": uid, "container_id": cid, "tty": "pts/7", "pid": 4242, "command": "bash",
            "uid": 1000, "started_at": now, "processes": 1
        }]}
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_cross_node_reports_are_refused() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("ctl-forged").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let ctl = sg::start_controller(&env, "ctl-forged", &["--agent-grace", "6s"]).await?;
    env.create_yaml::<Pod>(BASTION).await?;
    let pods: Api<Pod> = env.api();
    let bastion = await_::pod_ready(&pods, "bastion").await?;
    let node = env.node_name().to_string();

    // An agent token (bound to a pod on this node) may write only this node's report.
    let (_agent_pod, kubeconfig) = sg::agent_kubeconfig(&env, "agent-identity", &node).await?;
    let agent_client = sessionguard_e2e::controlplane::kubeconfig::client(&kubeconfig).await?;
    let as_agent = sg::report_api(&agent_client);
    let forged = report("other-node", "other-node", &bastion)?;
    match as_agent.create(&PostParams::default(), &forged).await {
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {
            eprintln!("forged report refused: {} {}", s.code, s.message);
            check(
                s.message.contains(&node),
                format!("the refusal names the agent's node: {}", s.message),
            )?;
        }
        other => {
            return Err(Error::Invalid(format!(
                "forged report was not refused: {other:?}"
            )));
        }
    }
    let mismatched = report("other-node", &node, &bastion)?;
    match as_agent.create(&PostParams::default(), &mismatched).await {
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => {
            check(
                s.message.contains("spec.node"),
                format!("the refusal names spec.node: {}", s.message),
            )?;
        }
        other => {
            return Err(Error::Invalid(format!(
                "spec.node mismatch was not refused: {other:?}"
            )));
        }
    }
    let own = report(&node, &node, &bastion)?;
    let pp = PatchParams::apply("e2e").force();
    let written = std::time::Instant::now();
    as_agent.patch(&node, &pp, &Patch::Apply(&own)).await?;
    await_::object(
        &env.api::<PodDisruptionBudget>(),
        "sessionguard-bastion",
        "created from the node's own report",
        |_| true,
    )
    .await?;
    // Deleting the report is not a way to drop protection at once: its sessions
    // count until the agent grace (6 s here) runs out, then the pod is released
    // as for a silent agent.
    let admin_reports = sg::report_api(env.client());
    admin_reports.delete(&node, &Default::default()).await?;
    wait::until(
        "PDB released after the report is deleted",
        await_::TIMEOUT,
        || async {
            Ok(env
                .api::<PodDisruptionBudget>()
                .get_opt("sessionguard-bastion")
                .await?
                .is_none()
                .then_some(()))
        },
    )
    .await?;
    let held = written.elapsed();
    check(
        held >= std::time::Duration::from_secs(6),
        format!("released {held:?} after the last report, before the 6 s agent grace"),
    )?;
    let released = await_event(&env, "bastion", "Released").await?;
    check(
        released
            .note
            .as_deref()
            .is_some_and(|n| n.contains("has not reported since")),
        format!("released as a silent agent: {:?}", released.note),
    )?;

    // A report for another node (written by an admin, so the policy does not
    // apply) claiming this node's pod is refused by the controller.
    let cross = report("sim-elsewhere", "sim-elsewhere", &bastion)?;
    admin_reports
        .patch("sim-elsewhere", &pp, &Patch::Apply(&cross))
        .await?;
    let ev = await_event(&env, "bastion", "CrossNodeReportRefused").await?;
    eprintln!("controller: {}", ev.note.unwrap_or_default());
    wait::until("cross_node refusal counted", await_::TIMEOUT, || async {
        Ok(ctl
            .metric(
                "sessionguard_report_errors_total",
                &[("kind", "cross_node")],
            )
            .await?
            .filter(|v| *v >= 1.0))
    })
    .await?;
    check(
        env.api::<PodDisruptionBudget>()
            .get_opt("sessionguard-bastion")
            .await?
            .is_none(),
        "a cross-node report created no PDB",
    )?;
    admin_reports
        .delete("sim-elsewhere", &Default::default())
        .await
        .ok();
    drop(ctl);
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_pdb_with_our_name_survives() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("ctl-user-pdb").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let _ctl = sg::start_controller(&env, "ctl-user-pdb", &[]).await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    env.create_yaml::<Pod>(BASTION).await?;
    let pods: Api<Pod> = env.api();
    await_::pod_ready(&pods, "bastion").await?;
    let user: PodDisruptionBudget = env
        .create_yaml(
            r#"
metadata: {name: sessionguard-bastion, labels: {owner: team-a}}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: something-else}}
"#,
        )
        .await?;
    let session = env.session("bastion", "main", &["sh"]).await?;
    let ev = await_event(&env, "bastion", "PDBNameTaken").await?;
    eprintln!("controller: {}", ev.note.unwrap_or_default());
    session.close()?;
    await_event(&env, "bastion", "SessionEnded").await?;
    // The release step (which would delete a PDB of ours) runs before the pod's
    // autoscaler annotations are restored in the same reconcile: once they are,
    // any wrong delete would already have happened.
    await_::object(&pods, "bastion", "autoscaler annotations restored", |p| {
        !p.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("karpenter.sh/do-not-disrupt"))
    })
    .await?;
    let after = env
        .api::<PodDisruptionBudget>()
        .get("sessionguard-bastion")
        .await?;
    check(
        after.metadata.uid == user.metadata.uid
            && after.metadata.generation == user.metadata.generation,
        "the user's PDB is the same object, unmodified",
    )?;
    check(
        !after
            .metadata
            .labels
            .unwrap_or_default()
            .contains_key("app.kubernetes.io/managed-by"),
        "no label of ours on the user's PDB",
    )?;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_kill9_loses_no_protection() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("ctl-restart").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let t = std::time::Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", t.elapsed().as_secs_f64());
    let mut first = sg::start_controller(&env, "ctl-restart-a", &[]).await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    env.create_yaml::<Pod>(BASTION).await?;
    let pods: Api<Pod> = env.api();
    await_::pod_ready(&pods, "bastion").await?;
    let mut pdbs = sg::PdbWatch::start(&env);
    let session = env.session("bastion", "main", &["sh"]).await?;
    pdbs.until("sessionguard-bastion", true, Duration::from_secs(10))
        .await?;
    let before = env
        .api::<PodDisruptionBudget>()
        .get("sessionguard-bastion")
        .await?;

    step("protected");
    first.kill9();
    let second = sg::start_controller(&env, "ctl-restart-b", &[]).await?;
    // The new leader listed the report and the PDB: it must keep the PDB.
    second.until_protecting(env.ns(), "bastion").await?;
    step("new leader sees protection");
    // ... and has reconciled the bastion once: a wrong release would have been
    // decided by then. (Only pods with something to look at are reconciled;
    // the agent's identity pod has nothing.)
    second.until_reconciled(1).await?;
    let after = env
        .api::<PodDisruptionBudget>()
        .get("sessionguard-bastion")
        .await?;
    check(
        after.metadata.uid == before.metadata.uid,
        "the PDB survived the restart (same UID)",
    )?;
    check(
        !pdbs.current().is_empty(),
        "the PDB watch never saw the PDB deleted during the restart",
    )?;
    step("PDB unchanged");
    match pods.evict("bastion", &Default::default()).await {
        Err(kube::Error::Api(s)) if s.code == 429 => {}
        other => return Err(Error::Invalid(format!("eviction after restart: {other:?}"))),
    }
    step("eviction refused");
    session.close()?;
    pdbs.until("sessionguard-bastion", false, Duration::from_secs(10))
        .await?;
    step("released");
    drop(second);
    env.finish().await
}
