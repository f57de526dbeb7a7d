//! `notify.terminal` on the real control plane, with a real pty: a drain
//! (a refused eviction) that has waited on a login for `--notify-terminal-after`
//! is published by the controller in the node's SessionReport status, and the
//! agent run with `--notify-terminal` writes one line naming the node and the
//! reason into the session's terminal, read here from the pty's master side.
//!
//! The control first: an agent without the flag receives the same notice in
//! the answers to its report writes (they are awaited) and writes nothing.
//! Then, with the flag, the line arrives once, and further heartbeats carrying
//! the same notice write nothing more within `--notify-interval`.

mod webhook_support;

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams, Patch, PatchParams};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use sessionguard_controller::io::crd::SessionReport;
use sessionguard_core::notice::Reason;
use sessionguard_e2e::controlplane::kubeconfig;
use sessionguard_e2e::harness::{Child, TestEnv, await_, identity, workspace_bin};
use sessionguard_e2e::{Result, wait};
use webhook_support::{self as wh, check, sg};

const DB: &str = r#"
metadata:
  name: db-0
  labels: {sessionguard.io/protect: "true"}
spec:
  containers: [{name: main, image: debian:12}]
"#;

/// What the line starts with (core::notice::drain_line).
const LINE: &str = "sessionguard: node ";

/// Everything the session has printed so far, appended to `seen`.
fn read_pty(master: BorrowedFd<'_>, seen: &mut String) -> Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => return Ok(()),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) => return Err(wh::invalid(format!("reading the pty: {e}"))),
        }
    }
}

async fn agent_reports(addr: std::net::SocketAddr) -> Result<f64> {
    Ok(sg::metric(
        addr,
        "sessionguard_agent_reports_total",
        &[("outcome", "success")],
    )
    .await?
    .unwrap_or(0.0))
}

