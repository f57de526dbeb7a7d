//! Hostile input on the real control plane: what a tenant controls (here, the
//! argv of the processes in their pod) must never cost other logins on the
//! node their protection. And a node's own hostile /proc (mounted with
//! `hidepid=`) must stop the agent's reports instead of emptying them.

mod webhook_support;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sessionguard_core::session::{ARGV_ITEMS_MAX, COMMAND_MAX};
use sessionguard_e2e::harness::http::http_get_any;
use sessionguard_e2e::harness::{Child, TestEnv, await_, workspace_bin};
use sessionguard_e2e::{Error, Result, wait};
use webhook_support::{self as wh, check, sg};

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
        let Ok((code, body)) = http_get_any(addr, "/readyz").await else {
            return Ok(None);
        };
        if body.contains("first scan not finished") {
            return Ok(None);
        }
        let (_, metrics) = http_get_any(addr, "/metrics").await?;
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
    let (_, sessions) = http_get_any(addr, "/sessions").await?;
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
    // argv is reported only when asked for (`--report-argv`); here it is, to
    // see that its bounds hold.
    let _agent =
        sg::start_agent_with(&env, "500ms", agent_addr, "30s", &["--report-argv=true"]).await?;
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
    // Both pods stay protected while logged in: an eviction is refused. The
    // controller writes the pod's UID label and its PDB at once: the pod is
    // protected once both exist, so the label is awaited too.
    for pod in ["odd", "plain"] {
        await_::object(&pods, pod, "labelled for its PDB", |p| {
            p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(sessionguard_core::keys::POD_UID_LABEL))
        })
        .await?;
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

// === hostile reports, reviews and annotations: the table ===

/// What a logged-in pod must still have after each hostile input: the same
/// PDB object (not released and recreated), its session in the node's
/// report, and an eviction answered 429.
async fn lost_nothing(env: &TestEnv, pod_uid: &str, pdb_uid: &Option<String>) -> Result<()> {
    let pdb = env
        .api::<PodDisruptionBudget>()
        .get_opt("sessionguard-bastion")
        .await?;
    check(
        pdb.as_ref().map(|p| &p.metadata.uid) == Some(pdb_uid),
        format!("the PDB is not the one made for the login: {pdb:?}"),
    )?;
    let report = sg::report_api(env.client()).get(env.node_name()).await?;
    check(
        sg::report_sessions(&report, pod_uid) == 1,
        format!(
            "the login left the node's report: {:?}",
            report.data["spec"]
        ),
    )?;
    match env.api::<Pod>().evict("bastion", &Default::default()).await {
        Err(kube::Error::Api(s)) if s.code == 429 => Ok(()),
        other => Err(Error::Invalid(format!(
            "eviction while logged in: {other:?}"
        ))),
    }
}

/// A valid session of `pod_uid` for the hostile reports to start from.
fn session_json(pod_uid: &str) -> Value {
    let now = jiff::Timestamp::now().to_string();
    json!({
        "pod_uid": pod_uid, "container_id": "ab".repeat(32), "tty": "pts/9", "pid": 4242,
        "command": "bash", "argv": ["bash"], "uid": 1000, "started_at": now, "processes": 1
    })
}

/// Server-side applies `spec` as the report `name` with the agent's own
/// token; each of these must be refused (the report is left as it was), and
/// the refusal must say what was wrong. Returns the API server's message.
async fn refused_report(
    agent: &kube::Client,
    name: &str,
    spec: Value,
    names: &str,
) -> Result<String> {
    let body = json!({
        "apiVersion": "sessionguard.io/v1alpha1", "kind": "SessionReport",
        "metadata": {"name": name}, "spec": spec
    });
    let pp = PatchParams::apply("hostile").force();
    match sg::report_api(agent)
        .patch(name, &pp, &Patch::Apply(&body))
        .await
    {
        Err(kube::Error::Api(s)) if [403, 413, 422].contains(&s.code) => {
            check(
                s.message.contains(names),
                format!("the refusal does not name {names:?}: {}", s.message),
            )?;
            Ok(format!("{} {}", s.code, s.message))
        }
        other => Err(Error::Invalid(format!("accepted: {other:?}"))),
    }
}

