//! kubectl-sessions against live terminal sessions: a real pty in a pod's
//! container on a simulated node, seen by the real agent, recorded by the
//! real controller; the plugin's SESSIONS column follows the node's report.

mod webhook_support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use sessionguard_core::keys;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, wait};
use webhook_support::{self as wh, check, sg};

const POD: &str = "bastion";

async fn json_row(env: &TestEnv) -> Result<serde_json::Value> {
    let (code, out, err) = wh::plugin(env, &["-n", env.ns(), "get", POD, "-o", "json"]).await?;
    check(code == 0, format!("get exit {code}: {err}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["items"][0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_follows_live_sessions() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("plugin-sessions").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let _ctl = sg::start_controller(&env, "plugin-ctl", &[]).await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    wh::pod(&env, POD).await?;
    let pods: Api<Pod> = env.api();

    let session = env.session(POD, "app", &["sh"]).await?;
    let p = await_::object(&pods, POD, "login recorded by the controller", |p| {
        wh::annotation(p, keys::INTERACTOR).is_some_and(|u| u.starts_with("uid:"))
    })
    .await?;
    let who = wh::annotation(&p, keys::INTERACTOR).unwrap_or_default();
    let row = wait::until(
        "the plugin to show 1 live session",
        await_::TIMEOUT,
        || async {
            let r = json_row(&env).await?;
            Ok((r["sessions"] == 1).then_some(r))
        },
    )
    .await?;
    check(
        row["containers"] == serde_json::json!(["app"])
            && row["user"] == who.as_str()
            && row["node"] == env.node_name()
            && row["evictionTime"].as_str() == wh::annotation(&p, keys::EVICT_AT).as_deref(),
        format!("row matches the pod and the report: {row}"),
    )?;
    // Drift eviction is off (the default): no eviction time, and why not.
    check(
        wh::annotation(&p, keys::EVICT_AT).is_none()
            && wh::annotation(&p, keys::EVICTION).as_deref()
                == Some("off: --evict-interacted is false")
            && row["evictionOff"] == "--evict-interacted is false",
        format!("eviction off: {row} {:?}", p.metadata.annotations),
    )?;
    let (code, out, _) = wh::plugin(&env, &["-n", env.ns(), "get", POD]).await?;
    check(
        code == 0
            && out.lines().any(|l| {
                l.starts_with(POD)
                    && l.trim_end().ends_with("off (--evict-interacted is false)")
                    && !l.contains("(in ")
            }),
        format!("EVICTION-TIME says off:\n{out}"),
    )?;

    // All namespaces: a NAMESPACE column, and this pod listed as interacted.
    let (code, out, _) = wh::plugin(&env, &["get", "-A"]).await?;
    check(
        code == 0
            && out.starts_with("NAMESPACE")
            && out
                .lines()
                .any(|l| l.starts_with(env.ns()) && l.contains(POD) && l.contains(&who)),
        format!("-A:\n{out}"),
    )?;
    // A name with -A: looked up in every namespace (the kubeconfig's default
    // namespace is not the test's).
    let (code, out, err) = wh::plugin(&env, &["get", POD, "-A"]).await?;
    check(
        code == 0
            && out.starts_with("NAMESPACE")
            && out.lines().filter(|l| l.contains(POD)).count() == 1
            && out
                .lines()
                .any(|l| l.starts_with(env.ns()) && l.contains(POD)),
        format!("get {POD} -A: exit {code}\n{out}{err}"),
    )?;
    let (code, _, err) = wh::plugin(&env, &["get", "no-such-pod", "-A"]).await?;
    check(
        code == 1 && err.contains("pod no-such-pod not found in any namespace"),
        format!("get no-such-pod -A: exit {code}: {err}"),
    )?;
    // extend: names and --all together is a usage error, not a silent choice.
    let (code, _, err) =
        wh::plugin(&env, &["-n", env.ns(), "extend", POD, "--all", "-d", "1h"]).await?;
    check(
        code == 2 && err.contains("cannot be used with"),
        format!("extend POD --all: exit {code}: {err}"),
    )?;
    check(
        wh::annotation(&p, keys::LAST_INTERACTOR).as_deref() == Some(who.as_str()),
        "a login is the last interaction too",
    )?;
    let (code, out, _) = wh::plugin(&env, &["-n", env.ns(), "get", "-o", "wide"]).await?;
    check(
        code == 0 && out.contains("EXTENDED-BY") && out.contains(env.node_name()),
        format!("-o wide:\n{out}"),
    )?;

    session.close()?;
    wait::until(
        "the plugin to show 0 live sessions",
        await_::TIMEOUT,
        || async { Ok((json_row(&env).await?["sessions"] == 0).then_some(())) },
    )
    .await?;
    // The record stays after logout: it is what drift eviction works from.
    let (code, out, _) = wh::plugin(&env, &["-n", env.ns(), "get", "-o", "yaml"]).await?;
    check(
        code == 0 && out.contains(&format!("user: {who}")) && out.contains("sessions: 0"),
        format!("-o yaml:\n{out}"),
    )?;
    env.finish().await
}