/// Waits until the agent has written its report `n` more times: each answer
/// carries the report's status, so the agent has been handed the notices.
async fn more_reports(addr: std::net::SocketAddr, n: f64) -> Result<()> {
    let base = agent_reports(addr).await?;
    wait::until(
        &format!("{n} more report writes"),
        await_::TIMEOUT,
        || async { Ok((agent_reports(addr).await? >= base + n).then_some(())) },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waiting_on_a_login_is_told_in_its_terminal_once() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("notify-terminal").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    // The chart's controller RBAC with notify.terminal on (sessionreports/status).
    let id = identity::chart_controller_with(&env, true, &["notify.terminal.enabled=true"]).await?;
    let port = wh::free_port()?;
    wh::install_webhooks(&env, port).await?;
    let ctl = wh::start(
        &env,
        &id.kubeconfig,
        "notify-ctl",
        port,
        true,
        &["--notify-terminal", "true", "--notify-terminal-after", "2s"],
    )
    .await?;
    // The control: an agent without --notify-terminal, heartbeat 1s.
    let listen = sg::free_addr()?;
    let agent = sg::start_agent_with(&env, "500ms", listen, "1s", &[]).await?;
    env.create_yaml::<Pod>(DB).await?;
    let pods: Api<Pod> = env.api();
    await_::pod_ready(&pods, "db-0").await?;
    let mut pdbs = sg::PdbWatch::start(&env);
    let session = env.session("db-0", "main", &["sh"]).await?;
    let tty = session
        .tty()
        .strip_prefix("/dev")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    pdbs.until("sessionguard-db-0", true, Duration::from_secs(10))
        .await?;
    let master = session.master().expect("session is open");
    let flags =
        fcntl(master, FcntlArg::F_GETFL).map_err(|e| wh::invalid(format!("pty flags: {e}")))?;
    fcntl(
        master,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| wh::invalid(format!("pty flags: {e}")))?;
    let mut seen = String::new();

    // One refused eviction starts the wait (the webhook answers from its
    // cache, which may not have seen our PDB yet: retry until it refuses).
    wait::until(
        "eviction refused by the webhook with 429",
        await_::TIMEOUT,
        || async {
            match pods.evict("db-0", &EvictParams::default()).await {
                Err(kube::Error::Api(s)) if s.code == 429 && s.message.contains("sessionguard") => {
                    Ok(Some(()))
                }
                Err(kube::Error::Api(s)) if s.code == 429 || s.code == 500 => Ok(None),
                other => Err(wh::invalid(format!(
                    "eviction of a logged-in pod: {other:?}"
                ))),
            }
        },
    )
    .await?;
    let refused = Instant::now();

    // The controller publishes it 2 s later in the node's report status.
    let reports: Api<SessionReport> = Api::all(env.client().clone());
    let notice = wait::until(
        "a notice in the report's status",
        await_::TIMEOUT,
        || async {
            let r = reports.get(env.node_name()).await?;
            Ok(r.notices().first().cloned())
        },
    )
    .await?;
    eprintln!(
        "notice published {:?} after the refusal: {notice:?}",
        refused.elapsed()
    );
    check(
        notice.reason == Reason::DrainWaiting
            && notice.tty == tty
            && notice.pid == Some(session.pid())
            && notice.line.contains(env.node_name())
            && notice.line.contains("is being drained")
            && notice.line.contains(&format!("{}/db-0", env.ns())),
        format!("the notice names the session, node and reason: {notice:?}"),
    )?;
    check(
        refused.elapsed() >= Duration::from_secs(2),
        "not before --notify-terminal-after",
    )?;

    // Only the controller writes the status: the agent's own token may not.
    let as_agent: Api<SessionReport> = Api::all(kubeconfig::client(&agent.kubeconfig).await?);
    let forged = serde_json::json!({"status": {"notices": []}});
    match as_agent
        .patch_status(
            env.node_name(),
            &PatchParams::default(),
            &Patch::Merge(&forged),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => {
            return Err(wh::invalid(format!(
                "the agent patched its report's status: {other:?}"
            )));
        }
    }

    // Control: the agent without the flag is handed it twice, writes nothing.
    more_reports(listen, 2.0).await?;
    read_pty(master, &mut seen)?;
    check(
        !seen.contains(LINE),
        format!("an agent without --notify-terminal wrote into the terminal: {seen:?}"),
    )?;
    check(
        sg::metric(listen, "sessionguard_agent_terminal_notices_total", &[])
            .await?
            .is_none(),
        "no notice counted without the flag",
    )?;

    // The same agent identity, now with the flag and the notifier beside it.
    let kubeconfig = agent.kubeconfig.clone();
    drop(agent);
    let (_notifier, socket) = start_notifier(&env).await?;
    let listen = sg::free_addr()?;
    let _agent = start_notifying_agent(&env, &kubeconfig, listen, &socket)?;
    let started = Instant::now();
    let line = wait::until(
        "the notice on the pty's master side",
        Duration::from_secs(20),
        || {
            let r = read_pty(master, &mut seen);
            // The line ends in "\r\n", which the pty's output processing
            // (onlcr) turns into "\r\r\n".
            let found = seen.find(LINE).and_then(|i| {
                seen[i..]
                    .split_once('\n')
                    .map(|(l, _)| l.trim_end_matches('\r').to_string())
            });
            async move { r.map(|()| found) }
        },
    )
    .await?;
    eprintln!(
        "line on the pty {:?} after the agent started: {line}",
        started.elapsed()
    );
    check(
        line.contains(env.node_name())
            && line.contains("is being drained")
            && line.contains(&format!("{}/db-0", env.ns()))
            && line.contains("log out"),
        format!("the line names the node, the reason and what to do: {line:?}"),
    )?;
    check(
        line.chars().all(|c| !c.is_control()),
        format!("printable only: {line:?}"),
    )?;
    let written = || async {
        sg::metric(
            listen,
            "sessionguard_agent_terminal_notices_total",
            &[("outcome", "written")],
        )
        .await
    };
    wait::until("the line counted", await_::TIMEOUT, || async {
        Ok((written().await? == Some(1.0)).then_some(()))
    })
    .await?;

    // Rate limit: three more heartbeats hand over the same notice; within
    // --notify-interval (1h) nothing more is written.
    more_reports(listen, 3.0).await?;
    read_pty(master, &mut seen)?;
    check(
        seen.matches(LINE).count() == 1,
        format!(
            "one line per interval, not {}: {seen:?}",
            seen.matches(LINE).count()
        ),
    )?;
    check(written().await? == Some(1.0), "still one line written")?;
    // The controller wrote the status once: the same notices write nothing.
    let status_writes = ctl
        .metric(
            "sessionguard_writes_total",
            &[("op", "patch_report_status"), ("outcome", "ok")],
        )
        .await?;
    check(
        status_writes == Some(1.0),
        format!("one status write for one unchanged notice, not {status_writes:?}"),
    )?;

    drop(session);
    env.finish().await
}

/// `--max-protection` escalates into the terminal too: past the warning
/// fraction the line says when protection ends; once it has ended, the
/// notice is withdrawn from the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protection_nearing_its_cap_is_told_in_the_terminal() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("notify-cap").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let id =
        identity::chart_controller_with(&env, false, &["notify.terminal.enabled=true"]).await?;
    let ctl = sg::spawn_controller(
        &env,
        &id,
        "notify-cap-ctl",
        &[
            "--max-protection",
            "20s",
            "--max-protection-warn-at",
            "25%",
            "--notify-terminal",
            "true",
        ],
    )?;
    ctl.until_leader().await?;
    let (_notifier, socket) = start_notifier(&env).await?;
    let socket = socket.display().to_string();
    let listen = sg::free_addr()?;
    let _agent = sg::start_agent_with(
        &env,
        "500ms",
        listen,
        "1s",
        &[
            "--notify-terminal",
            "true",
            "--notify-interval",
            "1h",
            "--notify-socket",
            &socket,
        ],
    )
    .await?;
    env.create_yaml::<Pod>(DB).await?;
    let pods: Api<Pod> = env.api();
    await_::pod_ready(&pods, "db-0").await?;
    let session = env.session("db-0", "main", &["sh"]).await?;
    let master = session.master().expect("session is open");
    let flags =
        fcntl(master, FcntlArg::F_GETFL).map_err(|e| wh::invalid(format!("pty flags: {e}")))?;
    fcntl(
        master,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| wh::invalid(format!("pty flags: {e}")))?;
    let mut seen = String::new();
    let want = "sessionguard: protection of pod ";
    let line = wait::until("the cap's notice on the pty", await_::TIMEOUT, || {
        let r = read_pty(master, &mut seen);
        let found = seen.find(want).and_then(|i| {
            seen[i..]
                .split_once('\n')
                .map(|(l, _)| l.trim_end_matches('\r').to_string())
        });
        async move { r.map(|()| found) }
    })
    .await?;
    eprintln!("cap line: {line}");
    check(
        line.contains(&format!("{}/db-0", env.ns()))
            && line.contains(env.node_name())
            && line.contains("ends at ")
            && line.contains("--max-protection 20s"),
        format!("the line names the pod, node, end and cap: {line:?}"),
    )?;
    // At the cap the reason is gone, and so is the notice.
    let reports: Api<SessionReport> = Api::all(env.client().clone());
    wait::until(
        "the notice withdrawn after the cap",
        await_::TIMEOUT,
        || async {
            let r = reports.get(env.node_name()).await?;
            Ok(r.notices().is_empty().then_some(()))
        },
    )
    .await?;
    drop(session);
    drop(ctl);
    env.finish().await
}

