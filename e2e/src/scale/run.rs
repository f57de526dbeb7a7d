//! One run, phase by phase (see the module docs); returns its figures.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use rand::Rng;
use serde_json::json;

use super::agents::Agents;
use super::controller::{Controller, bucket_quantile, sum_of};
use super::figures::{Figures, Quantiles};
use super::measure::{CpuWindow, PdbTimes, Peaks, quantile_ms, rss_mib};
use super::workload::{SCALE_LABEL, Target, Workloads};
use super::writes::Class;
use super::{Config, kwok, progress, webhook, workload};
use crate::harness::{TestEnv, install};
use crate::{Error, Result, wait};

/// How long a login lasts: long enough for its PDB to appear first.
const HOLD: std::ops::Range<f64> = 5.0..15.0;

/// Builds the cluster in `env`'s control plane, measures, and cleans up what it made.
pub async fn run(env: &TestEnv, cfg: &Config) -> Result<Figures> {
    let started = Instant::now();
    let client = env.client().clone();
    // The agent pods live in the env's namespace, on kwok nodes: lift its pin to the
    // env's simulated node.
    Api::<Namespace>::all(client.clone())
        .patch(
            env.ns(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "scheduler.alpha.kubernetes.io/node-selector": null}}})),
        )
        .await?;
    install::install(&client).await?;
    let suffix = env.ns().trim_start_matches("sg-");
    let nodes = kwok::node_names(&format!("kwok-{suffix}"), cfg.nodes);
    let _kwok = kwok::start(env)?;
    let result = async {
        kwok::create_nodes(&client, &nodes).await?;
        let w = workload::create(&client, env.ns(), cfg.pods, &nodes).await?;
        measure(env, cfg, &nodes, &w, started).await
    }
    .await;
    // A private control plane goes with the run, and deleting 30,000 pods and 1,000
    // nodes one by one on its 2 cores took minutes before the figures were printed.
    if env.cluster().reused {
        cleanup(&client, env.ns(), &nodes).await;
    }
    result
}

