//! login-protector's e2e, replayed against sessionguard on a real control plane:
//! the real controller and the real agent run as processes, the sessions are
//! real ptys in the pods' container cgroups on a simulated node.

mod controller_support;

use std::time::{Duration, Instant};

use controller_support as sg;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams};
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Error, Result, check, wait};

const SEED: &str = include_str!("../fixtures/target-sts.yaml");
const PDB: &str = "sessionguard-target-sts-0";
const REVISION: &str = "controller-revision-hash";

fn revision(p: &Pod) -> String {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION))
        .cloned()
        .unwrap_or_default()
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

/// Waits for a series of this test's namespace (other tests' pods may share
/// names) to reach `want`.
async fn await_metric(
    ctl: &sg::Controller,
    env: &TestEnv,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) -> Result<()> {
    let labels: Vec<(&str, &str)> = [("namespace", env.ns())]
        .into_iter()
        .chain(labels.iter().copied())
        .collect();
    let labels = labels.as_slice();
    wait::until(
        &format!("{name}{labels:?} == {want}"),
        await_::TIMEOUT,
        || async { Ok((ctl.metric(name, labels).await? == Some(want)).then_some(())) },
    )
    .await
}

const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

type Annotations = std::collections::BTreeMap<String, String>;

/// Every version of one pod (by name) the API server sends, with its UID.
struct PodHistory {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, Annotations)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodHistory {
    fn start(env: &TestEnv, name: &str) -> Self {
        use futures::StreamExt;
        let api: Api<Pod> = env.api();
        let cfg =
            kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut s = kube::runtime::watcher(api, cfg).boxed();
            while let Some(ev) = s.next().await {
                if let Ok(
                    kube::runtime::watcher::Event::Apply(p)
                    | kube::runtime::watcher::Event::InitApply(p),
                ) = ev
                {
                    let a = p.metadata.annotations.clone().unwrap_or_default();
                    sink.lock().expect("history").push((uid(&p), a));
                }
            }
        });
        Self { seen, task }
    }

    fn of_uid(&self, uid: &str) -> Vec<Annotations> {
        self.seen
            .lock()
            .expect("history")
            .iter()
            .filter(|(u, _)| u == uid)
            .map(|(_, a)| a.clone())
            .collect()
    }
}

