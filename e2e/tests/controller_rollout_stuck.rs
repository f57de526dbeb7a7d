//! A rollout that waits on a stuck pod says so: an OnDelete StatefulSet's update
//! evicts a pod that a finalizer holds terminating; after `--rollout-stuck-after` the
//! controller records a `RolloutStuck` Warning on the set and `sessionguard_rollout_stuck`
//! is 1; once the finalizer goes, `RolloutResumed` and the gauge 0. Real control plane,
//! real StatefulSet controller, the real controller binary; the pods run on the
//! simulated node.

mod controller_support;

use controller_support as sg;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, wait};

const SEED: &str = include_str!("../fixtures/target-sts.yaml");
const HOLD: &str = "e2e.sessionguard.io/hold";
const GAUGE: &str = "sessionguard_rollout_stuck";

/// The notes of the set's events with `reason`.
async fn notes(env: &TestEnv, reason: &str) -> Result<Vec<String>> {
    let events: Api<Event> = env.api();
    let lp = ListParams::default().fields("regarding.name=target-sts,regarding.kind=StatefulSet");
    Ok(events
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect())
}

async fn await_gauge(ctl: &sg::Controller, env: &TestEnv, want: f64) -> Result<()> {
    let labels = [("namespace", env.ns()), ("statefulset", "target-sts")];
    wait::until(&format!("{GAUGE} == {want}"), await_::TIMEOUT, || async {
        Ok((ctl.metric(GAUGE, &labels).await? == Some(want)).then_some(()))
    })
    .await
}

async fn await_event(env: &TestEnv, reason: &str, mentions: &str) -> Result<String> {
    wait::until(
        &format!("a {reason} event naming {mentions}"),
        await_::TIMEOUT,
        || async {
            Ok(notes(env, reason)
                .await?
                .into_iter()
                .find(|n| n.contains(mentions)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_waiting_on_a_pod_held_terminating_is_stuck_then_resumes() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("ctl-rollout-stuck").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let ctl = sg::start_controller(&env, "ctl-stuck", &["--rollout-stuck-after", "3s"]).await?;
    let pods: Api<Pod> = env.api();
    let sets: Api<StatefulSet> = env.api();
    env.create_yaml::<StatefulSet>(&SEED.replace("replicas: 1", "replicas: 2"))
        .await?;
    await_::pod_ready(&pods, "target-sts-0").await?;
    let t1 = await_::pod_ready(&pods, "target-sts-1").await?;
    await_gauge(&ctl, &env, 0.0).await?;

    // The pod the rollout replaces first (highest ordinal) cannot finish terminating.
    pods.patch(
        "target-sts-1",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": [HOLD]}})),
    )
    .await?;
    let (ok, out) = env
        .kubectl(&[
            "-n",
            env.ns(),
            "set",
            "image",
            "sts/target-sts",
            "main=ghcr.io/cybozu/ubuntu-debug:22.04",
        ])
        .await?;
    sg::check(ok, format!("set image: {out}"))?;
    await_::object(&pods, "target-sts-1", "evicted and held terminating", |p| {
        p.metadata.uid == t1.metadata.uid && p.metadata.deletion_timestamp.is_some()
    })
    .await?;

    let stuck = await_event(&env, "RolloutStuck", "target-sts-1 is terminating").await?;
    eprintln!("RolloutStuck: {stuck}");
    await_gauge(&ctl, &env, 1.0).await?;
    sg::check(
        notes(&env, "RolloutResumed").await?.is_empty(),
        "no RolloutResumed while the pod is still held",
    )?;

    // The finalizer goes: the pod is deleted, replaced at the new revision, and the
    // rollout moves on.
    pods.patch(
        "target-sts-1",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    let resumed = await_event(&env, "RolloutResumed", "target-sts-1 is terminating").await?;
    eprintln!("RolloutResumed: {resumed}");
    await_gauge(&ctl, &env, 0.0).await?;
    // And the rollout completes (nobody is logged in).
    await_::object(&sets, "target-sts", "rolled out", |s| {
        let st = s.status.clone().unwrap_or_default();
        st.update_revision.is_some() && st.update_revision == st.current_revision
    })
    .await?;
    sg::check(
        notes(&env, "RolloutStuck").await?.len() == 1,
        "stuck said once",
    )?;
    drop(ctl);
    env.finish().await
}