async fn measure(
    env: &TestEnv,
    cfg: &Config,
    nodes: &[String],
    w: &Workloads,
    started: Instant,
) -> Result<Figures> {
    let client = env.client().clone();
    let agents = Agents::start(env, nodes, cfg.heartbeat).await?;
    let pdbs = PdbTimes::watch(&client);
    let mut ctl = Controller::start(env).await?;
    ctl.until_leader(Duration::from_secs(300)).await?;
    let build_s = started.elapsed().as_secs_f64();
    progress(format!(
        "cluster built and controller leading after {build_s:.0}s"
    ));

    let ctl_pid = Arc::new(AtomicU32::new(ctl.pid().unwrap_or(0)));
    // What the controller holds once every cache has listed: the cache's share.
    let synced_rss_mib = rss_mib(ctl_pid.load(Ordering::Relaxed)).unwrap_or(0.0);
    let synced_heap_mib =
        sum_of(&ctl.metrics().await?, "sessionguard_heap_allocated_bytes") / 1048576.0;
    progress(format!(
        "controller synced: RSS {synced_rss_mib:.1} MiB, heap allocated {synced_heap_mib:.1} MiB"
    ));
    let peaks = Peaks::default();
    let p = ctl_pid.clone();
    peaks.sample("controller", move || Some(p.load(Ordering::Relaxed)));
    let apiserver = component_pid(env, "kube-apiserver");
    peaks.sample("apiserver", move || apiserver);
    let (settled, cores) = quiet_cluster(apiserver).await;
    progress(format!(
        "quiet: the cluster at its steady load after {:.0}s (kube-apiserver at {cores:.2} cores)",
        settled.as_secs_f64()
    ));

    // --- churn: logins at the rate, with one window of webhook load in the middle ---
    let cpu = CpuWindow::start(ctl_pid.load(Ordering::Relaxed));
    let ca = ctl.webhook_ca(env).await?;
    let path = ctl.webhook_path(env).await?;
    let offset = cfg.churn.saturating_sub(cfg.webhook_for) / 2;
    let (addr, rate, for_, others) = (
        ctl.webhook,
        cfg.webhook_rate,
        cfg.webhook_for,
        w.others.clone(),
    );
    let hook = tokio::spawn(async move {
        tokio::time::sleep(offset).await;
        progress(format!(
            "webhook: {rate} CONNECT reviews/s for {}s",
            for_.as_secs()
        ));
        let t = Instant::now();
        let out = webhook::load(addr, &path, &ca, rate, for_, &others).await;
        (out, t.elapsed())
    });
    let used = churn(cfg, &agents, &pdbs, &w.protected).await?;
    let controller_cpu = cpu.cores();
    let (hook, hook_wall) = hook.await.map_err(|e| Error::Invalid(e.to_string()))?;
    let hook = hook?;
    let text = ctl.metrics().await?;
    let served = |q| {
        bucket_quantile(
            &text,
            "sessionguard_webhook_duration_seconds",
            "webhook=\"connect\"",
            q,
        )
    };
    let (webhook_server_ms, webhook_served) = match (served(0.5), served(0.99)) {
        (Some((p50, n)), Some((p99, _))) => (
            Quantiles {
                p50: p50 * 1000.0,
                p99: p99 * 1000.0,
            },
            n,
        ),
        _ => (Quantiles::default(), 0.0),
    };
    // The controller's share of a login, as it measures it (bucket bounds, over
    // every report and reconcile so far, heartbeats and the initial sync included).
    let bounds = |name: &str, with: &str| {
        let at = |q| bucket_quantile(&text, name, with, q).map_or(0.0, |(le, _)| le * 1000.0);
        Quantiles {
            p50: at(0.5),
            p99: at(0.99),
        }
    };
    let report_latency_ms = bounds("sessionguard_report_latency_seconds", "");
    let pod_reconcile_ms = bounds(
        "sessionguard_reconcile_duration_seconds",
        "controller=\"pod\"",
    );
    wait::until(
        "every release after the churn",
        Duration::from_secs(120),
        || async { Ok((pdbs.counts().1 == 0).then_some(())) },
    )
    .await?;

    // --- settle: the webhook minute's records are legitimate writes, written by a
    // queue that drains after the load stops, and each wakes one reconcile of its pod.
    // The quiet window starts when every admitted review's record has an outcome and
    // then no write (Lease aside) came for SETTLE; a writer that never stops shows in
    // the window all the same (the wait gives up after SETTLE_MAX).
    let admitted = (hook.latencies.len() - hook.failed) as f64;
    let settle_started = Instant::now();
    let before_settle = ctl.calls().await?;
    wait::until(
        "every interaction record of the webhook load to be written",
        Duration::from_secs(300),
        || async { Ok((ctl.records_done().await? >= admitted).then_some(())) },
    )
    .await?;
    let settled = settle(&ctl).await?;
    let settle_calls = ctl.calls().await?.since(&before_settle);
    progress(format!(
        "settle: {:.0}s until the records were written and writes stopped{}: {}",
        settle_started.elapsed().as_secs_f64(),
        if settled { "" } else { " (they did not stop)" },
        settle_calls.describe()
    ));

    // --- quiet: heartbeats only; every controller API call is counted ---
    progress(format!("quiet: {}s without logins", cfg.quiet.as_secs()));
    let c0 = ctl.calls().await?;
    let quiet_cpu = CpuWindow::start(ctl_pid.load(Ordering::Relaxed));
    let quiet_started = Instant::now();
    // The window itself is the measurement: heartbeats arrive in it on their own schedule.
    tokio::time::sleep(cfg.quiet).await;
    let quiet_calls = ctl.calls().await?.since(&c0);
    let quiet_secs = quiet_started.elapsed().as_secs_f64();
    let controller_quiet_cpu = quiet_cpu.cores();
    progress(format!("quiet: calls {}", quiet_calls.describe()));
    // The peak so far is the running controller's (churn, webhook minute, quiet);
    // what the restart adds is its relist, told apart here.
    progress(format!(
        "controller RSS peak before the restart: {:.1} MiB",
        peaks.get("controller")
    ));

    // The churn's logins, taken before the restart's: that one waits for a
    // whole restart and is its own figure (restart → acts), not a sample of
    // protection under load.
    let (login, logout) = pdbs.samples();
    let splits = pdbs.splits();

    // --- kill -9, then a login while it is down: until its PDB exists ---
    let target = w
        .protected
        .iter()
        .find(|t| !used.contains(&(t.namespace.clone(), t.name.clone())))
        .or(w.protected.first())
        .ok_or_else(|| Error::Invalid("no opted-in pod to log in to".into()))?
        .clone();
    progress(format!(
        "restart: kill -9 of the controller, login on {}/{}",
        target.namespace, target.name
    ));
    let killed = Instant::now();
    ctl.kill9();
    pdbs.login(&target.namespace, &target.name, &target.uid, Instant::now());
    let pid = agents.login(&target)?;
    ctl.spawn()?;
    ctl_pid.store(ctl.pid().unwrap_or(0), Ordering::Relaxed);
    ctl.until_leader(Duration::from_secs(120)).await?;
    let restart_to_leader = killed.elapsed().as_secs_f64();
    wait::until(
        "the restarted controller to protect the new login",
        Duration::from_secs(120),
        || async { Ok(pdbs.present(&target.namespace, &target.name).then_some(())) },
    )
    .await?;
    let restart_to_ready = killed.elapsed().as_secs_f64();
    let heap = sum_of(&ctl.metrics().await?, "sessionguard_heap_allocated_bytes") / 1048576.0;
    progress(format!(
        "restarted: RSS {:.1} MiB, heap allocated {heap:.1} MiB; RSS peak {:.1} MiB",
        rss_mib(ctl_pid.load(Ordering::Relaxed)).unwrap_or(0.0),
        peaks.get("controller")
    ));
    agents.logout(&target, pid);

    let q = |v: &[Duration]| Quantiles {
        p50: quantile_ms(v, 0.5),
        p99: quantile_ms(v, 0.99),
    };
    let to_report: Vec<Duration> = splits.iter().map(|s| s.to_report).collect();
    let to_pdb: Vec<Duration> = splits.iter().map(|s| s.to_pdb).collect();
    let slowest = splits.iter().max_by_key(|s| s.total());
    Ok(Figures {
        nodes: cfg.nodes,
        pods: cfg.pods,
        controller_rss_mib: peaks.get("controller"),
        controller_cpu_cores: controller_cpu,
        controller_quiet_cpu_cores: controller_quiet_cpu,
        login_to_pdb_ms: q(&login),
        logins: login.len(),
        login_to_report_ms: q(&to_report),
        report_to_pdb_ms: q(&to_pdb),
        split_logins: splits.len(),
        report_latency_ms,
        pod_reconcile_ms,
        slowest_login: slowest.map(|s| s.describe()).unwrap_or_default(),
        logout_to_release_ms: q(&logout),
        logouts: logout.len(),
        steady_writes_per_min: quiet_calls.total(Class::Write) / (quiet_secs / 60.0),
        steady_lease_calls_per_min: quiet_calls.total(Class::Lease) / (quiet_secs / 60.0),
        steady_calls: quiet_calls.describe(),
        settle_s: settle_started.elapsed().as_secs_f64() - quiet_secs,
        settle_writes: settle_calls.total(Class::Write),
        quiet_secs,
        restart_to_ready_s: restart_to_ready,
        restart_to_leader_s: restart_to_leader,
        webhook_ms: q(&hook.latencies),
        webhook_server_ms,
        webhook_served,
        synced_rss_mib,
        synced_heap_mib,
        webhook_reviews: hook.latencies.len(),
        webhook_failed: hook.failed,
        webhook_rate: hook.latencies.len() as f64 / hook_wall.as_secs_f64().max(1e-3),
        apiserver_rss_mib: peaks.get("apiserver"),
        build_s,
    })
}

