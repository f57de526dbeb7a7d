//! The least privilege the agent needs, measured on this host: a non-root uid with no
//! capabilities and no_new_privs (what the chart's securityContext gives the agent)
//! finds exactly the sessions root finds, in another user's processes, because
//! /proc/<pid>/{stat,status,cgroup,cmdline} are world-readable; files that need ptrace
//! access (environ) stay closed to it, and the agent never reads them.
//!
//! And what the agent's uid must not reach: the controller's process. The kernel lets
//! a process follow `/proc/<pid>/root` (and so read every file of that container,
//! the ServiceAccount token among them) of a process with the same uid and no more
//! privilege; so the chart gives the two different uids, and a process of the agent's
//! uid is refused the controller's root while one of the controller's uid is let in.

mod chart_support;

use chart_support::{check, invalid};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use sessionguard_e2e::harness::{TestEnv, await_, workspace_bin};
use sessionguard_e2e::{Result, wait};

/// The chart's agent uid, and what the container runtime leaves it: no capabilities.
const SETPRIV: &[&str] = &[
    "setpriv",
    "--reuid=65533",
    "--regid=65533",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
];

fn scan(bin: &str, unprivileged: bool) -> Result<Value> {
    let mut argv: Vec<&str> = if unprivileged {
        SETPRIV.to_vec()
    } else {
        vec![]
    };
    argv.extend([bin, "scan", "--proc-root", "/proc", "--output", "json"]);
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| invalid(format!("running {argv:?}: {e}")))?;
    check(
        out.status.success(),
        format!("{argv:?}: {}", String::from_utf8_lossy(&out.stderr)),
    )?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn sessions_of(scan: &Value, pod_uid: &str) -> Vec<Value> {
    scan["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["pod_uid"] == pod_uid)
        .cloned()
        .collect()
}

/// `setpriv` as `uid` with no capabilities, running `argv`.
fn as_uid(uid: u64, argv: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args([
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ]);
    c.args(argv);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_s_uid_cannot_follow_the_controller_s_proc_root() -> Result<()> {
    // The environment check only (root, cgroup2): no control plane is needed here.
    if let Some(reason) = sessionguard_e2e::harness::env::skip_reason() {
        check(
            std::env::var_os("CI").is_none(),
            format!("cannot run in CI: {reason}"),
        )?;
        eprintln!("skipping the_agent_s_uid_cannot_follow_the_controller_s_proc_root: {reason}");
        return Ok(());
    }
    let docs = chart_support::docs(&chart_support::template("sg", "sessionguard-system", &[])?)?;
    let uid_of = |kind: &str, name: &str| -> Result<u64> {
        chart_support::find(&docs, kind, Some(name))?["spec"]["template"]["spec"]["securityContext"]
            ["runAsUser"]
            .as_u64()
            .ok_or_else(|| invalid(format!("{kind} {name} has no runAsUser")))
    };
    let agent = uid_of("DaemonSet", "sg-sessionguard-agent")?;
    let controller = uid_of("Deployment", "sg-sessionguard-controller")?;
    check(
        agent != controller && agent != 0 && controller != 0,
        format!("agent uid {agent}, controller uid {controller}"),
    )?;
    check(
        SETPRIV[1] == format!("--reuid={agent}"),
        "the scan test runs as the chart's agent uid",
    )?;
    // A stand-in for the controller's process: its uid, no capabilities.
    let mut stand_in = as_uid(controller, &["sleep", "300"])
        .spawn()
        .map_err(|e| invalid(format!("setpriv sleep: {e}")))?;
    let pid = stand_in.id();
    // Until setpriv has exec'd sleep as that uid, the pid is still root's.
    wait::until(
        "the stand-in running as its uid",
        await_::TIMEOUT,
        || async {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            Ok((comm.trim() == "sleep"
                && uid_line.split_whitespace().nth(1) == Some(&controller.to_string()))
            .then_some(()))
        },
    )
    .await?;
    let target = format!("/proc/{pid}/root/etc/passwd");
    let read = |uid: u64| {
        as_uid(uid, &["cat", &target])
            .output()
            .map_err(|e| invalid(format!("setpriv cat: {e}")))
    };
    let by_agent = read(agent)?;
    let by_same_uid = read(controller)?;
    let _ = stand_in.kill();
    let _ = stand_in.wait();
    check(
        !by_agent.status.success()
            && String::from_utf8_lossy(&by_agent.stderr).contains("Permission denied"),
        format!(
            "uid {agent} read {target}: {:?} {}",
            by_agent.status,
            String::from_utf8_lossy(&by_agent.stderr)
        ),
    )?;
    // The same read by the controller's own uid works: the uid is what stops it.
    check(
        by_same_uid.status.success(),
        format!(
            "uid {controller} could not read {target}: {}",
            String::from_utf8_lossy(&by_same_uid.stderr)
        ),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_root_without_capabilities_sees_every_session() -> Result<()> {
    let Some(env) = TestEnv::start("chart-least-priv").await? else {
        return Ok(());
    };
    let bin = workspace_bin("sessionguard-agent", "sessionguard-agent")?;
    // The binary must be reachable by the agent's uid (target dirs are world-readable).
    let bin = bin.display().to_string();

    let pods: Api<Pod> = env.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "box"},
        "spec": {"containers": [{"name": "main", "image": "debian:12"}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let pod = await_::pod_ready(&pods, "box").await?;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    // One session as root, one as another ordinary user: both are "other users'"
    // processes for the agent's uid.
    let root_session = env.session("box", "main", &["sh"]).await?;
    let user_session = env
        .session(
            "box",
            "main",
            &[
                "setpriv",
                "--reuid=1234",
                "--regid=1234",
                "--clear-groups",
                "sh",
            ],
        )
        .await?;

    // Until setpriv has exec'd the shell, that session's leader is still root's setpriv.
    wait::until(
        "both shells running, as uid 0 and 1234",
        await_::TIMEOUT,
        || async {
            let s = sessions_of(&scan(&bin, false)?, &uid);
            let mut uids: Vec<u64> = s
                .iter()
                .filter(|s| s["command"] == "sh")
                .filter_map(|s| s["uid"].as_u64())
                .collect();
            uids.sort();
            Ok((uids == [0, 1234]).then_some(()))
        },
    )
    .await?;
    let unprivileged = sessions_of(&scan(&bin, true)?, &uid);
    let as_root = sessions_of(&scan(&bin, false)?, &uid);
    check(
        as_root.len() == 2,
        format!(
            "root scan found {} sessions in the pod: {as_root:?}",
            as_root.len()
        ),
    )?;
    // `processes` may differ by a transient child; everything that identifies the
    // session must be identical.
    let key = |s: &Value| {
        json!([
            s["container_id"],
            s["tty"],
            s["pid"],
            s["command"],
            s["argv"],
            s["uid"],
            s["started_at"],
            s["console"]
        ])
    };
    let mut a: Vec<String> = as_root.iter().map(|s| key(s).to_string()).collect();
    let mut b: Vec<String> = unprivileged.iter().map(|s| key(s).to_string()).collect();
    a.sort();
    b.sort();
    check(
        a == b,
        format!("uid 65533 without capabilities saw {b:?}, root saw {a:?}"),
    )?;
    let uids: Vec<u64> = as_root.iter().filter_map(|s| s["uid"].as_u64()).collect();
    check(
        uids.contains(&0) && uids.contains(&1234),
        format!("sessions of uid 0 and 1234 expected: {uids:?}"),
    )?;

    // The same identity cannot read a ptrace-guarded file of those processes: the
    // agent is not privileged, it just needs nothing more.
    for pid in [root_session.pid(), user_session.pid()] {
        let out = std::process::Command::new(SETPRIV[0])
            .args(&SETPRIV[1..])
            .args(["cat", &format!("/proc/{pid}/environ")])
            .output()
            .map_err(|e| invalid(e.to_string()))?;
        check(
            !out.status.success(),
            format!("uid 65533 could read /proc/{pid}/environ"),
        )?;
        for f in ["stat", "status", "cgroup", "cmdline"] {
            let mode = std::fs::metadata(format!("/proc/{pid}/{f}"))
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                .map_err(|e| invalid(e.to_string()))?;
            check(
                mode == 0o444,
                format!("/proc/{pid}/{f} mode {mode:o}, expected 444"),
            )?;
        }
    }
    eprintln!(
        "least privilege: uid 65533, no capabilities, no_new_privs found the same {} sessions as root",
        a.len()
    );
    drop(root_session);
    drop(user_session);
    env.finish().await
}
