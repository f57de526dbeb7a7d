//! Login -> PDB and logout -> release latency over 20 real logins, with the
//! real agent at its default scan interval (1 s) and the real controller.
//! Prints p50/p99; asserts only a generous bound (figures go in the notes).

mod controller_support;

use std::time::{Duration, Instant};

use controller_support as sg;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Error, Result};

const LOGINS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_logout_latency() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("ctl-latency").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let ctl = sg::start_controller(&env, "ctl-latency", &[]).await?;
    let _agent = sg::start_agent(&env, "1s").await?;
    env.create_yaml::<Pod>(
        r#"
metadata:
  name: bastion
  labels: {sessionguard.io/protect: "true"}
spec:
  containers: [{name: main, image: debian:12}]
"#,
    )
    .await?;
    let pods: Api<Pod> = env.api();
    await_::pod_ready(&pods, "bastion").await?;
    let mut pdbs = sg::PdbWatch::start(&env);
    let (mut login, mut logout) = (Vec::new(), Vec::new());
    // Each login and logout starts at a random point of the agent's 1 s scan
    // cycle: without this the loop phase-locks to the scans (every step starts
    // right after the previous one was seen) and measures one full interval
    // every time. This pause decorrelates; it synchronises nothing.
    let jitter = || Duration::from_millis(rand::random_range(0..1000));
    for _ in 0..LOGINS {
        tokio::time::sleep(jitter()).await;
        let opened = Instant::now();
        let session = env.session("bastion", "main", &["sh"]).await?;
        let seen = pdbs
            .until("sessionguard-bastion", true, Duration::from_secs(10))
            .await?;
        login.push(seen.duration_since(opened));
        tokio::time::sleep(jitter()).await;
        let closed = Instant::now();
        session.close()?;
        let gone = pdbs
            .until("sessionguard-bastion", false, Duration::from_secs(10))
            .await?;
        logout.push(gone.duration_since(closed));
    }
    login.sort();
    logout.sort();
    let fmt = |v: &[Duration]| {
        format!(
            "p50 {:?}, p99 {:?}, min {:?}, max {:?}",
            sg::percentile(v, 0.5),
            sg::percentile(v, 0.99),
            v[0],
            v[v.len() - 1]
        )
    };
    eprintln!(
        "FIGURES login->PDB over {LOGINS} logins (agent interval 1s): {}",
        fmt(&login)
    );
    eprintln!(
        "FIGURES logout->release over {LOGINS} logouts: {}",
        fmt(&logout)
    );
    let sum = ctl
        .metric("sessionguard_report_latency_seconds_sum", &[])
        .await?
        .unwrap_or(0.0);
    let count = ctl
        .metric("sessionguard_report_latency_seconds_count", &[])
        .await?
        .unwrap_or(0.0);
    eprintln!(
        "FIGURES report latency (generated_at -> processed): mean {:.1} ms over {count} reports",
        1000.0 * sum / count.max(1.0)
    );
    if login[login.len() - 1] > Duration::from_secs(5)
        || logout[logout.len() - 1] > Duration::from_secs(5)
    {
        return Err(Error::Invalid(
            "a login or logout took over 5 s to reach the PDB".into(),
        ));
    }
    drop(ctl);
    env.finish().await
}