/// Logins at `cfg.login_rate` per second on opted-in pods with no login (or PDB)
/// yet, each held for a few seconds; returns the pods used.
async fn churn(
    cfg: &Config,
    agents: &Agents,
    pdbs: &PdbTimes,
    targets: &[Target],
) -> Result<HashSet<(String, String)>> {
    if targets.is_empty() {
        return Err(Error::Invalid("no opted-in pods".into()));
    }
    progress(format!(
        "churn: {} login/s for {}s",
        cfg.login_rate,
        cfg.churn.as_secs()
    ));
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.login_rate.max(0.01)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut active: Vec<(Target, u32, Instant)> = Vec::new();
    let mut used = HashSet::new();
    let mut late = 0;
    let mut next_print = start + Duration::from_secs(30);
    while start.elapsed() < cfg.churn {
        tick.tick().await;
        let now = Instant::now();
        for (t, pid, _) in active.iter().filter(|(_, _, until)| *until <= now) {
            if !pdbs.logout(&t.namespace, &t.name, Instant::now()) {
                late += 1;
            }
            agents.logout(t, *pid);
        }
        active.retain(|(_, _, until)| *until > now);
        let busy: HashSet<(&str, &str)> = active
            .iter()
            .map(|(t, _, _)| (t.namespace.as_str(), t.name.as_str()))
            .collect();
        let mut rng = rand::rng();
        let pick = (0..32)
            .map(|_| &targets[rng.random_range(0..targets.len())])
            .find(|t| {
                !busy.contains(&(t.namespace.as_str(), t.name.as_str()))
                    && !pdbs.present(&t.namespace, &t.name)
            });
        if let Some(t) = pick {
            pdbs.login(&t.namespace, &t.name, &t.uid, Instant::now());
            let pid = agents.login(t)?;
            let hold = Duration::from_secs_f64(rng.random_range(HOLD));
            active.push((t.clone(), pid, Instant::now() + hold));
            used.insert((t.namespace.clone(), t.name.clone()));
        }
        if now >= next_print {
            next_print += Duration::from_secs(30);
            let (login, _) = pdbs.samples();
            let (present, _) = pdbs.counts();
            progress(format!(
                "churn: {:.0}s, {} logins protected (p50 {:.0} ms, p99 {:.0} ms), {present} PDBs now, {late} logouts before their PDB",
                start.elapsed().as_secs_f64(),
                login.len(),
                quantile_ms(&login, 0.5),
                quantile_ms(&login, 0.99),
            ));
        }
    }
    for (t, pid, _) in active.drain(..) {
        if !pdbs.logout(&t.namespace, &t.name, Instant::now()) {
            late += 1;
        }
        agents.logout(&t, pid);
    }
    if late > 0 {
        progress(format!(
            "churn: {late} logouts came before their PDB (not timed)"
        ));
    }
    Ok(used)
}

