//! kube-exec-controller's flow with agent-seen logins: interaction -> label,
//! annotations, events; eviction at the TTL, on time even when the controller
//! is killed (-9) mid-timer; postponed while logged in on a protected pod;
//! allowlisted namespaces untouched.

mod controller_support;

use std::time::Duration;

use controller_support as sg;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Error, Result, check, wait};

fn pod_yaml(name: &str, protected: bool) -> String {
    let labels = if protected {
        r#"{sessionguard.io/protect: "true"}"#
    } else {
        "{app: box}"
    };
    format!(
        "metadata:\n  name: {name}\n  labels: {labels}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: main, image: debian:12}}]\n"
    )
}

fn annotation(p: &Pod, k: &str) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(k))
        .cloned()
}

/// Waits until the pod is being deleted (or gone); returns when we saw it.
async fn await_evicted(
    pods: &Api<Pod>,
    name: &str,
    uid: &str,
    timeout: Duration,
) -> Result<jiff::Timestamp> {
    wait::until(&format!("{name} to be evicted"), timeout, || async {
        Ok(match pods.get_opt(name).await? {
            Some(p)
                if p.metadata.uid.as_deref() == Some(uid)
                    && p.metadata.deletion_timestamp.is_none() =>
            {
                None
            }
            _ => Some(jiff::Timestamp::now()),
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interaction_recorded_and_evicted_on_time_across_kill9() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("ctl-drift").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let args = ["--evict-interacted", "true", "--ttl", "25s"];
    let mut first = sg::start_controller(&env, "ctl-drift-a", &args).await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    env.create_yaml::<Pod>(&pod_yaml("box", false)).await?;
    let pods: Api<Pod> = env.api();
    let pod = await_::pod_ready(&pods, "box").await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();

    let session = env.session("box", "main", &["sh"]).await?;
    let marked = await_::object(&pods, "box", "marked as interacted", |p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("sessionguard.io/interacted"))
            .map(String::as_str)
            == Some("true")
            && annotation(p, "sessionguard.io/evict-at").is_some()
    })
    .await?;
    for k in [
        "first-interaction",
        "last-interaction",
        "interactor",
        "ttl",
        "evict-at",
    ] {
        check(
            annotation(&marked, &format!("sessionguard.io/{k}")).is_some(),
            format!("annotation {k}"),
        )?;
    }
    check(
        annotation(&marked, "sessionguard.io/ttl").as_deref() == Some("25s"),
        "ttl recorded",
    )?;
    check(
        annotation(&marked, "sessionguard.io/interactor").as_deref() == Some("uid:0"),
        "interactor is the login's uid",
    )?;
    let evict_at: jiff::Timestamp = annotation(&marked, "sessionguard.io/evict-at")
        .unwrap_or_default()
        .parse()
        .map_err(|e| Error::Invalid(format!("evict-at: {e}")))?;
    wait::until(
        "SessionStarted and EvictionScheduled events",
        await_::TIMEOUT,
        || async {
            let r = sg::event_reasons(&env, "box").await?;
            Ok((r.iter().any(|x| x == "SessionStarted")
                && r.iter().any(|x| x == "EvictionScheduled"))
            .then_some(()))
        },
    )
    .await?;
    session.close()?;

    // kill -9 mid-timer; a new controller takes over the Lease and the timer.
    first.kill9();
    let left = evict_at.duration_since(jiff::Timestamp::now());
    check(
        left.as_secs_f64() > 5.0,
        format!("the kill came only {left:?} before evict-at: too late to test a takeover"),
    )?;
    let _second = sg::start_controller(&env, "ctl-drift-b", &args).await?;
    let seen = await_evicted(&pods, "box", &uid, Duration::from_secs(90)).await?;
    let late = seen.duration_since(evict_at);
    eprintln!(
        "evict-at {evict_at}, eviction observed {seen} ({:.1}s after)",
        late.as_secs_f64()
    );
    check(
        late.as_secs_f64() >= 0.0,
        format!("evicted {late:?} before evict-at"),
    )?;
    check(
        late.as_secs_f64() <= 5.0,
        format!("evicted {late:?} after evict-at"),
    )?;
    let events: Api<Event> = env.api();
    let lp = ListParams::default().fields("regarding.name=box");
    let evicted: Vec<Event> = events
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Evicted"))
        .collect();
    check(
        evicted
            .iter()
            .any(|e| e.reporting_instance.as_deref() == Some("ctl-drift-b")),
        format!(
            "the eviction was done by the controller that took over: {:?}",
            evicted
                .iter()
                .map(|e| &e.reporting_instance)
                .collect::<Vec<_>>()
        ),
    )?;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postponed_while_logged_in_on_a_protected_pod() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("ctl-postpone").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let _ctl = sg::start_controller(
        &env,
        "ctl-postpone",
        &["--evict-interacted", "true", "--ttl", "3s"],
    )
    .await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    env.create_yaml::<Pod>(&pod_yaml("bastion", true)).await?;
    let pods: Api<Pod> = env.api();
    let pod = await_::pod_ready(&pods, "bastion").await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let session = env.session("bastion", "main", &["sh"]).await?;
    wait::until("EvictionPostponed", await_::TIMEOUT, || async {
        Ok(sg::event_reasons(&env, "bastion")
            .await?
            .iter()
            .any(|x| x == "EvictionPostponed")
            .then_some(()))
    })
    .await?;
    let still = pods.get("bastion").await?;
    check(
        still.metadata.uid.as_deref() == Some(uid.as_str())
            && still.metadata.deletion_timestamp.is_none(),
        "not evicted while logged in",
    )?;
    session.close()?;
    await_evicted(&pods, "bastion", &uid, await_::TIMEOUT).await?;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlisted_namespace_is_untouched() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("ctl-allowlist").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let allow = format!("kube-system,{}", env.ns());
    let ctl = sg::start_controller(
        &env,
        "ctl-allowlist",
        &[
            "--evict-interacted",
            "true",
            "--ttl",
            "2s",
            "--namespace-allowlist",
            &allow,
        ],
    )
    .await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    env.create_yaml::<Pod>(&pod_yaml("box", false)).await?;
    let pods: Api<Pod> = env.api();
    let pod = await_::pod_ready(&pods, "box").await?;
    let session = env.session("box", "main", &["sh"]).await?;
    // Allowlisted: no eviction time, and the reason instead.
    let marked = await_::object(&pods, "box", "marked as interacted", |p| {
        annotation(p, "sessionguard.io/first-interaction").is_some()
    })
    .await?;
    session.close()?;
    check(
        annotation(&marked, "sessionguard.io/evict-at").is_none()
            && annotation(&marked, "sessionguard.io/eviction").as_deref()
                == Some("off: namespace allowlisted"),
        format!("allowlisted: {:?}", marked.metadata.annotations),
    )?;
    // When it would have been due (first + 2s), were eviction on.
    let evict_at: jiff::Timestamp = annotation(&marked, "sessionguard.io/first-interaction")
        .unwrap_or_default()
        .parse::<jiff::Timestamp>()
        .map_err(|e| Error::Invalid(format!("first-interaction: {e}")))?
        + jiff::SignedDuration::from_secs(2);
    // Proving a non-event needs time to pass: wait until well after evict-at,
    // with the controller reconciling the pod meanwhile (SessionEnded shows it did).
    wait::until("SessionEnded", await_::TIMEOUT, || async {
        Ok(sg::event_reasons(&env, "box")
            .await?
            .iter()
            .any(|x| x == "SessionEnded")
            .then_some(()))
    })
    .await?;
    let wait_for = evict_at
        .duration_since(jiff::Timestamp::now())
        .as_secs_f64()
        .max(0.0)
        + 5.0;
    tokio::time::sleep(Duration::from_secs_f64(wait_for)).await;
    let still = pods.get("box").await?;
    check(
        still.metadata.uid == pod.metadata.uid && still.metadata.deletion_timestamp.is_none(),
        "allowlisted pod not evicted",
    )?;
    check(
        ctl.metric("sessionguard_evictions_total", &[("reason", "drift")])
            .await?
            .is_none(),
        "no drift eviction attempted",
    )?;
    env.finish().await
}

/// A node whose clock runs behind dates its logins early; the pod is older
/// than the skew, so the [creation, now] bounds alone would not catch it and
/// the pod would be evicted before its TTL. The report is written as that
/// node's agent (its real identity), with every node time shifted back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_clock_behind_does_not_evict_early() -> Result<()> {
    use kube::api::{Patch, PatchParams};
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("ctl-skew").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let ttl = 20;
    let ttl_arg = format!("{ttl}s");
    let args = ["--evict-interacted", "true", "--ttl", ttl_arg.as_str()];
    let _ctl = sg::start_controller(&env, "ctl-skew", &args).await?;
    env.create_yaml::<Pod>(&pod_yaml("box", false)).await?;
    let pods: Api<Pod> = env.api();
    let pod = await_::pod_ready(&pods, "box").await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let created = pod.metadata.creation_timestamp.as_ref().unwrap().0;
    let node = env.node_name().to_string();
    let (_agent_pod, kubeconfig) = sg::agent_kubeconfig(&env, "skewed-agent", &node).await?;
    let as_agent =
        sg::report_api(&sessionguard_e2e::controlplane::kubeconfig::client(&kubeconfig).await?);
    let cid = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let cid = cid.rsplit("://").next().unwrap().to_string();

    // The pod must be older than half the TTL when the login starts, so that
    // the old bound (pod creation) would have evicted it at creation + TTL,
    // well before login + TTL.
    let skew = jiff::SignedDuration::from_secs(15 * 60);
    wait::until(
        "the pod to be 12 s old",
        Duration::from_secs(30),
        || async {
            Ok((jiff::Timestamp::now().duration_since(created).as_secs() >= 12).then_some(()))
        },
    )
    .await?;
    let login = jiff::Timestamp::now();
    let on_node = |t: jiff::Timestamp| (t - skew).to_string();
    let report: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "sessionguard.io/v1alpha1",
        "kind": "SessionReport",
        "metadata": {"name": node},
        "spec": {"node": node, "generated_at": on_node(login), "sequence": 1, "sessions": [{
            "pod_uid": uid, "container_id": cid, "tty": "pts/7", "pid": 4242, "command": "bash",
            "uid": 1000, "started_at": on_node(login), "processes": 1
        }]}
    }))?;
    let pp = PatchParams::apply("sessionguard-agent").force();
    as_agent.patch(&node, &pp, &Patch::Apply(&report)).await?;

    let marked = await_::object(&pods, "box", "evict-at recorded", |p| {
        annotation(p, "sessionguard.io/evict-at").is_some()
    })
    .await?;
    let evict_at: jiff::Timestamp = annotation(&marked, "sessionguard.io/evict-at")
        .unwrap()
        .parse()
        .map_err(|e| Error::Invalid(format!("evict-at: {e}")))?;
    let earliest =
        login + jiff::SignedDuration::from_secs(ttl) - jiff::SignedDuration::from_secs(1);
    eprintln!(
        "pod created {created}, login {login} (node says {}), evict-at {evict_at}",
        on_node(login)
    );
    check(
        evict_at >= earliest,
        format!(
            "evict-at {evict_at} is before login + TTL ({earliest}); creation + TTL would be {}",
            created + jiff::SignedDuration::from_secs(ttl)
        ),
    )?;
    let seen = await_evicted(&pods, "box", &uid, Duration::from_secs(90)).await?;
    check(
        seen >= earliest,
        format!("evicted at {seen}, before login + TTL ({earliest})"),
    )?;
    env.finish().await
}
