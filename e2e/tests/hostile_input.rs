//! Hostile input on the real control plane: what a tenant controls (here, the
//! argv of the processes in their pod) must never cost other logins on the
//! node their protection.

mod controller_support;

use controller_support as sg;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::Value;
use sessionguard_core::session::{ARGV_ITEMS_MAX, COMMAND_MAX};
use sessionguard_e2e::harness::{TestEnv, await_};
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
