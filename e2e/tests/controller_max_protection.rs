//! `--max-protection` escalation on the real control plane, with short
//! durations: a Warning `ProtectionExpiring` at the configured fraction of
//! the cap, release (`ProtectionExpired`, the PDB deleted) at the cap while
//! the login continues; a namespace's `sessionguard.io/max-protection`
//! annotation lowers the cap, and one above the flag does not raise it.

mod controller_support;

use std::time::{Duration, Instant};

use controller_support::{self as sg, check};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use sessionguard_core::keys;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, wait};

const POD: &str = r#"
metadata:
  name: box-0
  labels: {sessionguard.io/protect: "true"}
spec:
  containers: [{name: main, image: debian:12}]
"#;

/// Notes of our events on box-0 with `reason`.
async fn notes(env: &TestEnv, reason: &str) -> Result<Vec<String>> {
    let api: Api<Event> = env.api();
    let lp = ListParams::default().fields("regarding.name=box-0");
    Ok(api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect())
}

async fn await_note(env: &TestEnv, reason: &str, text: &str) -> Result<String> {
    wait::until(
        &format!("a {reason} event mentioning {text:?}"),
        await_::TIMEOUT,
        || async {
            Ok(notes(env, reason)
                .await?
                .into_iter()
                .find(|n| n.contains(text)))
        },
    )
    .await
}

async fn cap_namespace(env: &TestEnv, value: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(env.client().clone());
    let patch = serde_json::json!({"metadata": {"annotations": {keys::MAX_PROTECTION: value}}});
    api.patch(env.ns(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_warns_then_releases_and_a_namespace_only_lowers_it() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("max-protection").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    cap_namespace(&env, "4s").await?;
    let _ctl = sg::start_controller(
        &env,
        "cap-ctl",
        &["--max-protection", "10s", "--max-protection-warn-at", "50%"],
    )
    .await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    env.create_yaml::<Pod>(POD).await?;
    let pods: Api<Pod> = env.api();
    await_::pod_ready(&pods, "box-0").await?;
    let mut pdbs = sg::PdbWatch::start(&env);

    // The namespace's 4s: warned at 2s, released at 4s, not the flag's 10s.
    let session = env.session("box-0", "main", &["sh"]).await?;
    let created = pdbs
        .until("sessionguard-box-0", true, await_::TIMEOUT)
        .await?;
    let warning = await_note(&env, "ProtectionExpiring", "annotation 4s").await?;
    eprintln!("warning after {:?}: {warning}", created.elapsed());
    check(
        warning.contains("uid 0") || warning.contains("user uid:0"),
        format!("the warning names the login: {warning}"),
    )?;
    let released = pdbs
        .until("sessionguard-box-0", false, await_::TIMEOUT)
        .await?;
    let held = released.duration_since(created);
    eprintln!("namespace cap: protection held {held:?}");
    check(
        held >= Duration::from_secs(2) && held < Duration::from_secs(9),
        format!("released at the namespace's 4s cap, not the flag's 10s: held {held:?}"),
    )?;
    await_note(&env, "ProtectionExpired", "annotation 4s").await?;
    check(
        notes(&env, "ProtectionExpiring").await?.len() == 1,
        "one warning per protection",
    )?;
    session.close()?;
    await_::object(&pods, "box-0", "protected-since gone after logout", |p| {
        !p.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(keys::PROTECTED_SINCE))
    })
    .await?;

    // Above the flag: ignored, the flag's 10s applies.
    cap_namespace(&env, "1h").await?;
    let session = env.session("box-0", "main", &["sh"]).await?;
    let created = pdbs
        .until("sessionguard-box-0", true, await_::TIMEOUT)
        .await?;
    let started = Instant::now();
    await_note(&env, "ProtectionExpiring", "--max-protection 10s").await?;
    let warned = started.elapsed();
    let released = pdbs
        .until("sessionguard-box-0", false, Duration::from_secs(30))
        .await?;
    let held = released.duration_since(created);
    eprintln!("flag cap: protection held {held:?} (warning seen {warned:?} after the PDB)");
    check(
        held >= Duration::from_secs(8) && held < Duration::from_secs(20),
        format!("released at the flag's 10s, not raised to 1h: held {held:?}"),
    )?;
    await_note(&env, "ProtectionExpired", "--max-protection 10s").await?;
    check(
        sg::event_reasons(&env, "box-0")
            .await?
            .iter()
            .any(|r| r == "Protected"),
        "the pod was protected first",
    )?;
    drop(session);
    env.finish().await
}
