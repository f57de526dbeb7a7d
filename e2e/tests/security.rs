//! Issue 11's attacks, each tried on the real control plane with the chart's
//! real identities: each refused, nothing changed.
//!
//! - A forged AdmissionReview posted straight to the webhook port (anyone who
//!   can reach it, e.g. any pod) at the documented path, without the path
//!   token or with a wrong one: 404, no label, annotation or event on the
//!   pod, counted; the real `kubectl exec` through the API server is still
//!   recorded. The same forged review with the real token (which only the
//!   webhook configurations hold) would be recorded: the token is what stops it.
//! - The controller's token (chart RBAC: patch every pod, create/delete every
//!   PDB) changing a pod's image, someone else's labels, annotations or
//!   finalizers, deleting a user's PDB or creating one not labelled ours:
//!   refused by the chart's admission policies; its own flows (our keys, the
//!   autoscaler annotations, its own PDBs, protect and release) pass.
//! - The agent's token (chart RBAC, bound to a pod on its node) reading pods:
//!   `list pods -A`, narrowed to its node, and `get` of a pod are Forbidden;
//!   the real agent under it still reports a login (by pod UID), and the
//!   protect flow above runs with it; `scan` names pods only with an explicit
//!   `--kubeconfig`, and `--pod-names` without pod read stops the agent.
//! - The controller's token creating a labelled PDB with an empty or a
//!   workload selector, no owning pod or a name not its pod's, or stamping a
//!   shared `sessionguard.io/pod-uid` on a pod: refused (one budget covers at
//!   most one pod). Redirecting, widening, loosening or adding to its webhook
//!   configurations, or creating or deleting one: refused; publishing a
//!   caBundle passes.
//! - With `--webhook-client-ca`, a review from a client without the API
//!   server's client certificate records nothing even at the real path.
//! - With `controller.namespaces`, the controller's token setting
//!   `safe-to-evict` on a pod, or creating a budget of exactly the controller's
//!   shape, in a namespace the operator did not choose: refused, nothing
//!   changed; the same writes in a chosen namespace pass.

mod webhook_support;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sessionguard_controller::face::admission::token;
use sessionguard_core::keys;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, wait};
use webhook_support::{self as wh, check, invalid, sg};

/// A CONNECT pods/exec review as the API server would send it, naming `pod`
/// and a user of the forger's choosing.
fn forged_exec(ns: &str, pod: &str, user: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-00000000f00d",
            "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "exec", "name": pod, "namespace": ns,
            "operation": "CONNECT",
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": {"apiVersion": "v1", "kind": "PodExecOptions",
                       "container": "app", "command": ["sh"], "stdin": true, "tty": true},
            "dryRun": false
        }
    }))
    .expect("a review serialises")
}

/// The status code of [`wh::https_post`].
async fn https_post(port: u16, bundle_pem: &str, path: &str, body: &[u8]) -> Result<u16> {
    Ok(wh::https_post(port, bundle_pem, path, body).await?.0)
}

/// The status code of [`wh::https_post_as`].
async fn https_post_as(
    port: u16,
    bundle_pem: &str,
    client: Option<(&str, &str)>,
    path: &str,
    body: &[u8],
) -> Result<u16> {
    Ok(wh::https_post_as(port, bundle_pem, client, path, body)
        .await?
        .0)
}

