//! The eviction webhook on the real API server: a logged-in pod whose
//! workload has its own PodDisruptionBudget. Without the webhook the eviction
//! API answers 500 ("more than one PodDisruptionBudget"), which aborts
//! `kubectl drain`; with it, 429 naming the login, one `EvictionBlocked`
//! event series naming who asked, and after logout the workload's own PDB
//! decides as if sessionguard were never there.

mod webhook_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams};
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, wait};
use webhook_support::{self as wh, ADMIN, check, sg};

const DB: &str = r#"
metadata:
  name: db-0
  labels: {app: db, sessionguard.io/protect: "true"}
spec:
  containers: [{name: main, image: debian:12}]
"#;

/// The workload's own budget: alone, it lets the pod go. (minAvailable, not
/// maxUnavailable: the disruption controller can count a bare pod only so.)
const BUDGET: &str = r#"
metadata:
  name: db-budget
spec:
  minAvailable: 0
  selector: {matchLabels: {app: db}}
"#;

async fn blocked_events(env: &TestEnv) -> Result<Vec<Event>> {
    let api: Api<Event> = env.api();
    let lp = ListParams::default().fields("regarding.name=db-0");
    Ok(api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("EvictionBlocked"))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_a_pod_with_its_own_pdb_refuses_eviction_with_429_naming_it() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("wh-eviction").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let kubeconfig = wh::controller_kubeconfig(&env).await?;
    let port = wh::free_port()?;
    wh::install_webhooks(&env, port).await?;
    let ctl = wh::start(&env, &kubeconfig, "wh-evict", port, true, &[]).await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    env.create_yaml::<PodDisruptionBudget>(BUDGET).await?;
    env.create_yaml::<Pod>(DB).await?;
    let pods: Api<Pod> = env.api();
    await_::pod_ready(&pods, "db-0").await?;
    let mut pdbs = sg::PdbWatch::start(&env);
    let session = env.session("db-0", "main", &["sh"]).await?;
    pdbs.until("sessionguard-db-0", true, Duration::from_secs(10))
        .await?;

    // The webhook answers from the controller's cache, which saw our PDB
    // when the PDB watch above did (or a moment later): retry until it does.
    let asked = Instant::now();
    let status = wait::until(
        "eviction refused by the webhook with 429",
        await_::TIMEOUT,
        || async {
            match pods.evict("db-0", &EvictParams::default()).await {
                Err(kube::Error::Api(s)) if s.code == 429 && s.message.contains("sessionguard") => {
                    Ok(Some(s))
                }
                Err(kube::Error::Api(s)) if s.code == 429 || s.code == 500 => Ok(None),
                other => Err(wh::invalid(format!(
                    "eviction of a logged-in pod: {other:?}"
                ))),
            }
        },
    )
    .await?;
    eprintln!("refusal: {}", status.message);
    check(
        status.message.contains("has 1 login (uid ") && status.message.contains(" on pts/"),
        format!("the message names the login: {}", status.message),
    )?;

    // One event, naming who asked and the node, within 2 s of the refusal.
    let ev = wait::until(
        "an EvictionBlocked event",
        Duration::from_secs(2),
        || async { Ok(blocked_events(&env).await?.into_iter().next()) },
    )
    .await?;
    eprintln!("EvictionBlocked after {:?}", asked.elapsed());
    let note = ev.note.clone().unwrap_or_default();
    check(
        note.contains(ADMIN) && note.contains(env.node_name()) && note.contains(" on pts/"),
        format!("the event names requester, node and login: {note}"),
    )?;
    // A drain retries every 5 s: three more attempts extend the same series.
    for _ in 0..3 {
        match pods.evict("db-0", &EvictParams::default()).await {
            Err(kube::Error::Api(s)) if s.code == 429 => {}
            other => return Err(wh::invalid(format!("a repeated eviction: {other:?}"))),
        }
    }
    let series = wait::until("the event series to count 4", await_::TIMEOUT, || async {
        let evs = blocked_events(&env).await?;
        let count = evs
            .iter()
            .filter_map(|e| e.series.as_ref().map(|s| s.count))
            .max();
        Ok((count == Some(4)).then_some(evs.len()))
    })
    .await?;
    check(
        series == 1,
        format!("one event for four refusals, not {series}"),
    )?;
    check(
        ctl.metric(
            "sessionguard_webhook_requests_total",
            &[("webhook", "eviction"), ("outcome", "refused")],
        )
        .await?
            >= Some(4.0),
        "refusals are counted",
    )?;

    // Logout: our PDB goes, and the workload's own budget (one may go) decides.
    session.close()?;
    pdbs.until("sessionguard-db-0", false, Duration::from_secs(15))
        .await?;
    wait::until(
        "the eviction to be allowed by the workload's own PDB",
        await_::TIMEOUT,
        || async {
            match pods.evict("db-0", &EvictParams::default()).await {
                Ok(_) => Ok(Some(())),
                // Our webhook's cache may lag our PDB's deletion by a moment,
                // and the disruption controller the new budget's status.
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    eprintln!("still refused: {}", s.message);
                    Ok(None)
                }
                Err(e) => Err(wh::invalid(format!("eviction after logout: {e}"))),
            }
        },
    )
    .await?;
    drop(ctl);
    env.finish().await
}
