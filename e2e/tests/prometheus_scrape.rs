//! A real Prometheus server scrapes the real agent and controller (running under the
//! chart's identities on the real control plane) with the chart's alert rules loaded,
//! rendered with a 3 s long-login threshold: silent without a login, firing while a
//! real pty session is open in a protected pod, resolved after logout.

mod chart_support;

use std::time::Duration;

use chart_support::prom::{Job, Prometheus};
use chart_support::{self as chart, Release, check, invalid};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, wait};

const ALERT: &str = "SessionguardLoginTooLong";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_and_fires_the_long_login_alert() -> Result<()> {
    let test = "prometheus_scrapes_and_fires_the_long_login_alert";
    let (Some(prometheus), Some(promtool)) = (
        chart::external_tool("prometheus", test)?,
        chart::external_tool("promtool", test)?,
    ) else {
        return Ok(());
    };
    let Some(env) = TestEnv::start("prom-scrape").await? else {
        return Ok(());
    };
    let release = Release::install(&env, "sgp", &[])?;
    let agent_pod = chart::await_component(&env, "sgp", "agent", 1)
        .await?
        .remove(0);
    let ctl_pod = chart::await_component(&env, "sgp", "controller", 1)
        .await?
        .remove(0);
    let agent = chart::start_agent(&env, &agent_pod, "500ms").await?;
    let ctl = chart::start_controller(&env, "sgp", &ctl_pod).await?;

    let pods: Api<Pod> = env.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bastion", "labels": {"sessionguard.io/protect": "true"}},
        "spec": {"containers": [{"name": "main", "image": "debian:12"}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let bastion_uid = await_::pod_ready(&pods, "bastion")
        .await?
        .metadata
        .uid
        .unwrap_or_default();

    // The chart's rules, with a short threshold (the default is 8h).
    let rules = chart::rules_file(&["alerts.longLogin.thresholdSeconds=3"])?;
    let node = env.node_name().to_string();
    let prom = Prometheus::start(
        &env,
        &prometheus,
        &promtool,
        &rules,
        &[
            Job {
                name: "sessionguard-agent",
                target: agent.addr,
                labels: &[("node", &node)],
            },
            Job {
                name: "sessionguard-controller",
                target: ctl.addr,
                labels: &[],
            },
        ],
    )
    .await?;

    // --- both targets up, the controller leading ---
    wait::until("both targets scraped and up", await_::TIMEOUT, || async {
        let up = prom.query("up == 1").await?;
        Ok((up.len() == 2).then_some(()))
    })
    .await?;
    wait::until(
        "sessionguard_leader scraped as 1",
        await_::TIMEOUT,
        || async {
            Ok(prom
                .query("sessionguard_leader == 1")
                .await?
                .len()
                .eq(&1)
                .then_some(()))
        },
    )
    .await?;

    // --- no login: the alert stays silent over several evaluations ---
    let since = jiff::Timestamp::now();
    prom.evaluated_since(since + jiff::SignedDuration::from_secs(4))
        .await?;
    let early = prom.alerts(ALERT).await?;
    check(
        early.iter().all(|a| a["labels"]["namespace"] != env.ns()),
        format!("{ALERT} active without a login: {early:?}"),
    )?;

    // --- a real pty session: scraped from both binaries, then the alert fires ---
    let session = env.session("bastion", "main", &["sh"]).await?;
    let opened = std::time::Instant::now();
    let ns = env.ns().to_string();
    let sel = format!("{{namespace=\"{ns}\",pod=\"bastion\"}}");
    wait::until(
        "the controller protecting the pod, in Prometheus",
        await_::TIMEOUT,
        || async {
            let v = prom
                .query(&format!("sessionguard_pod_protecting{sel}"))
                .await?;
            Ok(v.first().filter(|(_, v)| *v == 1.0).map(|_| ()))
        },
    )
    .await?;
    let firing = wait::until(
        &format!("{ALERT} firing for {ns}/bastion"),
        await_::TIMEOUT,
        || async {
            let alerts = prom.alerts(ALERT).await?;
            Ok(alerts.into_iter().find(|a| {
                a["state"] == "firing"
                    && a["labels"]["namespace"] == ns.as_str()
                    && a["labels"]["pod"] == "bastion"
            }))
        },
    )
    .await?;
    let took = opened.elapsed();
    let summary = firing["annotations"]["summary"]
        .as_str()
        .unwrap_or_default();
    check(
        summary.contains(&format!("{ns}/bastion")),
        format!("summary names the pod: {summary}"),
    )?;
    check(
        firing["annotations"]["runbook"]
            .as_str()
            .is_some_and(|r| r.contains("kubectl sessions get bastion")),
        format!("runbook: {}", firing["annotations"]),
    )?;
    let age = firing["value"]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| invalid(format!("alert value: {firing}")))?;
    check(
        age > 3.0,
        format!("alert value {age} must exceed the 3 s threshold"),
    )?;
    eprintln!(
        "{ALERT} firing {took:?} after login (threshold 3 s, scrape/eval 1 s), age {age:.1}s"
    );

    // The healthy agent and controller raise nothing else.
    for other in [
        "SessionguardAgentNotReporting",
        "SessionguardNoLeader",
        "SessionguardAgentDown",
    ] {
        check(
            prom.alerts(other).await?.is_empty(),
            format!("{other} active: {:?}", prom.alerts(other).await?),
        )?;
    }
    // The agent's own per-container gauge, scraped. The agent reads no pods, so
    // it names the pod by UID (the controller's gauges above carry the names).
    let by_uid = format!("{{pod_uid=\"{bastion_uid}\"}}");
    let doubled = prom
        .query(&format!(
            "sessionguard_agent_sessionguard_agent_sessions{by_uid}"
        ))
        .await?;
    check(
        doubled.is_empty(),
        "the agent exports sessionguard_agent_sessionguard_agent_sessions: its scrape-time \
         collector (agent/src/metrics.rs, SessionCollector) repeats the registry prefix",
    )?;
    wait::until(
        "the agent's session gauge in Prometheus",
        await_::TIMEOUT,
        || async {
            let v = prom
                .query(&format!("sessionguard_agent_sessions{by_uid}"))
                .await?;
            Ok(v.first().filter(|(_, v)| *v == 1.0).map(|_| ()))
        },
    )
    .await?;
    let (agent_rss, ctl_rss) = (agent.rss_kib(), ctl.rss_kib());
    eprintln!("RSS: agent {agent_rss:?} KiB, controller {ctl_rss:?} KiB (debug build)");

    // --- logout: the alert resolves ---
    session.close()?;
    wait::until(
        &format!("{ALERT} resolved after logout"),
        Duration::from_secs(60),
        || async {
            let alerts = prom.alerts(ALERT).await?;
            Ok(alerts
                .iter()
                .all(|a| a["labels"]["namespace"] != ns.as_str())
                .then_some(()))
        },
    )
    .await?;

    drop(prom);
    drop(ctl);
    drop(agent);
    release.uninstall()?;
    env.finish().await
}