/// Nothing of ours on the pod: no `sessionguard.io/` label or annotation.
fn untouched(p: &Pod) -> bool {
    let ours = |m: &Option<std::collections::BTreeMap<String, String>>| {
        m.iter().flatten().any(|(k, _)| k.starts_with(keys::PREFIX))
    };
    !ours(&p.metadata.labels) && !ours(&p.metadata.annotations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_review_without_the_path_token_records_nothing() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("sec-forge").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let kubeconfig = wh::controller_kubeconfig(&env).await?;
    let port = wh::free_port()?;
    wh::install_webhooks(&env, port).await?;
    let pods: Api<Pod> = env.api();
    for p in ["victim", "witness", "control"] {
        wh::pod(&env, p).await?;
    }
    // Drift eviction on: a forged record would schedule the victim's eviction.
    let ctl = wh::start(
        &env,
        &kubeconfig,
        "sec-ctl",
        port,
        true,
        &["--evict-interacted", "true"],
    )
    .await?;

    // What the API server uses: the published path carries a 256-bit token.
    let (path, bundle) = wh::published(&env, port, "interactions.sessionguard.io").await?;
    let tok = path
        .strip_prefix(token::PREFIX)
        .and_then(|r| r.split_once('/'))
        .map(|(t, _)| t.to_string())
        .unwrap_or_default();
    check(
        tok.len() == 64
            && tok.bytes().all(|b| b.is_ascii_hexdigit())
            && path.ends_with("/validate/connect"),
        format!("the published path carries a token: {path}"),
    )?;

    // --- the attack: the documented path, no token; then a wrong token ---
    let forged = forged_exec(env.ns(), "victim", "mallory");
    let wrong = format!(
        "{}{}",
        &tok[..63],
        if tok.ends_with('0') { '1' } else { '0' }
    );
    let mut answers = vec![];
    // Every documented path (the eviction webhook would emit events, the
    // guard and the mutating webhook answer for pods): none without the token.
    for p in [
        "/validate/connect".to_string(),
        "/validate/eviction".to_string(),
        "/validate/pods".to_string(),
        "/mutate/pods".to_string(),
        token::with_token("/validate/connect", &wrong),
        token::with_token("/validate/connect", &"0".repeat(64)),
    ] {
        answers.push((p.clone(), https_post(port, &bundle, &p, &forged).await?));
    }
    check(
        answers.iter().all(|(_, code)| *code == 404),
        format!("forged reviews answered {answers:?}"),
    )?;
    for (reason, n) in [("no_token", 4.0), ("wrong_token", 2.0)] {
        let got = ctl
            .metric(
                "sessionguard_webhook_unauthenticated_requests_total",
                &[("reason", reason)],
            )
            .await?;
        check(
            got == Some(n),
            format!("{reason} counted {got:?}, want {n}"),
        )?;
    }
    for webhook in ["connect", "eviction", "guard", "mutate"] {
        check(
            ctl.metric(
                "sessionguard_webhook_requests_total",
                &[("webhook", webhook)],
            )
            .await?
            .is_none(),
            format!("a forged review reached the {webhook} webhook"),
        )?;
    }

    // --- the real exec through the API server is recorded ---
    let (_, out) = wh::kubectl(&env, &["exec", "witness", "-c", "app", "--", "true"]).await?;
    check(!out.contains("denied"), format!("exec denied: {out}"))?;
    wh::await_event(&env, "witness", "Exec", &format!("user {}", wh::ADMIN)).await?;
    await_::object(&pods, "witness", "interaction recorded", |p| {
        wh::annotation(p, keys::INTERACTOR).as_deref() == Some(wh::ADMIN)
    })
    .await?;
    // Records are written in order: had a forged one been queued, it would be by now.
    let victim = pods.get("victim").await?;
    check(
        untouched(&victim),
        format!(
            "the forged reviews left something on the victim: {:?} {:?}",
            victim.metadata.labels, victim.metadata.annotations
        ),
    )?;
    let evs = wh::events(&env, "victim").await?;
    check(evs.is_empty(), format!("events on the victim: {evs:?}"))?;

    // --- control: the same forged review at the real path would be recorded ---
    let code = https_post(
        port,
        &bundle,
        &path,
        &forged_exec(env.ns(), "control", "mallory"),
    )
    .await?;
    check(code == 200, format!("the real path answered {code}"))?;
    await_::object(&pods, "control", "recorded via the real path", |p| {
        wh::annotation(p, keys::INTERACTOR).as_deref() == Some("mallory")
    })
    .await?;
    eprintln!(
        "forged reviews: 404 without the token ({answers:?}); with it (only the configurations hold it) recorded"
    );
    check(
        untouched(&pods.get("victim").await?),
        "victim still untouched",
    )?;
    wh::remove_webhooks(&env).await;
    drop(ctl);
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_a_review_without_the_api_server_s_certificate_records_nothing()
-> Result<()> {
    use sessionguard_e2e::controlplane::webhook_client;
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("sec-client-ca").await? else {
        return Ok(());
    };
    let pki = env.cluster().info.dir.join("pki");
    let ca = pki.join(webhook_client::CA);
    if !ca.is_file() {
        eprintln!(
            "SKIP: the reused control plane ({}) gives webhooks no client certificate (started before webhook_client existed)",
            env.cluster().info.dir.display()
        );
        return Ok(());
    }
    sg::install(env.client()).await?;
    let kubeconfig = wh::controller_kubeconfig(&env).await?;
    let port = wh::free_port()?;
    wh::install_webhooks(&env, port).await?;
    let pods: Api<Pod> = env.api();
    for p in ["victim", "witness", "control"] {
        wh::pod(&env, p).await?;
    }
    let ca_arg = ca.display().to_string();
    let ctl = wh::start(
        &env,
        &kubeconfig,
        "sec-ctl",
        port,
        true,
        &["--webhook-client-ca", &ca_arg],
    )
    .await?;
    let (path, bundle) = wh::published(&env, port, "interactions.sessionguard.io").await?;
    check(
        path.starts_with(token::PREFIX) && path.ends_with("/validate/connect"),
        format!("published path {path}"),
    )?;

    // --- the attack, even with the real path token: no client certificate ---
    let code = https_post(
        port,
        &bundle,
        &path,
        &forged_exec(env.ns(), "victim", "mallory"),
    )
    .await?;
    check(
        code == 404,
        format!("a review without a client certificate: {code}"),
    )?;
    let refused = ctl
        .metric(
            "sessionguard_webhook_unauthenticated_requests_total",
            &[("reason", "no_client_cert")],
        )
        .await?;
    check(
        refused == Some(1.0),
        format!("no_client_cert counted {refused:?}"),
    )?;
    // A certificate the CA did not sign (the cluster's own admin certificate)
    // does not even finish the handshake.
    let admin = (
        std::fs::read_to_string(pki.join("admin.crt")).map_err(|e| invalid(e.to_string()))?,
        std::fs::read_to_string(pki.join("admin.key")).map_err(|e| invalid(e.to_string()))?,
    );
    let other = https_post_as(
        port,
        &bundle,
        Some((&admin.0, &admin.1)),
        &path,
        &forged_exec(env.ns(), "victim", "mallory"),
    )
    .await;
    check(
        other.is_err(),
        format!("a certificate of another CA: {other:?}"),
    )?;

    // --- the real exec: the API server presents its certificate, recorded ---
    let (_, out) = wh::kubectl(&env, &["exec", "witness", "-c", "app", "--", "true"]).await?;
    check(!out.contains("denied"), format!("exec denied: {out}"))?;
    wh::await_event(&env, "witness", "Exec", &format!("user {}", wh::ADMIN)).await?;
    await_::object(&pods, "witness", "interaction recorded", |p| {
        wh::annotation(p, keys::INTERACTOR).as_deref() == Some(wh::ADMIN)
    })
    .await?;
    // Records are written in order: had the forged one been queued, it would be by now.
    let victim = pods.get("victim").await?;
    check(
        untouched(&victim),
        format!(
            "the forged review left something on the victim: {:?} {:?}",
            victim.metadata.labels, victim.metadata.annotations
        ),
    )?;
    let evs = wh::events(&env, "victim").await?;
    check(evs.is_empty(), format!("events on the victim: {evs:?}"))?;

    // --- control: the same review with the API server's certificate is heard ---
    let client = (
        std::fs::read_to_string(pki.join(webhook_client::CERT))
            .map_err(|e| invalid(e.to_string()))?,
        std::fs::read_to_string(pki.join(webhook_client::KEY))
            .map_err(|e| invalid(e.to_string()))?,
    );
    let code = https_post_as(
        port,
        &bundle,
        Some((&client.0, &client.1)),
        &path,
        &forged_exec(env.ns(), "control", "mallory"),
    )
    .await?;
    check(code == 200, format!("with the client certificate: {code}"))?;
    await_::object(&pods, "control", "recorded with the certificate", |p| {
        wh::annotation(p, keys::INTERACTOR).as_deref() == Some("mallory")
    })
    .await?;
    wh::remove_webhooks(&env).await;
    drop(ctl);
    env.finish().await
}

/// Asks the eviction API, as `api`'s identity, to evict `pod` with these
/// `deleteOptions`.
async fn evict(
    api: &Api<Pod>,
    pod: &str,
    options: serde_json::Value,
) -> kube::Result<kube::core::Status> {
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                      "metadata": {"name": pod}, "deleteOptions": options});
    api.create_subresource("eviction", pod, &PostParams::default(), &body)
        .await
}