/// An edit of the pod's annotations by the pod's owner (the harness admin is
/// an ordinary user to the guard); it must be refused naming `names`.
async fn refused_edit(
    env: &TestEnv,
    key: &str,
    value: Option<&str>,
    names: &str,
) -> Result<String> {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    match env
        .api::<Pod>()
        .patch("bastion", &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 400 || s.code == 403 || s.code == 422 => {
            check(
                s.message.contains(names),
                format!("the refusal does not name {names:?}: {}", s.message),
            )?;
            Ok(format!("{} {}", s.code, s.message))
        }
        other => Err(Error::Invalid(format!("accepted: {other:?}"))),
    }
}

/// Every input below is controlled by someone other than the operator: the
/// agent identity (stolen, or an agent on a hostile node), anyone who holds
/// the webhook's path (or the API server sending garbage), and the pod's own
/// users. After each one the login keeps its protection, unchanged
/// ([`lost_nothing`]), and the input got an answer that says what was wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_reports_reviews_and_annotations_cost_the_login_nothing() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("hostile-table").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let kubeconfig = wh::controller_kubeconfig(&env).await?;
    let port = wh::free_port()?;
    wh::install_webhooks(&env, port).await?;
    let ctl = wh::start(
        &env,
        &kubeconfig,
        "hostile-ctl",
        port,
        true,
        &["--evict-interacted", "true", "--ttl", "1h"],
    )
    .await?;
    let agent = sg::start_agent(&env, "500ms").await?;
    let pods: Api<Pod> = env.api();
    env.create_yaml::<Pod>(&bastion("bastion")).await?;
    let pod = await_::pod_ready(&pods, "bastion").await?;
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    let _login = env.session("bastion", "main", &["sh"]).await?;
    let pdb = await_::object(
        &env.api::<PodDisruptionBudget>(),
        "sessionguard-bastion",
        "made for the login",
        |_| true,
    )
    .await?;
    let pdb_uid = pdb.metadata.uid.clone();
    wh::await_guard(&env, "bastion").await?;
    lost_nothing(&env, &pod_uid, &pdb_uid).await?;

    let node = env.node_name().to_string();
    let as_agent = sessionguard_e2e::controlplane::kubeconfig::client(&agent.kubeconfig).await?;
    let mut tried: Vec<(&str, String)> = vec![];
    let base = || session_json(&pod_uid);
    let spec = |sessions: Vec<Value>| {
        json!({"node": node, "generated_at": jiff::Timestamp::now().to_string(),
               "sequence": 1, "sessions": sessions})
    };
    let with = |k: &str, v: Value| {
        let mut s = base();
        s[k] = v;
        spec(vec![s])
    };

    // --- reports, written with the agent's own token ---
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "4,097 sessions in one report",
            spec(vec![base(); sessionguard_core::report::SESSIONS_MAX + 1]),
            "sessions",
        ),
        (
            "a 33-character tty",
            with("tty", json!("p".repeat(33))),
            "tty",
        ),
        (
            "a pod UID that is a path",
            with("pod_uid", json!("../../etc/passwd")),
            "pod_uid",
        ),
        (
            "a container ID that is not 64 hex digits",
            with("container_id", json!("ab; rm -rf /")),
            "container_id",
        ),
        (
            "a start time that is not a timestamp",
            with("started_at", json!("yesterday")),
            "started_at",
        ),
        ("a negative pid", with("pid", json!(-1)), "pid"),
        (
            "idle seconds over 2^32",
            with("idle_seconds", json!(1u64 << 33)),
            "idle_seconds",
        ),
        (
            "a null where a string belongs",
            with("command", Value::Null),
            "command",
        ),
        (
            "an argv of 65 items",
            with("argv", json!(vec!["x"; 65])),
            "argv",
        ),
        (
            "an argv item of 1,025 bytes",
            with("argv", json!(["a".repeat(1025)])),
            "argv",
        ),
        (
            "spec.node naming another node",
            {
                let mut s = spec(vec![base()]);
                s["node"] = json!("other-node");
                s
            },
            "spec.node",
        ),
    ];
    for (what, body, names) in cases {
        let answer = refused_report(&as_agent, &node, body, names).await?;
        lost_nothing(&env, &pod_uid, &pdb_uid).await?;
        tried.push((what, answer));
    }
    let answer = refused_report(&as_agent, "other-node", spec(vec![base()]), &node).await?;
    lost_nothing(&env, &pod_uid, &pdb_uid).await?;
    tried.push(("a report named for another node", answer));

    // --- admission bodies at the real (token) path ---
    let (connect, bundle) = wh::published(&env, port, "interactions.sessionguard.io").await?;
    let (eviction, _) = wh::published(&env, port, "evictions.sessionguard.io").await?;
    let review = |name: &str, user: &str| {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "00000000-0000-0000-0000-0000000bad00",
                "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "subResource": "exec", "name": name, "namespace": env.ns(),
                "operation": "CONNECT",
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": {"apiVersion": "v1", "kind": "PodExecOptions",
                           "container": "main", "command": ["sh"], "stdin": true, "tty": true}
            }
        }))
        .expect("a review serialises")
    };
    let big = vec![b' '; 9 << 20];
    let bodies: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "a review that is not JSON",
            connect.as_str(),
            b"{{{".to_vec(),
            400,
        ),
        (
            "JSON that is not an AdmissionReview",
            connect.as_str(),
            b"[]".to_vec(),
            400,
        ),
        (
            "an AdmissionReview without a request",
            connect.as_str(),
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            400,
        ),
        ("a 9 MiB review", connect.as_str(), big, 413),
        (
            "an eviction review that is not JSON",
            eviction.as_str(),
            b"\x00\xff".to_vec(),
            400,
        ),
    ];
    for (what, path, body, want) in bodies {
        let (code, text) = wh::https_post(port, &bundle, path, &body).await?;
        check(
            code == want,
            format!("{what}: answered {code} {text:?}, want {want}"),
        )?;
        lost_nothing(&env, &pod_uid, &pdb_uid).await?;
        tried.push((what, format!("{code} {}", text.trim())));
    }
    // A review naming a pod that does not exist is allowed and records nothing.
    let (code, text) =
        wh::https_post(port, &bundle, &connect, &review("no-such-pod", "mallory")).await?;
    check(
        code == 200 && text.contains("\"allowed\":true"),
        format!("review of a missing pod: {code} {text}"),
    )?;
    lost_nothing(&env, &pod_uid, &pdb_uid).await?;
    tried.push((
        "a review naming a pod that does not exist",
        format!("{code}, allowed, nothing recorded"),
    ));
    // A user name a terminal would act on: recorded, escaped, bounded.
    let user = format!("eve\u{1b}[2J\u{1b}]0;pwned\u{7}\nroot{}", "x".repeat(5000));
    let (code, _) = wh::https_post(port, &bundle, &connect, &review("bastion", &user)).await?;
    check(code == 200, format!("escaped-user review answered {code}"))?;
    let recorded = await_::object(&pods, "bastion", "the odd user recorded", |p| {
        wh::annotation(p, sessionguard_core::keys::LAST_INTERACTOR)
            .is_some_and(|u| u.starts_with("eve"))
    })
    .await?;
    // The record keeps the authenticated name as the API server gave it (it
    // is data); what reaches people (events, the plugin) is escaped.
    eprintln!(
        "recorded last interactor: {} bytes",
        wh::annotation(&recorded, sessionguard_core::keys::LAST_INTERACTOR)
            .unwrap_or_default()
            .len()
    );
    let (_, note, _) = wh::await_event(&env, "bastion", "Exec", "eve").await?;
    check(
        !note.chars().any(|c| c.is_control()) && note.len() <= 1024,
        format!("the Exec event is not escaped and bounded: {note:?}"),
    )?;
    lost_nothing(&env, &pod_uid, &pdb_uid).await?;
    tried.push((
        "a user name with ANSI escapes, a newline and 5,000 bytes",
        format!(
            "recorded; the event escaped: {:?}…",
            note.chars().take(40).collect::<String>()
        ),
    ));

    // --- the pod's users editing sessionguard's keys ---
    use sessionguard_core::keys;
    let edits: Vec<(&str, &str, Option<&str>, &str)> = vec![
        (
            "an extension that is not a duration",
            keys::EXTENSION,
            Some("banana"),
            "banana",
        ),
        (
            "an extension over the cap",
            keys::EXTENSION,
            Some("99999h"),
            keys::EXTENSION,
        ),
        (
            "a negative extension",
            keys::EXTENSION,
            Some("-5m"),
            keys::EXTENSION,
        ),
        (
            "a hand-edited ttl",
            keys::TTL,
            Some("1s"),
            "managed by sessionguard",
        ),
        (
            "an evict-at in the past",
            keys::EVICT_AT,
            Some("1970-01-01T00:00:00Z"),
            "managed by sessionguard",
        ),
        (
            "the interaction record removed",
            keys::FIRST_INTERACTION,
            None,
            "managed by sessionguard",
        ),
    ];
    for (what, key, value, names) in edits {
        let answer = refused_edit(&env, key, value, names).await?;
        lost_nothing(&env, &pod_uid, &pdb_uid).await?;
        tried.push((what, answer));
    }

    eprintln!("hostile inputs tried, each refused or neutralised, the login kept its PDB:");
    for (what, answer) in &tried {
        let answer: String = answer.chars().take(160).collect();
        eprintln!("  {what}: {answer}");
    }
    check(
        tried.len() >= 25,
        format!("only {} inputs tried", tried.len()),
    )?;
    // The controller counted no failed write and is still the leader.
    check(
        ctl.metric("sessionguard_leader", &[]).await? == Some(1.0),
        "the controller lost the lease",
    )?;
    drop(agent);
    wh::remove_webhooks(&env).await;
    drop(ctl);
    env.finish().await
}

