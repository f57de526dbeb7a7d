//! Hostile input on the real control plane: what a tenant controls (here, the
//! argv of the processes in their pod) must never cost other logins on the
//! node their protection. And a node's own hostile /proc (mounted with
//! `hidepid=`) must stop the agent's reports instead of emptying them.

mod controller_support;

use controller_support as sg;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::Value;
use sessionguard_core::session::{ARGV_ITEMS_MAX, COMMAND_MAX};
use sessionguard_e2e::harness::{Child, TestEnv, await_, workspace_bin};
use sessionguard_e2e::{Error, Result, wait};

const MARKER: &str = "…";

fn bastion(name: &str) -> String {
    format!(
        r#"
metadata:
  name: {name}
  labels: {{sessionguard.io/protect: "true"}}
spec:
  containers: [{{name: main, image: debian:12}}]
"#
    )
}

/// A second proc instance mounted for one test, unmounted on every exit path
/// (lazily if the normal unmount fails), so no test leaves a proc mount behind.
struct ProcMount(std::path::PathBuf);

impl ProcMount {
    fn new(options: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("sg-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Invalid(format!("mkdir: {e}")))?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "proc", "-o", options, "proc"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            return Err(Error::Invalid(format!("mount -t proc -o {options} failed")));
        }
        Ok(Self(dir))
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let umount = |args: &[&str]| {
            std::process::Command::new("umount")
                .args(args)
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !umount(&[]) && !umount(&["-l"]) {
            eprintln!("LEFT BEHIND: proc mount at {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// (status code, body) of one GET: unlike `http_get`, a 503's body too.
async fn get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = |e: std::io::Error| Error::Invalid(format!("GET {addr}{path}: {e}"));
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .map_err(io)?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.map_err(io)?;
    let code = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.to_string()))
}

/// The agent as an unprivileged uid on `proc_root`, reporting nowhere.
fn unprivileged_agent(proc_root: &str, addr: std::net::SocketAddr, log: &str) -> Result<Child> {
    let bin = workspace_bin("sessionguard-agent", "sessionguard-agent")?;
    let (bin, addr) = (bin.display().to_string(), addr.to_string());
    let args = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &bin,
        "run",
        "--report=false",
        "--node-name",
        "filtered",
        "--interval",
        "200ms",
        "--listen-addr",
        &addr,
        "--proc-root",
        proc_root,
    ];
    let log = std::env::temp_dir().join(log);
    Child::spawn("/usr/bin/setpriv".as_ref(), &args, &[], &log)
}

/// The agent's /readyz and /metrics once its first scan is done.
async fn readiness(addr: std::net::SocketAddr, agent: &mut Child) -> Result<(u16, String, String)> {
    let first_scan = wait::until("the agent's first scan", await_::TIMEOUT, || async {
        let Ok((code, body)) = get(addr, "/readyz").await else {
            return Ok(None);
        };
        if body.contains("first scan not finished") {
            return Ok(None);
        }
        let (_, metrics) = get(addr, "/metrics").await?;
        Ok(Some((code, body, metrics)))
    })
    .await;
    // An agent that died says so (with its log) rather than as a timeout.
    first_scan.or_else(|e| agent.check_running().and(Err(e)))
}

/// A proc mounted `hidepid=invisible`, read by an agent without privilege:
/// it sees only its own processes, so it is NotReady naming hidepid, with the
/// gauge at 1; the same agent on the node's normal /proc is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidepid_proc_makes_the_agent_unready_not_empty() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: mounting a proc instance needs root");
        return Ok(());
    }
    let gauge = "sessionguard_agent_proc_filtered";
    // Declared before the agents, so it is unmounted after they are stopped.
    let mount = ProcMount::new("hidepid=invisible")?;
    let root = mount.0.display().to_string();

    let addr = sg::free_addr()?;
    let mut agent = unprivileged_agent(&root, addr, "sg-agent-hidepid.log")?;
    let (code, body, metrics) = readiness(addr, &mut agent).await?;
    check(
        code == 503,
        format!("/readyz on a hidepid proc: {code} {body}"),
    )?;
    check(
        body.contains("proc filtered (hidepid)") && body.contains("hidepid=invisible"),
        format!("/readyz does not name hidepid: {body}"),
    )?;
    let on = sg::find_metric(&metrics, gauge, &[("reason", "hidepid")]);
    check(
        on == Some(1.0),
        format!("{gauge}{{reason=hidepid}} = {on:?}"),
    )?;
    let (_, sessions) = get(addr, "/sessions").await?;
    check(
        sessions.contains("\"sessions\": []"),
        format!("sessions from a partial view: {sessions}"),
    )?;
    drop(agent);

    let addr = sg::free_addr()?;
    let mut agent = unprivileged_agent("/proc", addr, "sg-agent-proc.log")?;
    let (code, body, metrics) = readiness(addr, &mut agent).await?;
    check(code == 200, format!("/readyz on /proc: {code} {body}"))?;
    let off = sg::find_metric(&metrics, gauge, &[("reason", "hidepid")]);
    check(
        off == Some(0.0),
        format!("{gauge}{{reason=hidepid}} = {off:?}"),
    )?;
    drop(agent);
    drop(mount);
    for log in ["sg-agent-hidepid.log", "sg-agent-proc.log"] {
        let _ = std::fs::remove_file(std::env::temp_dir().join(log));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    check(
        !mounts.contains(&root),
        format!("proc still mounted at {root}"),
    )
}