/// How every message of the chart's controller policies begins.
const OUR_POLICY: &str = "the sessionguard controller";

/// Waits until `probe` (a dry run, so a probe that passes changes nothing) is
/// refused by one of our policies: the API server loads each new policy on its
/// own, within a second or so, and an attack tried before its policy is in
/// force would prove nothing (and might succeed). Any other refusal (a PDB's
/// 429, a slow API server) is not the policy, so the wait goes on.
async fn until_in_force<T, F, Fut>(what: &str, probe: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    wait::until(
        &format!("the policy on {what} in force"),
        await_::TIMEOUT,
        || {
            let attempt = probe();
            async move { Ok(refusal(attempt.await).contains(OUR_POLICY).then_some(())) }
        },
    )
    .await
}

/// `Err` text of a call, or "" if it succeeded.
fn refusal<T>(r: std::result::Result<T, kube::Error>) -> String {
    match r {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_token_patches_only_our_keys_and_deletes_only_our_pdbs() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("sec-ctl-token").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    // The controller's real identity: chart RBAC and the chart's policies.
    let id = sessionguard_e2e::harness::identity::chart_controller(&env, false).await?;
    let as_ctl = sessionguard_e2e::controlplane::kubeconfig::client(&id.kubeconfig).await?;
    let ctl_pods: Api<Pod> = Api::namespaced(as_ctl.clone(), env.ns());
    let ctl_pdbs: Api<PodDisruptionBudget> = Api::namespaced(as_ctl.clone(), env.ns());
    let pods: Api<Pod> = env.api();
    let pdbs: Api<PodDisruptionBudget> = env.api();
    wh::pod(&env, "target").await?;
    let pp = PatchParams::default();

    // --- patch a pod's image: RBAC allows it (patch pods), the policy refuses ---
    // Awaited, not assumed: the API server loads a new policy within a second or
    // so. The wait probes a canary pod with a new image each time (a patch to the
    // image it already has changes nothing and would pass), so the target pod is
    // only tried once the policy is in force, and must be refused at once.
    wh::pod(&env, "canary").await?;
    let tries = std::sync::atomic::AtomicU32::new(0);
    wait::until(
        "the policy to refuse image patches",
        await_::TIMEOUT,
        || async {
            let n = tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let probe =
                json!({"spec": {"containers": [{"name": "app", "image": format!("probe:{n}")}]}});
            let e = refusal(
                ctl_pods
                    .patch("canary", &pp, &Patch::Strategic(&probe))
                    .await,
            );
            Ok((!e.is_empty()).then_some(()))
        },
    )
    .await?;
    let image = json!({"spec": {"containers": [{"name": "app", "image": "evil:latest"}]}});
    let why = refusal(
        ctl_pods
            .patch("target", &pp, &Patch::Strategic(&image))
            .await,
    );
    check(
        why.contains("may not change a pod's spec"),
        format!("image patch refusal: {why}"),
    )?;
    let p = pods.get("target").await?;
    let image_now = p
        .spec
        .as_ref()
        .map(|s| s.containers[0].image.clone().unwrap_or_default())
        .unwrap_or_default();
    check(image_now == "busybox", format!("image is {image_now}"))?;

    // --- other people's labels, annotations, owners: refused ---
    for (what, patch, want) in [
        (
            "a foreign label",
            json!({"metadata": {"labels": {"app": "hijacked"}}}),
            "only sessionguard.io/ labels",
        ),
        (
            "a foreign annotation",
            json!({"metadata": {"annotations": {"team": "mallory"}}}),
            "only sessionguard.io/ annotations",
        ),
        (
            "a finalizer",
            json!({"metadata": {"finalizers": ["example.com/hold"]}}),
            "owners or finalizers",
        ),
    ] {
        let e = refusal(ctl_pods.patch("target", &pp, &Patch::Merge(&patch)).await);
        check(e.contains(want), format!("{what}: {e:?}"))?;
    }
    // --- our own keys and the autoscaler annotations: allowed ---
    let ours = json!({"metadata": {
        "labels": {"sessionguard.io/interacted": "true"},
        "annotations": {"sessionguard.io/ttl": "10m0s", "karpenter.sh/do-not-disrupt": "true",
                        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}}});
    ctl_pods
        .patch("target", &pp, &Patch::Merge(&ours))
        .await
        .map_err(|e| invalid(format!("our own keys refused: {e}")))?;
    let undo = json!({"metadata": {
        "labels": {"sessionguard.io/interacted": null},
        "annotations": {"sessionguard.io/ttl": null, "karpenter.sh/do-not-disrupt": null,
                        "cluster-autoscaler.kubernetes.io/safe-to-evict": null}}});
    ctl_pods
        .patch("target", &pp, &Patch::Merge(&undo))
        .await
        .map_err(|e| invalid(format!("removing our own keys refused: {e}")))?;

    // --- someone else's PDB: never deleted, none created in our name ---
    let user: PodDisruptionBudget = env
        .create_yaml(
            "metadata: {name: team-budget, labels: {owner: team-a}}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: target}}\n",
        )
        .await?;
    let dry = kube::api::DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    until_in_force("PodDisruptionBudgets", || {
        ctl_pdbs.delete("team-budget", &dry)
    })
    .await?;
    let e = refusal(ctl_pdbs.delete("team-budget", &Default::default()).await);
    check(
        e.contains("only its own PodDisruptionBudgets"),
        format!("delete of a user's PDB: {e:?}"),
    )?;
    check(
        pdbs.get("team-budget").await?.metadata.uid == user.metadata.uid,
        "the user's PDB is still there",
    )?;
    let unlabelled: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "sessionguard-target"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "target"}}}
    }))?;
    let e = refusal(ctl_pdbs.create(&PostParams::default(), &unlabelled).await);
    check(
        e.contains("only its own PodDisruptionBudgets"),
        format!("create of an unlabelled PDB: {e:?}"),
    )?;
    check(
        pdbs.get_opt("sessionguard-target").await?.is_none(),
        "no PDB created",
    )?;
    // Labelled ours, but not the one shape the controller builds: an empty
    // selector (every pod of the namespace: its drains blocked), a selector by a
    // workload label, a budget owned by no pod: each refused, none created.
    let target_uid = pods.get("target").await?.metadata.uid.unwrap_or_default();
    let ours_labelled = json!({keys::MANAGED_BY: keys::MANAGER});
    let owner = json!([{"apiVersion": "v1", "kind": "Pod", "name": "target", "uid": target_uid}]);
    for (what, pdb) in [
        (
            "an empty selector",
            json!({"metadata": {"name": "sessionguard-target", "labels": ours_labelled, "ownerReferences": owner},
                   "spec": {"maxUnavailable": 0, "selector": {}}}),
        ),
        (
            "a workload selector",
            json!({"metadata": {"name": "sessionguard-target", "labels": ours_labelled, "ownerReferences": owner},
                   "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "target"}}}}),
        ),
        (
            "no owning pod",
            json!({"metadata": {"name": "sessionguard-target", "labels": ours_labelled},
                   "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {keys::POD_UID_LABEL: target_uid}}}}),
        ),
        (
            "a name not derived from the pod",
            json!({"metadata": {"name": "block-everything", "labels": ours_labelled, "ownerReferences": owner},
                   "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {keys::POD_UID_LABEL: target_uid}}}}),
        ),
    ] {
        let pdb: PodDisruptionBudget = serde_json::from_value(pdb)?;
        let e = refusal(ctl_pdbs.create(&PostParams::default(), &pdb).await);
        check(
            e.contains("only a pod's own budget"),
            format!("labelled PDB with {what}: {e:?}"),
        )?;
    }
    check(
        pdbs.list(&ListParams::default()).await?.items.len() == 1,
        "no PDB but the user's",
    )?;
    // The pod-UID label our budgets select by carries only the pod's own UID: a
    // token that could stamp one value on many pods could cover them all with one
    // budget.
    let e = refusal(
        ctl_pods
            .patch(
                "target",
                &pp,
                &Patch::Merge(json!({"metadata": {"labels": {keys::POD_UID_LABEL: "shared"}}})),
            )
            .await,
    );
    check(
        e.contains("only to the pod's own UID"),
        format!("a foreign pod-uid label: {e:?}"),
    )?;
    // Ours, in the shape reconcile/pdb.rs builds: created and deleted.
    let own: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "sessionguard-target", "labels": ours_labelled, "ownerReferences": owner},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {keys::POD_UID_LABEL: target_uid}}}
    }))?;
    ctl_pdbs
        .create(&PostParams::default(), &own)
        .await
        .map_err(|e| invalid(format!("our own PDB refused: {e}")))?;
    ctl_pdbs
        .delete("sessionguard-target", &Default::default())
        .await
        .map_err(|e| invalid(format!("deleting our own PDB refused: {e}")))?;

    // --- StatefulSet status: only what a finished rollout marks ---
    let ctl_sets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(as_ctl.clone(), env.ns());
    env.create_yaml::<k8s_openapi::api::apps::v1::StatefulSet>(
        "metadata: {name: db}\nspec:\n  replicas: 0\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: busybox}]}\n",
    )
    .await?;
    let tries = std::sync::atomic::AtomicU32::new(0);
    wait::until(
        "the policy to refuse a StatefulSet status change",
        await_::TIMEOUT,
        || async {
            let n = tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 7;
            let e = refusal(
                ctl_sets
                    .patch_status("db", &pp, &Patch::Merge(json!({"status": {"replicas": n}})))
                    .await,
            );
            Ok((!e.is_empty()).then_some(e))
        },
    )
    .await
    .and_then(|e| {
        check(
            e.contains("only status.currentRevision"),
            format!("status.replicas: {e:?}"),
        )
    })?;
    ctl_sets
        .patch_status(
            "db",
            &pp,
            &Patch::Merge(json!({"status": {"currentRevision": "db-1", "currentReplicas": 0}})),
        )
        .await
        .map_err(|e| invalid(format!("a rollout's status mark refused: {e}")))?;

    // --- evictions: only with a UID precondition, never a grace period of its own ---
    // (chart RBAC grants pods/eviction with controller.rollout, on by default)
    let uid_now = pods.get("target").await?.metadata.uid.unwrap_or_default();
    let dry_run = json!({"dryRun": ["All"], "preconditions": {"uid": uid_now}});
    until_in_force("evictions", || evict(&ctl_pods, "target", dry_run.clone())).await?;
    for (what, options, want) in [
        (
            "a zero grace period (kill at once)",
            json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid_now}}),
            "may not shorten a pod's grace period",
        ),
        (
            "no UID precondition",
            json!({}),
            "only with a UID precondition",
        ),
    ] {
        let e = refusal(evict(&ctl_pods, "target", options).await);
        check(e.contains(want), format!("eviction with {what}: {e:?}"))?;
    }
    let still = pods.get("target").await?;
    check(
        still.metadata.uid.as_deref() == Some(uid_now.as_str())
            && still.metadata.deletion_timestamp.is_none(),
        "the pod was not evicted",
    )?;

    // --- the normal flows under the same identity and policies: protect, release ---
    let _ctl = sg::start_controller(&env, "sec-ctl", &[]).await?;
    let _agent = sg::start_agent(&env, "500ms").await?;
    env.create_yaml::<Pod>(
        "metadata: {name: bastion, labels: {sessionguard.io/protect: \"true\"}}\nspec:\n  containers: [{name: main, image: debian:12}]\n",
    )
    .await?;
    await_::pod_ready(&pods, "bastion").await?;
    let session = env.session("bastion", "main", &["sh"]).await?;
    await_::object(&pods, "bastion", "protected: annotations and record", |p| {
        wh::annotation(p, keys::KARPENTER_DO_NOT_DISRUPT).as_deref() == Some("true")
            && wh::annotation(p, keys::FIRST_INTERACTION).is_some()
    })
    .await?;
    await_::object(&pdbs, "sessionguard-bastion", "created", |_| true).await?;
    session.close()?;
    await_::object(&pods, "bastion", "released", |p| {
        wh::annotation(p, keys::KARPENTER_DO_NOT_DISRUPT).is_none()
    })
    .await?;
    wait::until("the PDB deleted", await_::TIMEOUT, || async {
        Ok(pdbs
            .get_opt("sessionguard-bastion")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    env.finish().await
}

/// Issue 22: with `controller.namespaces`, the controller's token (chart RBAC
/// and the chart's policies rendered for one chosen namespace) writes pods,
/// budgets and evictions there and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_chosen_namespaces_the_controller_token_writes_nowhere_else() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("sec-ctl-scope").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    // A second namespace the operator did not choose, with a pod that no
    // kubelet will run (bound to a node that does not exist).
    let foreign = format!("{}-foreign", env.ns());
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(env.client().clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": foreign}}))?,
        )
        .await?;
    let result = async {
        let chosen = format!("controller.namespaces={{{}}}", env.ns());
        let id = sessionguard_e2e::harness::identity::chart_controller_with(&env, false, &[&chosen])
            .await?;
        let as_ctl = sessionguard_e2e::controlplane::kubeconfig::client(&id.kubeconfig).await?;
        let foreign_pods: Api<Pod> = Api::namespaced(env.client().clone(), &foreign);
        let victim: Pod = serde_json::from_value(json!({
            "metadata": {"name": "victim"},
            "spec": {"nodeName": "no-such-node",
                     "containers": [{"name": "app", "image": "busybox"}]}
        }))?;
        let victim = foreign_pods.create(&PostParams::default(), &victim).await?;
        let victim_uid = victim.metadata.uid.clone().unwrap_or_default();
        wh::pod(&env, "mine").await?;
        let pp = PatchParams::default();
        let hold = json!({"metadata": {"annotations": {keys::CA_SAFE_TO_EVICT: "false"}}});

        // Awaited, not assumed: the API server loads new policies within a
        // second or so; until then the patch would pass (RBAC allows it), so
        // the wait undoes any that did.
        let ctl_foreign: Api<Pod> = Api::namespaced(as_ctl.clone(), &foreign);
        let why = wait::until(
            "the policy to refuse writes outside controller.namespaces",
            await_::TIMEOUT,
            || async {
                match ctl_foreign.patch("victim", &pp, &Patch::Merge(&hold)).await {
                    Err(e) => Ok(Some(refusal::<()>(Err(e)))),
                    Ok(_) => {
                        let undo = json!({"metadata": {"annotations": {keys::CA_SAFE_TO_EVICT: null}}});
                        foreign_pods.patch("victim", &pp, &Patch::Merge(&undo)).await?;
                        Ok(None)
                    }
                }
            },
        )
        .await?;
        check(
            why.contains("acts only in the namespaces the operator chose") && why.contains(&foreign),
            format!("safe-to-evict in a namespace not chosen: {why:?}"),
        )?;
        let now = foreign_pods.get("victim").await?;
        check(
            !kube::ResourceExt::annotations(&now).contains_key(keys::CA_SAFE_TO_EVICT),
            format!("the foreign pod is unchanged: {:?}", now.metadata.annotations),
        )?;
        // A budget of exactly the controller's own shape, for that pod.
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "sessionguard-victim", "labels": {keys::MANAGED_BY: keys::MANAGER},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "victim", "uid": victim_uid}]},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {keys::POD_UID_LABEL: victim_uid}}}
        }))?;
        let ctl_foreign_pdbs: Api<PodDisruptionBudget> = Api::namespaced(as_ctl.clone(), &foreign);
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        until_in_force("PodDisruptionBudgets", || ctl_foreign_pdbs.create(&dry, &pdb)).await?;
        let e = refusal(ctl_foreign_pdbs.create(&PostParams::default(), &pdb).await);
        check(
            e.contains("acts only in the namespaces the operator chose"),
            format!("our-shaped PDB in a namespace not chosen: {e:?}"),
        )?;
        let foreign_pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client().clone(), &foreign);
        check(
            foreign_pdbs.list(&ListParams::default()).await?.items.is_empty(),
            "no PDB in the foreign namespace",
        )?;

        // The control: the same writes in the chosen namespace pass.
        let ctl_pods: Api<Pod> = Api::namespaced(as_ctl.clone(), env.ns());
        ctl_pods
            .patch("mine", &pp, &Patch::Merge(&hold))
            .await
            .map_err(|e| invalid(format!("safe-to-evict in the chosen namespace refused: {e}")))?;
        let mine_uid = env.api::<Pod>().get("mine").await?.metadata.uid.unwrap_or_default();
        let label = json!({"metadata": {"labels": {keys::POD_UID_LABEL: mine_uid}}});
        ctl_pods
            .patch("mine", &pp, &Patch::Merge(&label))
            .await
            .map_err(|e| invalid(format!("the pod-uid label in the chosen namespace refused: {e}")))?;
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "sessionguard-mine", "labels": {keys::MANAGED_BY: keys::MANAGER},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "mine", "uid": mine_uid}]},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {keys::POD_UID_LABEL: mine_uid}}}
        }))?;
        Api::<PodDisruptionBudget>::namespaced(as_ctl.clone(), env.ns())
            .create(&PostParams::default(), &pdb)
            .await
            .map_err(|e| invalid(format!("our PDB in the chosen namespace refused: {e}")))?;
        // Evictions: in the foreign namespace refused by the policy; in the
        // chosen one the policy lets ours through and our PDB refuses it (429).
        let probe = json!({"dryRun": ["All"], "preconditions": {"uid": victim_uid}});
        until_in_force("evictions", || evict(&ctl_foreign, "victim", probe.clone())).await?;
        let e = refusal(
            evict(&ctl_foreign, "victim", json!({"preconditions": {"uid": victim_uid}})).await,
        );
        check(
            e.contains("acts only in the namespaces the operator chose"),
            format!("eviction in a namespace not chosen: {e:?}"),
        )?;
        match evict(&ctl_pods, "mine", json!({"preconditions": {"uid": mine_uid}})).await {
            Err(kube::Error::Api(s)) if s.code == 429 => {}
            other => {
                return Err(invalid(format!(
                    "our eviction in the chosen namespace: want the PDB's 429, got {other:?}"
                )));
            }
        }
        // The controller run with the same --namespaces finds these policies
        // exactly as it expects them (else it would stay NotReady): it leads.
        let ctl = sg::spawn_controller(&env, &id, "scope-ctl", &["--namespaces", env.ns()])?;
        ctl.until_leader().await?;
        drop(ctl);
        Ok::<(), sessionguard_e2e::Error>(())
    }
    .await;
    namespaces.delete(&foreign, &Default::default()).await?;
    result?;
    env.finish().await
}