impl Drop for PodHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_protector_replay() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("ctl-lp-replay").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let ctl = sg::start_controller(&env, "ctl-lp", &[]).await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    let mut pdbs = sg::PdbWatch::start(&env);
    let pods: Api<Pod> = env.api();
    let sets: Api<StatefulSet> = env.api();
    let ns = env.ns().to_string();
    let node = env.node_name().to_string();
    let t = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", t.elapsed().as_secs_f64());

    // The seed's manifest with two replicas, and the same set without the opt-in label.
    env.create_yaml::<StatefulSet>(&SEED.replace("replicas: 1", "replicas: 2"))
        .await?;
    let nontarget = SEED.replace("target-sts", "nontarget-sts").replace(
        "login-protector.cybozu.io/protect: \"true\"",
        "app: nontarget",
    );
    env.create_yaml::<StatefulSet>(&nontarget).await?;
    let t0 = await_::pod_ready(&pods, "target-sts-0").await?;
    let t1 = await_::pod_ready(&pods, "target-sts-1").await?;
    await_::pod_ready(&pods, "nontarget-sts-0").await?;
    await_metric(
        &ctl,
        &env,
        "sessionguard_pod_protecting",
        &[("pod", "target-sts-0")],
        0.0,
    )
    .await?;

    // A value of the user's own for an autoscaler annotation: set while logged in,
    // it must come back afterwards. Every version of target-sts-0 is recorded, so
    // the restore is seen even though the rollout replaces the pod right after.
    let (ok, out) = env
        .kubectl(&[
            "-n",
            &ns,
            "annotate",
            "pod",
            "target-sts-0",
            "cluster-autoscaler.kubernetes.io/safe-to-evict=true",
        ])
        .await?;
    check(ok, format!("annotate: {out}"))?;
    let history = PodHistory::start(&env, "target-sts-0");

    step("pods ready");
    // --- log in to target-sts-0: exactly one PDB, selecting only that pod, within 1 s ---
    // The controller writes the pod's label and its PDB at once, so either may
    // land first; the pod is protected once both exist. The latency counts to
    // that moment, not to the PDB alone.
    let opened = Instant::now();
    let session = env.session("target-sts-0", "main", &["sh"]).await?;
    pdbs.until(PDB, true, Duration::from_secs(10)).await?;
    let pdb_api = env.api::<PodDisruptionBudget>();
    let (pdb, selected) = wait::until(
        "the PDB to exist and select the logged-in pod",
        Duration::from_secs(10),
        || async {
            let all = pdb_api.list(&ListParams::default()).await?.items;
            check(
                all.len() == 1,
                format!("expected exactly one PDB, got {}", all.len()),
            )?;
            let pdb = all.into_iter().next().expect("one PDB");
            let selector = pdb
                .spec
                .clone()
                .unwrap_or_default()
                .selector
                .and_then(|s| s.match_labels)
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let selected: Vec<String> = pods
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            Ok((!selected.is_empty()).then_some((pdb, selected)))
        },
    )
    .await?;
    let login_latency = opened.elapsed();
    eprintln!("login -> protected (PDB and label): {login_latency:?}");
    check(
        login_latency <= Duration::from_secs(1),
        format!("protection took {login_latency:?} (> 1s)"),
    )?;
    let spec = pdb.spec.clone().unwrap_or_default();
    check(
        spec.max_unavailable
            == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0)),
        "maxUnavailable must be 0",
    )?;
    check(
        selected == ["target-sts-0"],
        format!("PDB selects {selected:?}"),
    )?;
    let owner = pdb.metadata.owner_references.clone().unwrap_or_default();
    check(
        owner.len() == 1 && owner[0].uid == uid(&t0),
        "PDB is owned by the pod",
    )?;
    let annotations = pods
        .get("target-sts-0")
        .await?
        .metadata
        .annotations
        .unwrap_or_default();
    check(
        annotations
            .get("cluster-autoscaler.kubernetes.io/safe-to-evict")
            .map(String::as_str)
            == Some("false")
            && annotations
                .get("karpenter.sh/do-not-disrupt")
                .map(String::as_str)
                == Some("true"),
        format!("autoscaler annotations set while logged in: {annotations:?}"),
    )?;
    await_metric(
        &ctl,
        &env,
        "sessionguard_pod_protecting",
        &[("pod", "target-sts-0")],
        1.0,
    )
    .await?;
    await_metric(
        &ctl,
        &env,
        "sessionguard_pod_sessions",
        &[("pod", "target-sts-0")],
        1.0,
    )
    .await?;

    step("protected");
    // --- the eviction API answers 429, and kubectl drain is blocked ---
    match pods.evict("target-sts-0", &EvictParams::default()).await {
        Err(kube::Error::Api(s)) if s.code == 429 => {}
        other => {
            return Err(Error::Invalid(format!(
                "eviction of a logged-in pod: {other:?}"
            )));
        }
    }
    let (ok, out) = env
        .kubectl(&[
            "drain",
            &node,
            "--pod-selector=statefulset.kubernetes.io/pod-name=target-sts-0",
            "--ignore-daemonsets",
            "--timeout=6s",
        ])
        .await?;
    check(!ok, format!("drain should be blocked, got: {out}"))?;
    check(
        out.contains("disruption budget"),
        format!("drain output names the PDB: {out}"),
    )?;
    env.kubectl(&["uncordon", &node]).await?;
    check(
        uid(&pods.get("target-sts-0").await?) == uid(&t0),
        "target-sts-0 survived the drain",
    )?;
    check(
        uid(&pods.get("target-sts-1").await?) == uid(&t1),
        "the drain touched only target-sts-0",
    )?;

    step("drain blocked");
    // --- kubectl set image while logged in: target-0 untouched, target-1 updated ---
    let (ok, out) = env
        .kubectl(&[
            "-n",
            &ns,
            "set",
            "image",
            "sts/target-sts",
            "main=ghcr.io/cybozu/ubuntu-debug:22.04",
        ])
        .await?;
    check(ok, format!("set image: {out}"))?;
    let sts = await_::object(&sets, "target-sts", "a new update revision", |s| {
        let st = s.status.clone().unwrap_or_default();
        st.update_revision.is_some() && st.update_revision != st.current_revision
    })
    .await?;
    let update = sts
        .status
        .and_then(|s| s.update_revision)
        .unwrap_or_default();
    let t1_new = await_::object(
        &pods,
        "target-sts-1",
        "replaced at the update revision",
        |p| uid(p) != uid(&t1) && revision(p) == update && await_::is_running_ready(p),
    )
    .await?;
    eprintln!("target-sts-1 replaced at {update} (uid {})", uid(&t1_new));
    await_metric(
        &ctl,
        &env,
        "sessionguard_pod_pending_updates",
        &[("pod", "target-sts-0")],
        1.0,
    )
    .await?;
    let still = pods.get("target-sts-0").await?;
    check(
        uid(&still) == uid(&t0) && revision(&still) != update,
        "logged-in target-sts-0 not replaced",
    )?;

    step("target-1 updated, target-0 held");
    // --- log out: PDB released, annotations restored, pod replaced, revision fixed up ---
    let closed = Instant::now();
    session.close()?;
    let gone = pdbs.until(PDB, false, Duration::from_secs(10)).await?;
    eprintln!("logout -> PDB deleted: {:?}", gone.duration_since(closed));
    let t0_new = await_::object(
        &pods,
        "target-sts-0",
        "replaced at the update revision",
        |p| uid(p) != uid(&t0) && revision(p) == update && await_::is_running_ready(p),
    )
    .await?;
    await_::object(
        &sets,
        "target-sts",
        "status.currentRevision fixed up",
        |s| {
            s.status
                .as_ref()
                .and_then(|s| s.current_revision.as_deref())
                == Some(update.as_str())
        },
    )
    .await?;
    let new_annotations = t0_new.metadata.annotations.clone().unwrap_or_default();
    check(
        !new_annotations.contains_key("karpenter.sh/do-not-disrupt"),
        "the replacement pod carries no protection",
    )?;
    // The logged-in pod itself, before the rollout took it: the user's value back,
    // ours gone, after having been protected.
    let versions = history.of_uid(&uid(&t0));
    let protected_at = versions
        .iter()
        .position(|a| a.get(SAFE_TO_EVICT).map(String::as_str) == Some("false"));
    let restored = protected_at.is_some_and(|i| {
        versions[i..].iter().any(|a| {
            a.get(SAFE_TO_EVICT).map(String::as_str) == Some("true")
                && !a.contains_key("karpenter.sh/do-not-disrupt")
        })
    });
    check(
        restored,
        format!("the user's safe-to-evict=true restored after logout; versions seen: {versions:?}"),
    )?;
    await_metric(
        &ctl,
        &env,
        "sessionguard_pod_protecting",
        &[("pod", "target-sts-0")],
        0.0,
    )
    .await?;
    await_metric(
        &ctl,
        &env,
        "sessionguard_pod_pending_updates",
        &[("pod", "target-sts-0")],
        0.0,
    )
    .await?;
    let r = sg::event_reasons(&env, "target-sts-0").await?;
    for want in [
        "SessionStarted",
        "Protected",
        "SessionEnded",
        "Released",
        "RolloutReplaced",
    ] {
        check(
            r.iter().any(|x| x == want),
            format!("event {want} on target-sts-0; got {r:?}"),
        )?;
    }

    step("released and rolled out");
    // --- a session in the non-target pod: seen by the controller, no PDB ---
    let s2 = env.session("nontarget-sts-0", "main", &["sh"]).await?;
    await_metric(
        &ctl,
        &env,
        "sessionguard_pod_sessions",
        &[("pod", "nontarget-sts-0")],
        1.0,
    )
    .await?;
    // The interaction label and, for a protected pod, the protection label are
    // written in one patch: a recorded interaction without the
    // protection label means the reconcile decided against protecting it.
    let n0 = await_::object(&pods, "nontarget-sts-0", "the interaction recorded", |p| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("sessionguard.io/interacted"))
            .is_some_and(|v| v == "true")
    })
    .await?;
    let labels = n0.metadata.labels.clone().unwrap_or_default();
    check(
        !labels.contains_key("sessionguard.io/pod-uid"),
        format!("the non-target pod was not protected: {labels:?}"),
    )?;
    let all = env
        .api::<PodDisruptionBudget>()
        .list(&ListParams::default())
        .await?
        .items;
    check(
        all.is_empty(),
        format!("no PDB for a non-target pod, got {}", all.len()),
    )?;
    check(
        !pdbs.current().iter().any(|n| n.contains("nontarget")),
        "PDB watch saw no non-target PDB",
    )?;
    s2.close()?;

    drop(ctl);
    env.finish().await
}
