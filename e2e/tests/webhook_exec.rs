//! The exec/attach/debug webhook and the annotation guard on the real API
//! server, with the real controller, and the real kubectl-sessions plugin
//! found by kubectl's plugin discovery.

mod webhook_support;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sessionguard_core::keys;
use sessionguard_e2e::Result;
use sessionguard_e2e::harness::{TestEnv, await_};
use webhook_support::{self as wh, ADMIN, check, sg};

const POD: &str = "box";

async fn records(ctl: &sg::Controller, outcome: &str) -> Result<f64> {
    Ok(ctl
        .metric(
            "sessionguard_webhook_records_total",
            &[("outcome", outcome)],
        )
        .await?
        .unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_debug_are_recorded_and_the_record_is_guarded() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("wh-exec").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let kubeconfig = wh::controller_kubeconfig(&env).await?;
    let port = wh::free_port()?;
    wh::install_webhooks(&env, port).await?;
    let pods: Api<Pod> = env.api();
    wh::pod(&env, POD).await?;
    wh::pod(&env, "untouched").await?;
    let mut ctl = wh::start(&env, &kubeconfig, "wh-ctl", port, true, &["--ttl", "10m"]).await?;
    wh::await_guard(&env, POD).await?;

    // --- dry run first: admitted, seen by the webhook, recorded nowhere ---
    let dry = json!({"spec": {"ephemeralContainers": [
        {"name": "dry", "image": "busybox", "command": ["sh"]}]}});
    pods.patch_subresource(
        "ephemeralcontainers",
        POD,
        &PatchParams {
            dry_run: true,
            ..Default::default()
        },
        &Patch::Strategic(&dry),
    )
    .await?;
    check(
        ctl.metric(
            "sessionguard_webhook_requests_total",
            &[("webhook", "connect"), ("outcome", "dry_run")],
        )
        .await?
            == Some(1.0),
        "the webhook saw the dry-run debug request",
    )?;

    // --- exec: admitted (fails later, at the node), recorded with the real user ---
    let (_, exec_out) = wh::kubectl(
        &env,
        &["exec", POD, "-c", "app", "--", "sh", "-c", "echo drift"],
    )
    .await?;
    check(
        !exec_out.contains("denied"),
        format!("exec was denied: {exec_out}"),
    )?;
    let (_, note, _) = wh::await_event(&env, POD, "Exec", "sh -c echo drift").await?;
    check(
        note.contains(&format!(
            "user {ADMIN} (groups system:masters, system:authenticated)"
        )) && note.contains("in container app"),
        format!("exec event names user, groups and container: {note}"),
    )?;
    let p = pods.get(POD).await?;
    check(
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::INTERACTED))
            .map(String::as_str)
            == Some("true"),
        "interacted label",
    )?;
    check(
        wh::annotation(&p, keys::INTERACTOR).as_deref() == Some(ADMIN),
        "interactor is the admin",
    )?;
    check(
        wh::annotation(&p, keys::TTL).as_deref() == Some("10m0s"),
        "ttl",
    )?;
    let first = wh::annotation(&p, keys::FIRST_INTERACTION).unwrap_or_default();
    let evict_at = wh::annotation(&p, keys::EVICT_AT).unwrap_or_default();
    let first_t: jiff::Timestamp = first
        .parse()
        .map_err(|e| wh::invalid(format!("{first}: {e}")))?;
    check(
        evict_at
            == sessionguard_core::interaction::rfc3339(
                first_t + jiff::SignedDuration::from_mins(10),
            ),
        format!("evict-at = first + ttl: {first} / {evict_at}"),
    )?;

    // --- attach: PodAttachOptions has no command; must work anyway ---
    let (_, out) = wh::kubectl(&env, &["attach", POD, "-c", "app"]).await?;
    check(!out.contains("denied"), format!("attach was denied: {out}"))?;
    wh::await_event(&env, POD, "Attach", &format!("user {ADMIN}")).await?;

    // --- debug: an ephemeral container through the real kubectl debug ---
    let (ok, out) = wh::kubectl(
        &env,
        &["debug", POD, "--image=busybox", "-c", "dbg", "--", "sh"],
    )
    .await?;
    check(ok, format!("kubectl debug: {out}"))?;
    wh::await_event(&env, POD, "Debug", "in container dbg: sh").await?;
    let p = await_::object(&pods, POD, "last-container dbg", |p| {
        wh::annotation(p, keys::LAST_CONTAINER).as_deref() == Some("dbg")
    })
    .await?;
    check(
        wh::annotation(&p, keys::FIRST_INTERACTION).as_deref() == Some(first.as_str()),
        "first interaction never moves",
    )?;
    // The queue is FIFO and the dry run went first: had it been recorded, it would be by now.
    let evs = wh::events(&env, POD).await?;
    check(
        !evs.iter().any(|(_, n, _)| n.contains("container dry")),
        format!("dry run left an event: {evs:?}"),
    )?;
    check(
        records(&ctl, "recorded").await? == 3.0,
        "exactly three records (exec, attach, debug)",
    )?;

    // --- kubectl sessions get matches the pod ---
    let (code, out, err) = wh::plugin(&env, &["-n", env.ns(), "get", "-o", "json"]).await?;
    check(code == 0, format!("get -o json exit {code}: {err}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    check(
        items.len() == 1,
        format!("only the interacted pod is listed: {out}"),
    )?;
    check(
        items[0]["pod"] == POD
            && items[0]["user"] == ADMIN
            && items[0]["containers"] == json!(["dbg"])
            && items[0]["firstInteraction"] == first.as_str()
            && items[0]["evictionTime"] == evict_at.as_str()
            && items[0]["protected"] == false,
        format!("get -o json matches the annotations: {out}"),
    )?;
    let (code, table, _) = wh::plugin(&env, &["-n", env.ns(), "get", POD]).await?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    check(
        code == 0
            && header
                == [
                    "POD",
                    "CONTAINER",
                    "USER",
                    "SESSIONS",
                    "FIRST-INTERACTION",
                    "PROTECTED",
                    "EVICTION-TIME",
                ]
            && row[..7]
                == [
                    POD,
                    "dbg",
                    ADMIN,
                    "-",
                    first.as_str(),
                    "no",
                    evict_at.as_str(),
                ]
            && row[7].starts_with("(in"),
        format!("table:\n{table}"),
    )?;

    // --- extend moves the eviction time and records the requester ---
    let (code, out, err) = wh::plugin(&env, &["-n", env.ns(), "extend", POD, "-d", "30m"]).await?;
    let moved =
        sessionguard_core::interaction::rfc3339(first_t + jiff::SignedDuration::from_mins(40));
    check(
        code == 0 && out.contains(&format!("requested by {ADMIN}")) && out.contains(&moved),
        format!("extend exit {code}: {out}{err}"),
    )?;
    let p = await_::object(&pods, POD, "evict-at moved by 30m", |p| {
        wh::annotation(p, keys::EVICT_AT).as_deref() == Some(moved.as_str())
    })
    .await?;
    check(
        wh::annotation(&p, keys::EXTENSION).as_deref() == Some("30m0s"),
        "extension",
    )?;
    check(
        wh::annotation(&p, keys::EXTENDED_BY).as_deref() == Some(ADMIN),
        "extended-by",
    )?;
    wh::await_event(&env, POD, "Extended", &format!("requested by {ADMIN}")).await?;

    // --- bad input changes nothing and says why ---
    let before = pods.get(POD).await?;
    let (code, out, err) = wh::plugin(&env, &["-n", env.ns(), "extend", POD, "-d", "3x"]).await?;
    check(
        code == 2 && err.contains("invalid duration \"3x\": unknown unit") && err.contains("1h30m"),
        format!("-d 3x: exit {code}: {out}{err}"),
    )?;
    let (code, _, err) = wh::plugin(&env, &["-n", env.ns(), "extend", "nope", "-d", "5m"]).await?;
    check(
        code == 1 && err.contains("pod") && err.contains("nope not found"),
        format!("unknown pod: {err}"),
    )?;
    let (code, _, err) =
        wh::plugin(&env, &["-n", env.ns(), "extend", "untouched", "-d", "5m"]).await?;
    check(
        code == 1 && err.contains("never interacted"),
        format!("never interacted: {err}"),
    )?;
    check(
        pods.get(POD).await?.metadata.annotations == before.metadata.annotations,
        "failed extends changed nothing",
    )?;

    // --- the guard: record edits denied, forged requesters replaced, cap enforced ---
    let (ok, out) = wh::kubectl(
        &env,
        &[
            "annotate",
            "pod",
            POD,
            "--overwrite",
            "sessionguard.io/evict-at=2099-01-01T00:00:00Z",
        ],
    )
    .await?;
    check(
        !ok && out.contains("sessionguard.io/evict-at is managed by sessionguard"),
        format!("evict-at edit: {out}"),
    )?;
    let (ok, out) =
        wh::kubectl(&env, &["label", "pod", POD, "sessionguard.io/interacted-"]).await?;
    check(
        !ok && out.contains("label sessionguard.io/interacted"),
        format!("label removal: {out}"),
    )?;
    let (ok, out) = wh::kubectl(
        &env,
        &[
            "annotate",
            "pod",
            POD,
            "--overwrite",
            "sessionguard.io/extension=40d",
            &format!("{}=mallory", keys::EXTENDED_BY),
        ],
    )
    .await?;
    check(
        !ok && out.contains("exceeds the maximum extension of 168h0m0s"),
        format!("cap: {out}"),
    )?;
    let (ok, out) = wh::kubectl(
        &env,
        &[
            "annotate",
            "pod",
            POD,
            "--overwrite",
            "sessionguard.io/extension=1h",
            &format!("{}=mallory", keys::EXTENDED_BY),
        ],
    )
    .await?;
    check(ok, format!("a direct extension is allowed: {out}"))?;
    let p = pods.get(POD).await?;
    check(
        wh::annotation(&p, keys::EXTENDED_BY).as_deref() == Some(ADMIN),
        format!(
            "the requester comes from the request, not the client: {:?}",
            wh::annotation(&p, keys::EXTENDED_BY)
        ),
    )?;
    let (ok, out) = wh::kubectl(&env, &["annotate", "pod", POD, "--overwrite", "team=ops"]).await?;
    check(ok, format!("unrelated annotations stay editable: {out}"))?;

    // --- a new pod may not bring its own record (a far-future TTL) ---
    let forged: Pod = serde_json::from_value(json!({
        "metadata": {"name": "forged", "annotations": {
            "sessionguard.io/ttl": "99999h", "sessionguard.io/first-interaction": "2099-01-01T00:00:00Z"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}
    }))?;
    let e = pods
        .create(&Default::default(), &forged)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    check(
        e.contains("a new pod may not carry annotation sessionguard.io/first-interaction, annotation sessionguard.io/ttl"),
        format!("forged pod creation: {e:?}"),
    )?;
    wh::pod(&env, "opted-in-later").await?;

    // --- with the controller stopped, exec is still admitted (failurePolicy Ignore) ---
    ctl.stop();
    let (_, out) = wh::kubectl(&env, &["exec", POD, "-c", "app", "--", "true"]).await?;
    check(
        !out.contains("denied") && !out.contains("admission webhook"),
        format!("exec without the webhook: {out}"),
    )?;
    // The same failure as with the webhook up: the node has no kubelet port.
    let tail = |s: &str| {
        s.lines()
            .last()
            .unwrap_or_default()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    check(
        tail(&out) == tail(&exec_out),
        format!("same backend error as before:\n{out}\nvs\n{exec_out}"),
    )?;

    wh::remove_webhooks(&env).await;
    env.finish().await
}