/// Issue 22's first finding: the controller's token holds `update` on its two
/// webhook configurations (to publish `caBundle`). With it, one could point a
/// webhook at another server or widen its rules to every Secret. The chart's
/// policy lets it change `caBundle` and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_token_changes_nothing_of_its_webhooks_but_the_ca_bundle() -> Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("sec-ctl-hooks").await? else {
        return Ok(());
    };
    let id = sessionguard_e2e::harness::identity::chart_controller(&env, true).await?;
    let as_ctl = sessionguard_e2e::controlplane::kubeconfig::client(&id.kubeconfig).await?;
    let ns = env.client().clone();
    let namespace = Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.clone())
        .get(env.ns())
        .await?;
    // Our configurations as an install has them, owned by the test's namespace
    // (garbage-collected with it). They match only objects labelled with a key
    // nothing carries, so no other test's requests reach them.
    let hook = |kind: &str| {
        let mut w = json!({
            "name": "connect.sessionguard.io",
            "clientConfig": {"service": {"namespace": env.ns(), "name": "sessionguard-webhook",
                                         "path": "/s/token/validate/connect", "port": 443}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CONNECT"],
                       "resources": ["pods/exec"]}],
            "objectSelector": {"matchLabels": {"sessionguard.io/e2e-never": "true"}},
            "failurePolicy": "Ignore", "sideEffects": "None", "admissionReviewVersions": ["v1"],
        });
        if kind == "MutatingWebhookConfiguration" {
            w["reinvocationPolicy"] = "Never".into();
        }
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": id.fullname, "ownerReferences": [{"apiVersion": "v1",
                "kind": "Namespace", "name": env.ns(), "uid": namespace.metadata.uid}]},
            "webhooks": [w],
        })
    };
    let admin_v: Api<ValidatingWebhookConfiguration> = Api::all(ns.clone());
    let admin_m: Api<MutatingWebhookConfiguration> = Api::all(ns.clone());
    admin_v
        .create(
            &PostParams::default(),
            &serde_json::from_value(hook("ValidatingWebhookConfiguration"))?,
        )
        .await?;
    admin_m
        .create(
            &PostParams::default(),
            &serde_json::from_value(hook("MutatingWebhookConfiguration"))?,
        )
        .await?;
    let ctl_v: Api<ValidatingWebhookConfiguration> = Api::all(as_ctl.clone());
    let ctl_m: Api<MutatingWebhookConfiguration> = Api::all(as_ctl.clone());
    // The controller holds `update` (not patch) on them: every attempt is a read,
    // a change, and a replace, as publish.rs writes.
    let redirect = |v: &mut serde_json::Value| {
        v["webhooks"][0]["clientConfig"] = json!({"url": "https://attacker.example.com/steal"});
    };
    // Awaited, not assumed: the API server loads a new policy within a second or
    // so. Until it does, the probe (the redirect itself, on the mutating
    // configuration) would pass, so each try first restores the original.
    let original_m = admin_m.get(&id.fullname).await?;
    wait::until(
        "the policy to refuse a redirected webhook",
        await_::TIMEOUT,
        || async {
            let e = refusal(replace_with(&ctl_m, &id.fullname, &redirect).await);
            if e.is_empty() {
                let mut back = admin_m.get(&id.fullname).await?;
                back.webhooks = original_m.webhooks.clone();
                admin_m
                    .replace(&id.fullname, &PostParams::default(), &back)
                    .await?;
            }
            Ok((!e.is_empty()).then_some(()))
        },
    )
    .await?;
    let before_v = admin_v.get(&id.fullname).await?;
    let before_m = admin_m.get(&id.fullname).await?;
    // --- the attacks: redirect, widen the rules, drop the selector, fail closed,
    // smuggle in a second webhook, relabel ---
    type Change = Box<dyn Fn(&mut serde_json::Value)>;
    let attacks: Vec<(&str, Change)> = vec![
        ("redirect to another server", Box::new(redirect)),
        (
            "widen the rules to every resource",
            Box::new(|v| {
                v["webhooks"][0]["rules"] = json!([{"apiGroups": ["*"], "apiVersions": ["*"],
                    "operations": ["*"], "resources": ["*/*"], "scope": "*"}]);
            }),
        ),
        (
            "drop the object selector",
            Box::new(|v| v["webhooks"][0]["objectSelector"] = json!({})),
        ),
        (
            "fail closed",
            Box::new(|v| v["webhooks"][0]["failurePolicy"] = json!("Fail")),
        ),
        (
            "add a webhook",
            Box::new(|v| {
                let mut extra = v["webhooks"][0].clone();
                extra["name"] = json!("secrets.attacker.example.com");
                v["webhooks"].as_array_mut().expect("webhooks").push(extra);
            }),
        ),
        (
            "a foreign annotation",
            Box::new(|v| v["metadata"]["annotations"] = json!({"team": "mallory"})),
        ),
    ];
    for (what, change) in &attacks {
        let e = refusal(replace_with(&ctl_v, &id.fullname, change.as_ref()).await);
        check(
            e.contains("only clientConfig.caBundle"),
            format!("validating, {what}: {e:?}"),
        )?;
        let e = refusal(replace_with(&ctl_m, &id.fullname, change.as_ref()).await);
        check(
            e.contains("only clientConfig.caBundle"),
            format!("mutating, {what}: {e:?}"),
        )?;
    }
    // Nor may it create another configuration or delete ours (RBAC).
    let mut other: ValidatingWebhookConfiguration =
        serde_json::from_value(hook("ValidatingWebhookConfiguration"))?;
    other.metadata.name = Some(format!("{}-extra", id.fullname));
    check(
        forbidden(&ctl_v.create(&PostParams::default(), &other).await),
        "creating a webhook configuration is forbidden",
    )?;
    check(
        forbidden(&ctl_v.delete(&id.fullname, &Default::default()).await),
        "deleting our webhook configuration is forbidden",
    )?;
    let after_v = admin_v.get(&id.fullname).await?;
    let after_m = admin_m.get(&id.fullname).await?;
    check(
        after_v.webhooks == before_v.webhooks
            && after_m.webhooks == before_m.webhooks
            && after_v.metadata.annotations == before_v.metadata.annotations,
        format!("the configurations are unchanged: {after_v:?} / {after_m:?}"),
    )?;
    // --- what the controller does (publish.rs): a new caBundle and its generation
    // annotation, and a rotated path token ---
    let bundle = k8s_openapi::ByteString(b"-----BEGIN CERTIFICATE-----\nMIIB\n".to_vec());
    let encoded = serde_json::to_value(&bundle)?;
    let publish = |v: &mut serde_json::Value| {
        for w in v["webhooks"].as_array_mut().into_iter().flatten() {
            w["clientConfig"]["caBundle"] = encoded.clone();
            w["clientConfig"]["service"]["path"] = json!("/s/rotated/validate/connect");
        }
        v["metadata"]["annotations"] = json!({"sessionguard.io/ca-bundle-generation": "2"});
    };
    replace_with(&ctl_v, &id.fullname, &publish)
        .await
        .map_err(|e| invalid(format!("caBundle publish refused (validating): {e}")))?;
    replace_with(&ctl_m, &id.fullname, &publish)
        .await
        .map_err(|e| invalid(format!("caBundle publish refused (mutating): {e}")))?;
    let published = admin_v.get(&id.fullname).await?;
    check(
        published
            .webhooks
            .iter()
            .flatten()
            .all(|w| w.client_config.ca_bundle.as_ref() == Some(&bundle)),
        "the caBundle was published",
    )?;
    // Any other change of the path is not the token's.
    let e = refusal(
        replace_with(&ctl_v, &id.fullname, &|v: &mut serde_json::Value| {
            v["webhooks"][0]["clientConfig"]["service"]["path"] =
                json!("/s/rotated/validate/anything");
        })
        .await,
    );
    check(
        e.contains("only clientConfig.caBundle"),
        format!("a changed path: {e:?}"),
    )?;
    admin_v.delete(&id.fullname, &Default::default()).await?;
    admin_m.delete(&id.fullname, &Default::default()).await?;
    env.finish().await
}

