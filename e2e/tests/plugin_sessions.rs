//! kubectl-sessions against live terminal sessions: a real pty in a pod's
//! container on a simulated node, seen by the real agent, recorded by the
//! real controller; the plugin's SESSIONS column follows the node's report.

mod webhook_support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use sessionguard_core::keys;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, wait};
use webhook_support::{self as wh, check, sg};

const POD: &str = "bastion";

async fn json_row(env: &TestEnv) -> Result<serde_json::Value> {
    let (code, out, err) = wh::plugin(env, &["-n", env.ns(), "get", POD, "-o", "json"]).await?;
    check(code == 0, format!("get exit {code}: {err}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["items"][0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_follows_live_sessions() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("plugin-sessions").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let _ctl = sg::start_controller(&env, "plugin-ctl", &[]).await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    wh::pod(&env, POD).await?;
    let pods: Api<Pod> = env.api();

    let session = env.session(POD, "app", &["sh"]).await?;
    let p = await_::object(&pods, POD, "login recorded by the controller", |p| {
        wh::annotation(p, keys::INTERACTOR).is_some_and(|u| u.starts_with("uid:"))
    })
    .await?;
    let who = wh::annotation(&p, keys::INTERACTOR).unwrap_or_default();
    let row = wait::until(
        "the plugin to show 1 live session",
        await_::TIMEOUT,
        || async {
            let r = json_row(&env).await?;
            Ok((r["sessions"] == 1).then_some(r))
        },
    )
    .await?;
    check(
        row["containers"] == serde_json::json!(["app"])
            && row["user"] == who.as_str()
            && row["node"] == env.node_name()
            && row["evictionTime"].as_str() == wh::annotation(&p, keys::EVICT_AT).as_deref(),
        format!("row matches the pod and the report: {row}"),
    )?;
    // Drift eviction is off (the default): no eviction time, and why not.
    check(
        wh::annotation(&p, keys::EVICT_AT).is_none()
            && wh::annotation(&p, keys::EVICTION).as_deref()
                == Some("off: --evict-interacted is false")
            && row["evictionOff"] == "--evict-interacted is false",
        format!("eviction off: {row} {:?}", p.metadata.annotations),
    )?;
    let (code, out, _) = wh::plugin(&env, &["-n", env.ns(), "get", POD]).await?;
    check(
        code == 0
            && out.lines().any(|l| {
                l.starts_with(POD)
                    && l.trim_end().ends_with("off (--evict-interacted is false)")
                    && !l.contains("(in ")
            }),
        format!("EVICTION-TIME says off:\n{out}"),
    )?;

    // All namespaces: a NAMESPACE column, and this pod listed as interacted.
    let (code, out, _) = wh::plugin(&env, &["get", "-A"]).await?;
    check(
        code == 0
            && out.starts_with("NAMESPACE")
            && out
                .lines()
                .any(|l| l.starts_with(env.ns()) && l.contains(POD) && l.contains(&who)),
        format!("-A:\n{out}"),
    )?;
    // A name with -A: looked up in every namespace (the kubeconfig's default
    // namespace is not the test's).
    let (code, out, err) = wh::plugin(&env, &["get", POD, "-A"]).await?;
    check(
        code == 0
            && out.starts_with("NAMESPACE")
            && out.lines().filter(|l| l.contains(POD)).count() == 1
            && out
                .lines()
                .any(|l| l.starts_with(env.ns()) && l.contains(POD)),
        format!("get {POD} -A: exit {code}\n{out}{err}"),
    )?;
    let (code, _, err) = wh::plugin(&env, &["get", "no-such-pod", "-A"]).await?;
    check(
        code == 1 && err.contains("pod no-such-pod not found in any namespace"),
        format!("get no-such-pod -A: exit {code}: {err}"),
    )?;
    // extend: names and --all together is a usage error, not a silent choice.
    let (code, _, err) =
        wh::plugin(&env, &["-n", env.ns(), "extend", POD, "--all", "-d", "1h"]).await?;
    check(
        code == 2 && err.contains("cannot be used with"),
        format!("extend POD --all: exit {code}: {err}"),
    )?;
    check(
        wh::annotation(&p, keys::LAST_INTERACTOR).as_deref() == Some(who.as_str()),
        "a login is the last interaction too",
    )?;
    let (code, out, _) = wh::plugin(&env, &["-n", env.ns(), "get", "-o", "wide"]).await?;
    check(
        code == 0 && out.contains("EXTENDED-BY") && out.contains(env.node_name()),
        format!("-o wide:\n{out}"),
    )?;

    session.close()?;
    wait::until(
        "the plugin to show 0 live sessions",
        await_::TIMEOUT,
        || async { Ok((json_row(&env).await?["sessions"] == 0).then_some(())) },
    )
    .await?;
    // The record stays after logout: it is what drift eviction works from.
    let (code, out, _) = wh::plugin(&env, &["-n", env.ns(), "get", "-o", "yaml"]).await?;
    check(
        code == 0 && out.contains(&format!("user: {who}")) && out.contains("sessions: 0"),
        format!("-o yaml:\n{out}"),
    )?;
    env.finish().await
}

const PROTECTED_POD: &str = r#"
metadata:
  name: db-0
  labels: {app: db, sessionguard.io/protect: "true"}
spec:
  containers: [{name: app, image: debian:12}]
"#;

/// `kubectl sessions ARGS -w` as a child; its renders as they come.
struct Watching {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl Watching {
    async fn start(env: &TestEnv, args: &[&str]) -> Result<Self> {
        let bin =
            sessionguard_e2e::harness::workspace_bin("sessionguard-plugin", "kubectl-sessions")?;
        let mut child = tokio::process::Command::new(&bin)
            .arg(format!("--kubeconfig={}", env.kubeconfig().display()))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| wh::invalid(format!("running kubectl-sessions -w: {e}")))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| wh::invalid("no stdout"))?;
        use tokio::io::AsyncBufReadExt;
        Ok(Self {
            child,
            lines: tokio::io::BufReader::new(out).lines(),
            seen: vec![],
        })
    }

    /// Reads lines until one satisfies `pred` (the watch re-renders on change).
    async fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = tokio::time::Instant::now() + await_::TIMEOUT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .map_err(|_| {
                    wh::invalid(format!(
                        "-w: no line {what}; saw:\n{}",
                        self.seen.join("\n")
                    ))
                })?
                .map_err(|e| wh::invalid(e.to_string()))?
                .ok_or_else(|| wh::invalid(format!("-w ended; saw:\n{}", self.seen.join("\n"))))?;
            self.seen.push(line.clone());
            if pred(&line) {
                return Ok(line);
            }
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A drain's view on the real control plane: a real login (pty) on the
/// simulated node protects a pod, a real eviction is refused by the webhook;
/// the drain-blocked gauge names pod, node and user, `get` shows BLOCKING,
/// `nodes` shows the node's protected pod, login and waiting drain; a cordon
/// of the node gives one CordonedWithLogins event and the cordoned gauge;
/// `get -w` re-renders when the user logs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_and_blocking_follow_a_real_refused_eviction() -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{EvictParams, ListParams, Patch, PatchParams};

    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("plugin-drains").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let kubeconfig = wh::controller_kubeconfig(&env).await?;
    let port = wh::free_port()?;
    wh::install_webhooks(&env, port).await?;
    let ctl = wh::start(&env, &kubeconfig, "drains-ctl", port, true, &[]).await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    env.create_yaml::<Pod>(PROTECTED_POD).await?;
    let pods: Api<Pod> = env.api();
    await_::pod_ready(&pods, "db-0").await?;
    let (ns, node) = (env.ns().to_string(), env.node_name().to_string());

    // Before any login: the node shows, nothing would block.
    let (code, out, err) = wh::plugin(&env, &["nodes"]).await?;
    check(
        code == 0
            && out.starts_with("NODE")
            && out.lines().any(|l| {
                l.starts_with(&node)
                    && l.split_whitespace().collect::<Vec<_>>()
                        == [node.as_str(), "no", "-", "-", "-", "no"]
            }),
        format!("nodes before a login: exit {code}\n{out}{err}"),
    )?;

    let session = env.session("db-0", "app", &["sh"]).await?;
    ctl.until_protecting(&ns, "db-0").await?;
    let status = wait::until(
        "the eviction refused by the webhook",
        await_::TIMEOUT,
        || async {
            match pods.evict("db-0", &EvictParams::default()).await {
                Err(kube::Error::Api(s)) if s.code == 429 && s.message.contains("sessionguard") => {
                    Ok(Some(s))
                }
                Err(kube::Error::Api(s)) if s.code == 429 => Ok(None),
                other => Err(wh::invalid(format!(
                    "eviction of a logged-in pod: {other:?}"
                ))),
            }
        },
    )
    .await?;
    eprintln!("refusal: {}", status.message);

    // The gauge: one series naming namespace, pod, node and who holds it.
    let blocked = [
        ("namespace", ns.as_str()),
        ("pod", "db-0"),
        ("node", node.as_str()),
        ("user", "uid:0"),
    ];
    wait::until(
        "sessionguard_drain_blocked to name the pod",
        await_::TIMEOUT,
        || async {
            Ok(
                (ctl.metric("sessionguard_drain_blocked", &blocked).await? == Some(1.0))
                    .then_some(()),
            )
        },
    )
    .await?;

    // get: BLOCKING from the EvictionBlocked event, in table and JSON.
    let row = wait::until("get to show BLOCKING", await_::TIMEOUT, || async {
        let (code, out, err) = wh::plugin(&env, &["-n", &ns, "get", "db-0", "-o", "json"]).await?;
        check(code == 0, format!("get -o json: {err}"))?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let r = v["items"][0].clone();
        Ok((r["blocking"]["node"] == node.as_str()).then_some(r))
    })
    .await?;
    check(
        row["blocking"]["requestedBy"] == wh::ADMIN && row["protected"] == true,
        format!("BLOCKING names the requester: {row}"),
    )?;
    let (_, out, _) = wh::plugin(&env, &["-n", &ns, "get", "db-0"]).await?;
    check(
        out.lines()
            .next()
            .is_some_and(|h| h.contains("PROTECTED   BLOCKING"))
            && out
                .lines()
                .any(|l| l.starts_with("db-0") && l.contains(&format!("drain of {node}, "))),
        format!("get table:\n{out}"),
    )?;

    // nodes: the protected pod, the real login, and the waiting drain.
    let (code, out, err) = wh::plugin(&env, &["nodes", "-o", "json"]).await?;
    check(code == 0, format!("nodes -o json: {err}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let item = v["items"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["node"] == node.as_str()).cloned())
        .ok_or_else(|| wh::invalid(format!("no row for {node}: {out}")))?;
    let pod_ref = format!("{ns}/db-0");
    check(
        item["cordoned"] == false
            && item["protectedPods"] == serde_json::json!([pod_ref])
            && item["logins"][0]["pod"] == pod_ref.as_str()
            && item["logins"][0]["user"] == "uid:0"
            && item["logins"][0]["tty"]
                .as_str()
                .is_some_and(|t| t.starts_with("pts/"))
            && item["drainBlocks"] == true
            && item["waiting"]["node"] == node.as_str(),
        format!("nodes row: {item}"),
    )?;
    let (_, out, _) = wh::plugin(&env, &["nodes"]).await?;
    check(
        out.lines().any(|l| {
            l.starts_with(&node)
                && l.contains(&format!("uid:0@{pod_ref}:pts/"))
                && l.trim_end().contains("waiting ")
        }),
        format!("nodes table:\n{out}"),
    )?;

    // Cordon: one event on the Node, the cordoned gauge, CORDONED yes.
    let nodes: Api<Node> = Api::all(env.client().clone());
    let cordon = |on: bool| {
        let nodes = nodes.clone();
        let node = node.clone();
        async move {
            let patch = serde_json::json!({"spec": {"unschedulable": on}});
            nodes
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    };
    cordon(true).await?;
    let node_events = || async {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(env.client().clone());
        let lp = ListParams::default().fields(&format!("regarding.name={node}"));
        Ok::<_, sessionguard_e2e::Error>(
            api.list(&lp)
                .await?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("CordonedWithLogins"))
                .collect::<Vec<_>>(),
        )
    };
    let ev = wait::until(
        "a CordonedWithLogins event on the node",
        await_::TIMEOUT,
        || async { Ok(node_events().await?.into_iter().next()) },
    )
    .await?;
    let note = ev.note.clone().unwrap_or_default();
    check(
        note.contains(&pod_ref)
            && note.contains("uid:0 on pts/")
            && ev.type_.as_deref() == Some("Warning"),
        format!("the event names the pod and the login: {note}"),
    )?;
    wait::until("the cordoned-node gauge", await_::TIMEOUT, || async {
        let v = ctl
            .metric(
                "sessionguard_cordoned_node_protected_pods",
                &[("node", node.as_str())],
            )
            .await?;
        Ok((v == Some(1.0)).then_some(()))
    })
    .await?;
    let (_, out, _) = wh::plugin(&env, &["nodes"]).await?;
    check(
        out.lines()
            .any(|l| l.starts_with(&node) && l.split_whitespace().nth(1) == Some("yes")),
        format!("CORDONED yes:\n{out}"),
    )?;

    // -w: the table is printed again when the user logs out.
    let mut w = Watching::start(&env, &["-n", &ns, "get", "db-0", "-w"]).await?;
    w.until("showing the wait", |l| {
        l.starts_with("db-0") && l.contains("drain of ")
    })
    .await?;
    session.close()?;
    let after = w
        .until("without protection after logout", |l| {
            l.starts_with("db-0")
                && !l.contains("drain of ")
                && l.split("   ").any(|c| c.trim() == "no")
        })
        .await?;
    eprintln!("-w after logout: {after}");
    drop(w);
    wait::until(
        "the drain-blocked series to end at logout",
        await_::TIMEOUT,
        || async {
            Ok(ctl
                .metric("sessionguard_drain_blocked", &blocked)
                .await?
                .is_none()
                .then_some(()))
        },
    )
    .await?;
    check(
        ctl.metric(
            "sessionguard_cordoned_node_protected_pods",
            &[("node", node.as_str())],
        )
        .await?
        .is_none(),
        "no cordoned-node series once nothing is protected",
    )?;
    let events = node_events().await?;
    check(
        events.len() == 1,
        format!(
            "one CordonedWithLogins event per cordon, not {}",
            events.len()
        ),
    )?;
    cordon(false).await?;
    drop(ctl);
    env.finish().await
}