/// No write (Lease and reads aside) for this long: the controller is done.
const SETTLE: Duration = Duration::from_secs(5);
/// How long settling may take before the quiet window starts anyway.
const SETTLE_MAX: Duration = Duration::from_secs(90);

/// Until the controller has made no write for [`SETTLE`]; false if that did not
/// happen within [`SETTLE_MAX`].
async fn settle(ctl: &Controller) -> Result<bool> {
    let started = Instant::now();
    let mut last = ctl.calls().await?.total(Class::Write);
    let mut quiet_since = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while started.elapsed() < SETTLE_MAX {
        tick.tick().await;
        let now = ctl.calls().await?.total(Class::Write);
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        } else if quiet_since.elapsed() >= SETTLE {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Windows over which the API server's CPU is compared.
const QUIET_WINDOW: Duration = Duration::from_secs(5);
/// The longest wait for a quiet cluster; the churn starts then regardless.
const QUIET_MAX: Duration = Duration::from_secs(300);

/// Waits until the simulated cluster is at its steady load before the churn:
/// kube-apiserver's CPU use stops falling (two windows in a row within 10 % of
/// each other, or both under 0.15 cores), at most `QUIET_MAX`. Right after
/// 30,000 pods turn Running, kwok and the controller-manager go on working
/// for a while; logins measured then measure that too, and runs compare only
/// from the same steady cluster. Returns how long it took and the API
/// server's last window (the progress line prints both).
async fn quiet_cluster(apiserver: Option<u32>) -> (Duration, f64) {
    let start = Instant::now();
    let Some(pid) = apiserver else {
        return (Duration::ZERO, 0.0);
    };
    let window = || async {
        let w = CpuWindow::start(pid);
        tokio::time::sleep(QUIET_WINDOW).await;
        w.cores()
    };
    let mut last = window().await;
    while start.elapsed() < QUIET_MAX {
        let now = window().await;
        let quiet = (now < 0.15 && last < 0.15) || (now - last).abs() <= 0.1 * now.max(last);
        if quiet {
            return (start.elapsed(), now);
        }
        last = now;
    }
    (start.elapsed(), last)
}

/// The running pid of a control-plane component (its pidfile: `<pid> <start time>`).
fn component_pid(env: &TestEnv, name: &str) -> Option<u32> {
    let file = env
        .cluster()
        .info
        .dir
        .join("pids")
        .join(format!("{name}.pid"));
    std::fs::read_to_string(file)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Deletes the load's namespaces (kwok finishes their pods) and then its nodes, on a
/// reused cluster (a private control plane goes with the run). Best effort.
async fn cleanup(client: &kube::Client, run: &str, nodes: &[String]) {
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{SCALE_LABEL}={run}"));
    for ns in ns_api.list(&lp).await.map(|l| l.items).unwrap_or_default() {
        let name = ns.metadata.name.unwrap_or_default();
        let _ = ns_api.delete(&name, &DeleteParams::default()).await;
    }
    let gone = wait::until(
        "the load's namespaces to go",
        Duration::from_secs(180),
        || async { Ok(ns_api.list(&lp).await?.items.is_empty().then_some(())) },
    )
    .await;
    if let Err(e) = gone {
        progress(format!("cleanup: {e}"));
    }
    let node_api: Api<Node> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{}=true", kwok::KWOK_LABEL));
    for n in node_api
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let name = n.metadata.name.unwrap_or_default();
        if nodes.contains(&name) {
            let _ = node_api.delete(&name, &DeleteParams::default()).await;
        }
    }
}