/// Reads `name`, applies `change` to it as JSON, and replaces it: how the
/// controller (which holds `update`, not `patch`) writes its webhook
/// configurations.
async fn replace_with<K>(
    api: &Api<K>,
    name: &str,
    change: &dyn Fn(&mut serde_json::Value),
) -> std::result::Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let current = api.get(name).await?;
    let mut v = serde_json::to_value(&current).expect("an object serialises");
    change(&mut v);
    let next: K = serde_json::from_value(v).expect("still the same kind");
    api.replace(name, &PostParams::default(), &next).await
}

/// Whether a call was refused as Forbidden (403), not failed otherwise.
fn forbidden<T>(r: &std::result::Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_token_reads_no_pods() -> Result<()> {
    let Some(env) = TestEnv::start("sec-agent-token").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let pods: Api<Pod> = env.api();
    env.create_yaml::<Pod>(
        "metadata: {name: bastion}\nspec:\n  containers: [{name: main, image: debian:12}]\n",
    )
    .await?;
    let uid = await_::pod_ready(&pods, "bastion")
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    // The real agent with the chart's identity: a token bound to a pod on the node.
    let agent = sg::start_agent(&env, "500ms").await?;
    let as_agent = sessionguard_e2e::controlplane::kubeconfig::client(&agent.kubeconfig).await?;
    let all: Api<Pod> = Api::all(as_agent.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={}", env.node_name()));
    for (what, refused) in [
        (
            "list pods -A",
            forbidden(&all.list(&ListParams::default()).await),
        ),
        (
            "list pods -A on its node",
            forbidden(&all.list(&on_node).await),
        ),
        (
            "list pods in the namespace",
            forbidden(
                &Api::<Pod>::namespaced(as_agent.clone(), env.ns())
                    .list(&ListParams::default())
                    .await,
            ),
        ),
        (
            "get a pod",
            forbidden(
                &Api::<Pod>::namespaced(as_agent.clone(), env.ns())
                    .get("bastion")
                    .await,
            ),
        ),
    ] {
        check(refused, format!("the agent's token: {what} not Forbidden"))?;
    }

    // Still reported: the login, by pod UID and container ID, with no names.
    let session = env.session("bastion", "main", &["sh"]).await?;
    let reports = sg::report_api(env.client());
    let report = await_::object(&reports, env.node_name(), "the login reported", |r| {
        sg::report_sessions(r, &uid) > 0
    })
    .await?;
    let mine: Vec<&serde_json::Value> = report.data["spec"]["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["pod_uid"] == uid.as_str())
        .collect();
    check(
        mine.iter().all(|s| {
            s["container_id"].as_str().is_some_and(|c| c.len() == 64)
                && s.get("pod_name").is_none_or(|v| v.is_null())
                && s.get("namespace").is_none_or(|v| v.is_null())
                // argv stays on the node unless --report-argv (it holds secrets).
                && s.get("argv").is_none_or(|v| v.as_array().is_none_or(Vec::is_empty))
                && s["command"] == "sh"
        }),
        format!("reported by UID and container ID only, without argv: {mine:?}"),
    )?;
    let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
    check(
        !log.to_ascii_lowercase().contains("forbidden"),
        format!("the agent tried a call its identity lacks:\n{log}"),
    )?;

    // An operator's `scan` names the pod only with credentials given explicitly.
    let bin = sessionguard_e2e::harness::workspace_bin("sessionguard-agent", "sessionguard-agent")?;
    let scan = |extra: &[&str]| -> Result<Vec<serde_json::Value>> {
        let out = std::process::Command::new(&bin)
            .args(["scan", "--proc-root", "/proc", "-o", "json"])
            .args(extra)
            .env_remove("KUBECONFIG")
            .output()
            .map_err(|e| invalid(format!("scan: {e}")))?;
        check(
            out.status.success(),
            format!("scan {extra:?}: {}", String::from_utf8_lossy(&out.stderr)),
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["pod_uid"] == uid.as_str())
            .cloned()
            .collect())
    };
    let plain = scan(&[])?;
    check(
        !plain.is_empty()
            && plain
                .iter()
                .all(|s| s.get("pod_name").is_none_or(|v| v.is_null())),
        format!("scan without --kubeconfig: {plain:?}"),
    )?;
    let admin = env.cluster().info.admin_kubeconfig.display().to_string();
    let named = scan(&["--kubeconfig", &admin, "--node-name", env.node_name()])?;
    check(
        !named.is_empty()
            && named
                .iter()
                .all(|s| s["pod_name"] == "bastion" && s["container_name"] == "main"),
        format!("scan --kubeconfig (admin): {named:?}"),
    )?;
    session.close()?;

    // Asked for names without the rights, the agent stops at start, saying why,
    // rather than waiting forever for a pod list and never reporting.
    let log = env.scratch_dir().join("agent-pod-names.log");
    let kc = agent.kubeconfig.display().to_string();
    let mut child = sessionguard_e2e::harness::Child::spawn(
        &bin,
        &[
            "run",
            "--pod-names=true",
            "--node-name",
            env.node_name(),
            "--listen-addr",
            "127.0.0.1:0",
        ],
        &[("KUBECONFIG", &kc)],
        &log,
    )?;
    let child = std::sync::Mutex::new(&mut child);
    wait::until(
        "the agent with --pod-names to exit",
        await_::TIMEOUT,
        || async {
            Ok(child
                .lock()
                .expect("child lock")
                .check_running()
                .is_err()
                .then_some(()))
        },
    )
    .await?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    check(
        text.contains("--pod-names needs list and watch of pods")
            && text.to_ascii_lowercase().contains("forbidden"),
        format!("--pod-names without pod read: {text}"),
    )?;
    env.finish().await
}

/// (resource, resource name, verb) triples, one per verb: the unit both
/// `kubectl auth can-i --list` and the README's table are compared in.
type Grants = std::collections::BTreeSet<(String, String, String)>;

/// Parses `kubectl auth can-i --list` (columns: resources, non-resource URLs,
/// resource names, verbs; lists in brackets).
fn can_i_grants(out: &str) -> Grants {
    let list = |s: &str| -> Vec<String> {
        s.trim_matches(|c| c == '[' || c == ']')
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let mut g = Grants::new();
    for line in out.lines().skip(1) {
        let cols: Vec<&str> = line
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let [resource, urls, names, verbs] = cols[..] else {
            continue;
        };
        if !list(urls).is_empty() || resource.is_empty() {
            continue;
        }
        let names = list(names);
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for n in &names {
            for v in list(verbs) {
                g.insert((resource.to_string(), n.clone(), v));
            }
        }
    }
    g
}

/// The README's least-privilege table for `who`, `<fullname>` replaced.
fn readme_grants(who: &str, fullname: &str) -> Result<Grants> {
    let readme = std::fs::read_to_string(
        sessionguard_e2e::paths::repo_root().join("charts/sessionguard/README.md"),
    )
    .map_err(|e| invalid(e.to_string()))?;
    let start = format!("<!-- least-privilege: {who} -->");
    let table = readme
        .split_once(&start)
        .and_then(|(_, rest)| rest.split_once("<!-- end least-privilege -->"))
        .map(|(t, _)| t)
        .ok_or_else(|| {
            invalid(format!(
                "no least-privilege table for {who} in the chart README"
            ))
        })?;
    let mut g = Grants::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<String> = row
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').replace("<fullname>", fullname))
            .collect();
        let [resource, names, verbs] = &cells[..] else {
            return Err(invalid(format!("bad table row: {row}")));
        };
        for v in verbs.split(',').map(str::trim) {
            g.insert((resource.clone(), names.clone(), v.to_string()));
        }
    }
    Ok(g)
}

async fn can_i(env: &TestEnv, user: &str) -> Result<Grants> {
    let as_ = format!("--as={user}");
    let (ok, out) = env
        .kubectl(&["auth", "can-i", "--list", "-n", env.ns(), &as_])
        .await?;
    check(ok, format!("kubectl auth can-i --list {as_}: {out}"))?;
    Ok(can_i_grants(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_account_has_exactly_the_readme_s_least_privilege() -> Result<()> {
    let Some(env) = TestEnv::start("sec-can-i").await? else {
        return Ok(());
    };
    let id = sessionguard_e2e::harness::identity::chart_controller(&env, true).await?;
    let agent_sa = sessionguard_e2e::harness::identity::chart_agent(&env).await?;
    // What every ServiceAccount gets without any binding of ours.
    let baseline = can_i(&env, &format!("system:serviceaccount:{}:nobody", env.ns())).await?;
    for (who, user) in [
        ("controller", id.user.clone()),
        (
            "agent",
            format!("system:serviceaccount:{}:{agent_sa}", env.ns()),
        ),
    ] {
        let got: Grants = can_i(&env, &user)
            .await?
            .difference(&baseline)
            .cloned()
            .collect();
        let want = readme_grants(who, &id.fullname)?;
        let extra: Vec<_> = got.difference(&want).collect();
        let missing: Vec<_> = want.difference(&got).collect();
        check(
            extra.is_empty() && missing.is_empty(),
            format!(
                "{who}: can-i --list differs from the chart README's table:\n  granted, not in the table: {extra:?}\n  in the table, not granted: {missing:?}"
            ),
        )?;
        eprintln!("{who}: {} grants, as the README lists them", got.len());
    }
    env.finish().await
}
