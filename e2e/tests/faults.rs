//! Faults of the cluster around a login, on the real control plane: the API
//! server or etcd stops answering for longer than the agent grace, and the
//! controller is restarted meanwhile (as kubelet restarts it when it loses its
//! Lease). The agent is still in its retry backoff when the API server is
//! back (it is held until the new controller has reconciled), so the
//! controller must not take the outage for the agent's silence. The login
//! never ended: its PDB must be the same object afterwards and nothing may
//! have been released.
//!
//! These tests freeze components of their own binary's control plane, so they
//! never run against a reused dev cluster.

mod controller_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use controller_support as sg;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use sessionguard_e2e::harness::freeze::{freeze, freeze_child};
use sessionguard_e2e::harness::{TestEnv, await_, identity};
use sessionguard_e2e::{Error, Result, wait};

const BASTION: &str = r#"
metadata:
  name: bastion
  labels: {sessionguard.io/protect: "true"}
spec:
  containers: [{name: main, image: debian:12}]
"#;

/// Short enough for CI; the outage below is longer than this.
const GRACE: &str = "10s";
const OUTAGE: Duration = Duration::from_secs(16);

/// Logs in, freezes `component` past the grace, restarts the controller while
/// it is frozen, thaws it, and checks that the login's protection never
/// lapsed.
async fn outage_keeps_protection(test: &str, component: &str) -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start(test).await? else {
        return Ok(());
    };
    if env.cluster().reused {
        let why = "it freezes control-plane components, and this binary reuses a running cluster (SESSIONGUARD_CLUSTER_DIR or make dev-up)";
        if std::env::var_os("CI").is_some() {
            return Err(Error::Invalid(format!("{test} cannot run in CI: {why}")));
        }
        eprintln!("SKIPPED {test}: {why}");
        return env.finish().await;
    }
    sg::install(env.client()).await?;
    let t = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", t.elapsed().as_secs_f64());
    let args = ["--agent-grace", GRACE];
    let id = identity::chart_controller(&env, false).await?;
    let mut first = sg::spawn_controller(&env, &id, &format!("{test}-a"), &args)?;
    first.until_leader().await?;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let agent = sg::start_agent_full(&env, "500ms", any, "2s").await?;
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

    let agent_pid = agent.child.as_ref().map(|c| c.pid()).unwrap_or_default();
    let held_agent = freeze_child("the agent", agent_pid)?;
    let frozen = freeze(env.cluster(), component)?;
    let frozen_at = Instant::now();
    step(&format!("{component} frozen"));
    // The leader cannot renew its Lease: kubelet would restart it, and the new
    // process starts while nothing answers.
    first.kill9();
    let second = sg::spawn_controller(&env, &id, &format!("{test}-b"), &args)?;
    wait::until(
        "the new controller to say agents cannot be heard",
        await_::TIMEOUT,
        || async {
            let v = second
                .metric("sessionguard_agents_hearable", &[])
                .await
                .ok()
                .flatten();
            Ok((v == Some(0.0)).then_some(()))
        },
    )
    .await?;
    // The outage itself is a span of time, not a condition to await.
    tokio::time::sleep(OUTAGE.saturating_sub(frozen_at.elapsed())).await;
    frozen.thaw();
    step(&format!(
        "{component} thawed after {OUTAGE:?} (grace {GRACE})"
    ));

    second.until_leader().await?;
    step("new leader ready");
    // The bastion reconciled once by the new leader: a release for the
    // agent's silence would have been decided by then. (The agent's identity
    // pod has nothing for the controller to look at, so it is never
    // reconciled; and the frozen agent sends no heartbeat that would
    // reconcile the bastion again.)
    second.until_reconciled(1).await?;
    let seen = sg::event_reasons(&env, "bastion").await?;
    sg::check(
        !seen.iter().any(|r| r == "Released"),
        format!("released while the agent could not yet report; events: {seen:?}"),
    )?;
    held_agent.thaw();
    step("agent let go (its backoff over)");
    second.until_protecting(env.ns(), "bastion").await?;
    // A wrong release would come at the latest when the (restarted) grace of
    // the agent's last report ran out. That something does not happen can
    // only be seen over a window: wait past that point, then look.
    tokio::time::sleep(Duration::from_secs(grace_secs() + 2)).await;
    let after = env
        .api::<PodDisruptionBudget>()
        .get("sessionguard-bastion")
        .await?;
    sg::check(
        after.metadata.uid == before.metadata.uid,
        format!(
            "the PDB must be the same object after the outage: {:?} → {:?}",
            before.metadata.uid, after.metadata.uid
        ),
    )?;
    let seen = sg::event_reasons(&env, "bastion").await?;
    sg::check(
        !seen.iter().any(|r| r == "Released"),
        format!("no release during or after the outage; events: {seen:?}"),
    )?;
    match pods.evict("bastion", &Default::default()).await {
        Err(kube::Error::Api(s)) if s.code == 429 => {}
        other => {
            return Err(Error::Invalid(format!(
                "eviction after the outage: {other:?}"
            )));
        }
    }
    step("same PDB, no release, eviction refused");
    session.close()?;
    pdbs.until("sessionguard-bastion", false, Duration::from_secs(15))
        .await?;
    step("released after logout");
    drop(second);
    env.finish().await
}

fn grace_secs() -> u64 {
    GRACE
        .trim_end_matches('s')
        .parse()
        .expect("GRACE is whole seconds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_frozen_past_the_grace_with_a_controller_restart_keeps_the_pdb() -> Result<()> {
    outage_keeps_protection("fault-apiserver", "kube-apiserver").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_frozen_past_the_grace_with_a_controller_restart_keeps_the_pdb() -> Result<()> {
    outage_keeps_protection("fault-etcd", "etcd").await
}

/// kill -9 the leader, log in a second later: the standby, whose caches are
/// warm, takes the Lease when it expires and protects the login within the
/// Lease duration (3 s here) plus 2 s of the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_during_failover_is_protected_by_the_warm_standby() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("fault-failover").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let id = identity::chart_controller(&env, false).await?;
    let mut leader = sg::spawn_controller(&env, &id, "failover-a", &[])?;
    leader.until_leader().await?;
    let standby = sg::spawn_controller(&env, &id, "failover-b", &[])?;
    // Warm: the standby has listed everything before it leads.
    wait::until("the standby's caches to sync", await_::TIMEOUT, || async {
        let ready = sg::http_get(standby.addr, "/readyz").await.ok();
        Ok(ready.is_some_and(|r| r.trim() == "standby").then_some(()))
    })
    .await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    env.create_yaml::<Pod>(BASTION).await?;
    let pods: Api<Pod> = env.api();
    await_::pod_ready(&pods, "bastion").await?;
    let mut pdbs = sg::PdbWatch::start(&env);

    leader.kill9();
    let killed = Instant::now();
    // "A second later" is the scenario, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let session = env.session("bastion", "main", &["sh"]).await?;
    let seen = pdbs
        .until("sessionguard-bastion", true, Duration::from_secs(15))
        .await?;
    let took = seen.duration_since(killed);
    eprintln!("kill -9 → PDB by the new leader: {took:?}");
    sg::check(
        took <= Duration::from_secs(3 + 2),
        format!("PDB {took:?} after the leader died; want ≤ lease 3 s + 2 s"),
    )?;
    sg::check(
        standby.metric("sessionguard_leader", &[]).await? == Some(1.0),
        "the standby leads",
    )?;
    session.close()?;
    pdbs.until("sessionguard-bastion", false, Duration::from_secs(10))
        .await?;
    drop(standby);
    env.finish().await
}