fn check(cond: bool, what: impl Into<String>) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Invalid(what.into()))
    }
}

/// A leader with a 200 KB argv of 500 items (a long `sh -c` script, then
/// 497 arguments of 200 two-byte characters) and a 100-character argv[0],
/// next to an ordinary login in another pod of the same node: the node's
/// report is accepted with the odd session's own fields cut, and both pods
/// are protected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_argv_costs_only_its_own_fields() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("hostile-argv").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let _ctl = sg::start_controller(&env, "hostile-argv", &[]).await?;
    let agent_addr = sg::free_addr()?;
    let _agent = sg::start_agent_at(&env, "500ms", agent_addr).await?;
    let pods: Api<Pod> = env.api();
    for name in ["odd", "plain"] {
        env.create_yaml::<Pod>(&bastion(name)).await?;
    }
    let odd = await_::pod_ready(&pods, "odd").await?;
    await_::pod_ready(&pods, "plain").await?;
    let mut pdbs = sg::PdbWatch::start(&env);

    // argv[0] names the program: a 100-character symlink to sh.
    let program = env.scratch_dir().join(format!("sh-{}", "x".repeat(97)));
    std::os::unix::fs::symlink("/bin/sh", &program)
        .map_err(|e| Error::Invalid(format!("symlink {}: {e}", program.display())))?;
    let program = program.display().to_string();
    // Two reads keep sh itself the leader (a lone command could be exec'd).
    let script = format!("read a; read b # {}", "é".repeat(1000));
    let arg = "é".repeat(200);
    let mut argv = vec![program.as_str(), "-c", &script, "odd"];
    argv.extend(std::iter::repeat_n(arg.as_str(), 496));
    let bytes: usize = argv.iter().map(|a| a.len() + 1).sum();
    eprintln!("odd login: {} items, {bytes} bytes of argv", argv.len());
    let _odd = env.session("odd", "main", &argv).await?;
    let _plain = env.session("plain", "main", &["sh"]).await?;

    for pod in ["odd", "plain"] {
        pdbs.until(&format!("sessionguard-{pod}"), true, await_::TIMEOUT)
            .await?;
    }

    let node = env.node_name().to_string();
    let odd_uid = odd.metadata.uid.clone().unwrap_or_default();
    let reports = sg::report_api(env.client());
    let report = await_::object(&reports, &node, "holding the odd login", |r| {
        sg::report_sessions(r, &odd_uid) == 1
    })
    .await?;
    let session = report.data["spec"]["sessions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["pod_uid"] == odd_uid.as_str()))
        .cloned()
        .unwrap_or(Value::Null);
    let command = session["command"].as_str().unwrap_or_default();
    let items: Vec<&str> = session["argv"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    eprintln!(
        "reported: command {command:?}, {} argv items, last {:?}",
        items.len(),
        items.last()
    );
    check(
        command.ends_with(MARKER) && command.len() <= COMMAND_MAX,
        format!("command cut with the marker: {command:?}"),
    )?;
    check(
        items.len() == ARGV_ITEMS_MAX,
        format!("argv cut to {ARGV_ITEMS_MAX} items: {}", items.len()),
    )?;
    check(
        items[1] == "-c"
            && items[2].starts_with("read a; read b # é")
            && items[2].ends_with(MARKER),
        format!(
            "the script kept its start and the marker: {:?}",
            &items[..3]
        ),
    )?;
    check(
        items[ARGV_ITEMS_MAX - 1].starts_with(MARKER)
            && items[ARGV_ITEMS_MAX - 1].ends_with(" more"),
        format!("the last item counts what went: {:?}", items.last()),
    )?;

    let cut = |kind: &'static str| async move {
        sg::metric(
            agent_addr,
            "sessionguard_agent_report_cuts_total",
            &[("kind", kind)],
        )
        .await
        .map(|v| v.unwrap_or(0.0))
    };
    wait::until("the agent counted the cuts", await_::TIMEOUT, || async {
        let (items, arg, command) = (
            cut("argv_items").await?,
            cut("arg").await?,
            cut("command").await?,
        );
        eprintln!("cuts: argv_items {items}, arg {arg}, command {command}");
        Ok((items >= 1.0 && arg >= 1.0 && command >= 1.0).then_some(()))
    })
    .await?;
    let refused = sg::metric(agent_addr, "sessionguard_agent_reports_refused_total", &[]).await?;
    check(
        refused.is_none(),
        format!("no write was refused: {refused:?}"),
    )?;
    // Both pods stay protected while logged in: an eviction is refused.
    for pod in ["odd", "plain"] {
        match pods.evict(pod, &Default::default()).await {
            Err(kube::Error::Api(s)) if s.code == 429 => {}
            other => {
                return Err(Error::Invalid(format!(
                    "eviction of {pod} while logged in: {other:?}"
                )));
            }
        }
    }
    env.finish().await
}
