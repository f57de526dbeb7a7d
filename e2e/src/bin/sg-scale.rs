//! `make scale`: builds a kwok cluster of `--nodes` nodes and `--pods` pods on the
//! pinned control plane (a running `make dev-up` cluster without components, or a
//! private one), plays one agent per node, runs the real controller, and prints
//! progress (stderr), a table, and exactly one JSON line (stdout, last).

use std::time::Duration;

use clap::Parser;
use sessionguard_e2e::harness::TestEnv;
use sessionguard_e2e::scale::{self, Config};

#[derive(Parser, Debug)]
#[command(name = "sg-scale", about = "sessionguard at cluster size, measured")]
struct Args {
    /// kwok nodes.
    #[arg(long, env = "SCALE_NODES", default_value_t = 1000)]
    nodes: usize,
    /// Pods of the load (StatefulSets opted in, Deployments, bare pods).
    #[arg(long, env = "SCALE_PODS", default_value_t = 30_000)]
    pods: usize,
    /// Minutes of churn (logins and logouts) under the full load.
    #[arg(long, env = "SCALE_MINUTES", default_value_t = 10.0)]
    minutes: f64,
    /// Logins per second, cluster-wide.
    #[arg(long, env = "SCALE_LOGIN_RATE", default_value_t = 1.0)]
    login_rate: f64,
    /// Seconds without churn over which the steady write rate is counted.
    #[arg(long, env = "SCALE_QUIET_SECONDS", default_value_t = 60)]
    quiet_seconds: u64,
    /// CONNECT admission reviews per second during the webhook window.
    #[arg(long, env = "SCALE_WEBHOOK_RATE", default_value_t = 200)]
    webhook_rate: u32,
    /// Seconds of webhook load (in the middle of the churn).
    #[arg(long, env = "SCALE_WEBHOOK_SECONDS", default_value_t = 60)]
    webhook_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cfg = Config {
        nodes: a.nodes,
        pods: a.pods,
        churn: Duration::from_secs_f64(a.minutes * 60.0),
        login_rate: a.login_rate,
        quiet: Duration::from_secs(a.quiet_seconds),
        webhook_rate: a.webhook_rate,
        webhook_for: Duration::from_secs(a.webhook_seconds),
        ..Config::full()
    };
    scale::progress(format!("{cfg:?}"));
    let Some(env) = TestEnv::start("scale").await? else {
        anyhow::bail!("cannot run here (see the reason above)");
    };
    let figures = scale::run(&env, &cfg).await?;
    // The figures first: tearing down 30,000 pods' cluster can take long, or fail.
    print!("{}", figures.table());
    println!("{}", figures.json_line());
    env.finish().await?;
    Ok(())
}