// === flags and their environment variables ===

/// A Helm value typed wrong reaches the binaries as a flag or an environment
/// variable: each bad one stops the binary at start with status 2 (before it
/// touches the cluster) naming the flag, the value and why, instead of a
/// controller that quietly releases everything (`--agent-grace 0s`), never
/// writes (`--write-timeout 0s`) or renews its certificate on every check.
#[test]
fn bad_durations_and_flags_stop_the_binary_naming_them() -> Result<()> {
    let ctl = workspace_bin("sessionguard-controller", "sessionguard-controller")?;
    let agent = workspace_bin("sessionguard-agent", "sessionguard-agent")?;
    type Case<'a> = (
        &'a str,
        &'a std::path::Path,
        Vec<&'a str>,
        Vec<(&'a str, &'a str)>,
        Vec<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "a grace that is not a duration",
            &ctl,
            vec!["--agent-grace", "banana"],
            vec![],
            vec!["--agent-grace", "banana"],
        ),
        (
            "a zero agent grace",
            &ctl,
            vec!["--agent-grace", "0s"],
            vec![],
            vec!["--agent-grace", "greater than zero"],
        ),
        (
            "a negative ttl from the environment",
            &ctl,
            vec![],
            vec![("SESSIONGUARD_TTL", "-5m")],
            vec!["--ttl", "negative"],
        ),
        (
            "a max protection past u64 nanoseconds",
            &ctl,
            vec!["--max-protection", "99999999999999h"],
            vec![],
            vec!["--max-protection", "too large"],
        ),
        (
            "a zero lease duration",
            &ctl,
            vec!["--lease-duration", "0"],
            vec![],
            vec!["--lease-duration", "greater than zero"],
        ),
        (
            "a zero write timeout",
            &ctl,
            vec!["--write-timeout", "0ms"],
            vec![],
            vec!["--write-timeout", "greater than zero"],
        ),
        (
            "a duration with two dots",
            &ctl,
            vec!["--rollout-stuck-after", "1.5.3m"],
            vec![],
            vec!["--rollout-stuck-after", "1.5.3m"],
        ),
        (
            "a warning fraction over 100%",
            &ctl,
            vec!["--max-protection-warn-at", "150%"],
            vec![],
            vec!["--max-protection-warn-at", "150%"],
        ),
        (
            "renew-before longer than the validity",
            &ctl,
            vec!["--webhook-cert-renew-before", "100d"],
            vec![],
            vec!["--webhook-cert-renew-before", "--webhook-cert-validity"],
        ),
        (
            "a zero scan interval",
            &agent,
            vec!["run", "--interval", "0s"],
            vec![],
            vec!["--interval", "greater than zero"],
        ),
        (
            "an unknown unit",
            &agent,
            vec!["run", "--report-interval", "1y"],
            vec![],
            vec!["--report-interval", "1y"],
        ),
        (
            "an empty idle resolution from the environment",
            &agent,
            vec!["run"],
            vec![("SESSIONGUARD_IDLE_RESOLUTION", "")],
            vec!["--idle-resolution", "empty"],
        ),
    ];
    let mut failures = vec![];
    for (what, bin, args, env, names) in &cases {
        let out = std::process::Command::new(bin)
            .args(args)
            .envs(env.iter().copied())
            // Nothing must reach a cluster even if a case is accepted by mistake.
            .env("KUBECONFIG", "/nonexistent")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .map_err(|e| Error::Invalid(format!("running {}: {e}", bin.display())))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default().to_string();
        eprintln!("{what}: exit {:?}: {first}", out.status.code());
        if out.status.code() != Some(2) || !names.iter().all(|n| stderr.contains(n)) {
            failures.push(format!(
                "{what}: exit {:?}, want 2 naming {names:?}: {stderr}",
                out.status.code()
            ));
        }
    }
    check(failures.is_empty(), failures.join("\n"))
}
