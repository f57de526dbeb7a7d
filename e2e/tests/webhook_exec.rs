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
/// Fresh pods, so attach and debug each prove the whole record on their own.
const ATTACH_POD: &str = "attach-box";
const DEBUG_POD: &str = "debug-box";

/// The label and record one API interaction must leave on a pod that had
/// none: who, when, until when, and through which container and command.
async fn assert_recorded(
    pods: &Api<Pod>,
    name: &str,
    container: &str,
    command: Option<&str>,
) -> Result<(Pod, jiff::Timestamp)> {
    // The webhook writes the record; the controller's reconcile adds
    // evict-at (drift eviction is on here).
    let p = await_::object(pods, name, "interaction recorded and evict-at set", |p| {
        wh::annotation(p, keys::FIRST_INTERACTION).is_some()
            && wh::annotation(p, keys::EVICT_AT).is_some()
    })
    .await?;
    check(
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::INTERACTED))
            .map(String::as_str)
            == Some("true"),
        format!("{name}: interacted label"),
    )?;
    for key in [keys::INTERACTOR, keys::LAST_INTERACTOR] {
        check(
            wh::annotation(&p, key).as_deref() == Some(ADMIN),
            format!("{name}: {key} is the admin: {:?}", wh::annotation(&p, key)),
        )?;
    }
    check(
        wh::annotation(&p, keys::TTL).as_deref() == Some("10m0s"),
        format!("{name}: ttl"),
    )?;
    let first = wh::annotation(&p, keys::FIRST_INTERACTION).unwrap_or_default();
    let first_t: jiff::Timestamp = first
        .parse()
        .map_err(|e| wh::invalid(format!("{first}: {e}")))?;
    let evict_at = wh::annotation(&p, keys::EVICT_AT).unwrap_or_default();
    check(
        evict_at
            == sessionguard_core::interaction::rfc3339(
                first_t + jiff::SignedDuration::from_mins(10),
            ),
        format!("{name}: evict-at = first + ttl: {first} / {evict_at}"),
    )?;
    check(
        wh::annotation(&p, keys::LAST_CONTAINER).as_deref() == Some(container)
            && wh::annotation(&p, keys::LAST_COMMAND).as_deref() == command
            && wh::annotation(&p, keys::LAST_GROUPS).as_deref()
                == Some("system:masters,system:authenticated"),
        format!(
            "{name}: last container/command/groups: {:?}",
            p.metadata.annotations
        ),
    )?;
    Ok((p, first_t))
}

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
    wh::pod(&env, ATTACH_POD).await?;
    wh::pod(&env, DEBUG_POD).await?;
    wh::pod(&env, "untouched").await?;
    let mut ctl = wh::start(
        &env,
        &kubeconfig,
        "wh-ctl",
        port,
        true,
        &["--ttl", "10m", "--evict-interacted", "true"],
    )
    .await?;
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
    let (_, note, _) = wh::await_event(&env, POD, "Exec", "sh -c 'echo drift'").await?;
    check(
        note.contains(&format!(
            "user {ADMIN} (groups system:masters, system:authenticated)"
        )) && note.contains("in container app"),
        format!("exec event names user, groups and container: {note}"),
    )?;
    let (_, first_t) = assert_recorded(&pods, POD, "app", Some("sh -c 'echo drift'")).await?;
    let first = sessionguard_core::interaction::rfc3339(first_t);
    let evict_at =
        sessionguard_core::interaction::rfc3339(first_t + jiff::SignedDuration::from_mins(10));

    // --- attach, on a pod nobody touched: PodAttachOptions has no command ---
    let (_, out) = wh::kubectl(&env, &["attach", ATTACH_POD, "-c", "app"]).await?;
    check(!out.contains("denied"), format!("attach was denied: {out}"))?;
    wh::await_event(&env, ATTACH_POD, "Attach", &format!("user {ADMIN}")).await?;
    assert_recorded(&pods, ATTACH_POD, "app", None).await?;

    // --- debug, on another fresh pod: an ephemeral container through the real kubectl debug ---
    let (ok, out) = wh::kubectl(
        &env,
        &[
            "debug",
            DEBUG_POD,
            "--image=busybox",
            "-c",
            "dbg",
            "--",
            "sh",
        ],
    )
    .await?;
    check(ok, format!("kubectl debug: {out}"))?;
    wh::await_event(&env, DEBUG_POD, "Debug", "in container dbg: sh").await?;
    assert_recorded(&pods, DEBUG_POD, "dbg", Some("sh")).await?;

    // --- a second interaction on the first pod: last-* move, first does not ---
    let (_, out) = wh::kubectl(&env, &["attach", POD, "-c", "app"]).await?;
    check(!out.contains("denied"), format!("attach was denied: {out}"))?;
    wh::await_event(&env, POD, "Attach", &format!("user {ADMIN}")).await?;
    let p = await_::object(&pods, POD, "attach replaced the last command", |p| {
        wh::annotation(p, keys::LAST_COMMAND).is_none()
    })
    .await?;
    check(
        wh::annotation(&p, keys::FIRST_INTERACTION).as_deref() == Some(first.as_str())
            && wh::annotation(&p, keys::EVICT_AT).as_deref() == Some(evict_at.as_str()),
        "first interaction and evict-at never move",
    )?;
    // The queue is FIFO and the dry run went first: had it been recorded, it would be by now.
    let evs = wh::events(&env, POD).await?;
    check(
        !evs.iter().any(|(_, n, _)| n.contains("container dry")),
        format!("dry run left an event: {evs:?}"),
    )?;
    check(
        records(&ctl, "recorded").await? == 4.0,
        "exactly four records (exec, attach, debug, attach)",
    )?;
    // Each record folded into the pod as the replica's cache held it: the pod
    // was read from the API server only after a patch it refused (cache behind).
    let writes = |op: &'static str, outcome: &'static str| {
        let ctl = &ctl;
        async move {
            Ok::<f64, sessionguard_e2e::Error>(
                ctl.metric(
                    "sessionguard_writes_total",
                    &[("op", op), ("outcome", outcome)],
                )
                .await?
                .unwrap_or(0.0),
            )
        }
    };
    let (reads, refused, patched) = (
        writes("get_pod", "ok").await?,
        writes("record_interaction", "error").await?,
        writes("record_interaction", "ok").await?,
    );
    eprintln!("record writes: {patched} patches, {refused} refused, {reads} reads");
    check(
        patched == 4.0 && reads <= refused,
        format!(
            "records read the pod only after a refused patch: {reads} reads, {refused} refused, {patched} patches"
        ),
    )?;

    // --- kubectl sessions get matches the pod ---
    let (code, out, err) = wh::plugin(&env, &["-n", env.ns(), "get", "-o", "json"]).await?;
    check(code == 0, format!("get -o json exit {code}: {err}"))?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let listed: Vec<&str> = items.iter().filter_map(|i| i["pod"].as_str()).collect();
    check(
        listed == [ATTACH_POD, POD, DEBUG_POD],
        format!("only the interacted pods are listed: {out}"),
    )?;
    let item = &items[1];
    check(
        item["user"] == ADMIN
            && item["containers"] == json!(["app"])
            && item["firstInteraction"] == first.as_str()
            && item["evictionTime"] == evict_at.as_str()
            && item["protected"] == false,
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
                    "IDLE",
                    "FIRST-INTERACTION",
                    "PROTECTED",
                    "BLOCKING",
                    "EVICTION-TIME",
                ]
            && row[..9]
                == [
                    POD,
                    "app",
                    ADMIN,
                    "-",
                    "-",
                    first.as_str(),
                    "no",
                    "-",
                    evict_at.as_str(),
                ]
            && row[9].starts_with("(in"),
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
    // pods/status accepts metadata changes too: guarded the same way.
    let e = pods
        .patch_status(
            POD,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "sessionguard.io/evict-at": "2099-01-01T00:00:00Z"}}})),
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    check(
        e.contains("sessionguard.io/evict-at is managed by sessionguard"),
        format!("evict-at edit through pods/status: {e:?}"),
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
    // ... nor an extension the guard would refuse on an update, nor a requester.
    for (annotations, want) in [
        (
            json!({"sessionguard.io/extension": "bogus"}),
            "invalid duration \"bogus\"",
        ),
        (
            json!({"sessionguard.io/extension": "40d"}),
            "exceeds the maximum extension",
        ),
        (
            json!({"sessionguard.io/extension": "1h", "sessionguard.io/extended-by": "mallory"}),
            "annotation sessionguard.io/extended-by",
        ),
    ] {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "forged-ext", "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]}
        }))?;
        let e = pods
            .create(&Default::default(), &p)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        check(
            e.contains(want),
            format!("pod created with {annotations}: {e:?}"),
        )?;
    }
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