/// The agent again under the identity `start_agent_with` made, with
/// `--notify-terminal` and an interval longer than the test.
fn start_notifying_agent(
    env: &TestEnv,
    kubeconfig: &std::path::Path,
    listen: std::net::SocketAddr,
    socket: &std::path::Path,
) -> Result<sg::Agent> {
    let bin = workspace_bin("sessionguard-agent", "sessionguard-agent")?;
    let log = env.scratch_dir().join("agent-notify.log");
    let (listen_s, kc) = (listen.to_string(), kubeconfig.display().to_string());
    let args = [
        "run",
        "--node-name",
        env.node_name(),
        "--proc-root",
        "/proc",
        "--listen-addr",
        &listen_s,
        "--report-interval",
        "1s",
        "--interval",
        "500ms",
        "--notify-terminal",
        "true",
        "--notify-interval",
        "1h",
        "--notify-socket",
        &socket.display().to_string(),
    ];
    let child = Child::spawn(
        &bin,
        &args,
        &[("KUBECONFIG", &kc), ("RUST_LOG", "info")],
        &log,
    )?;
    eprintln!(
        "notifying agent: pid {}, log {}",
        child.pid(),
        log.display()
    );
    Ok(sg::Agent {
        child: Some(child),
        log,
        kubeconfig: kubeconfig.to_path_buf(),
    })
}

/// CAP_SYS_PTRACE, as /proc/<pid>/status prints a capability set.
const SYS_PTRACE_ONLY: u64 = 1 << 19;

/// The notifier as the chart runs it: its own process, uid 0 with no
/// capability but CAP_SYS_PTRACE, gid tty (5), no_new_privs. Checked,
/// not assumed: its effective set is read back from /proc. Returns the child
/// and its socket once it listens.
async fn start_notifier(env: &TestEnv) -> Result<(Child, std::path::PathBuf)> {
    let bin = workspace_bin("sessionguard-agent", "sessionguard-agent")?;
    let socket = env.scratch_dir().join("notify.sock");
    let log = env.scratch_dir().join("notifier.log");
    let (bin_s, socket_s) = (bin.display().to_string(), socket.display().to_string());
    let args = [
        "--inh-caps=-all",
        "--bounding-set=-all,+sys_ptrace",
        "--regid=5",
        "--clear-groups",
        "--no-new-privs",
        &bin_s,
        "notifier",
        "--proc-root",
        "/proc",
        "--socket",
        &socket_s,
    ];
    let child = Child::spawn(
        "/usr/bin/setpriv".as_ref(),
        &args,
        &[("RUST_LOG", "info")],
        &log,
    )?;
    let pid = child.pid();
    eprintln!("notifier: pid {pid}, log {}", log.display());
    wait::until("the notifier listening", await_::TIMEOUT, || {
        let up = std::os::unix::net::UnixStream::connect(&socket).is_ok();
        async move { Ok(up.then_some(())) }
    })
    .await?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| wh::invalid(format!("the notifier's status: {e}")))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let cap_eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap_or(u64::MAX);
    check(
        cap_eff == SYS_PTRACE_ONLY
            && field("Gid:").split_whitespace().all(|g| g == "5")
            && field("Groups:").is_empty(),
        format!(
            "the notifier runs with CapEff {:x}, gids {:?} and groups {:?}; want CAP_SYS_PTRACE alone and gid tty",
            cap_eff,
            field("Gid:"),
            field("Groups:")
        ),
    )?;
    Ok((child, socket))
}
