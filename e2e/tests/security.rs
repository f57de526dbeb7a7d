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

mod webhook_support;

use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use sessionguard_controller::face::admission::token;
use sessionguard_core::keys;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, wait};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// POSTs `body` over HTTPS to 127.0.0.1:`port` (trusting `bundle_pem`, as an
/// attacker who read the public CA could) and returns the status code.
async fn https_post(port: u16, bundle_pem: &str, path: &str, body: &[u8]) -> Result<u16> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()).flatten() {
        roots.add(c).map_err(|e| invalid(format!("CA: {e}")))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| invalid(format!("connect: {e}")))?;
    let name =
        rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| invalid(e.to_string()))?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| invalid(format!("TLS: {e}")))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| invalid(e.to_string()))?;
    tls.write_all(body)
        .await
        .map_err(|e| invalid(e.to_string()))?;
    let mut out = Vec::new();
    // A server closing without close_notify is fine: the status line is in.
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid(format!("no HTTP status in {text:?}")))
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
    let vwc = Api::<ValidatingWebhookConfiguration>::all(env.client().clone())
        .get(&wh::config_name(&env))
        .await?;
    let connect = vwc
        .webhooks
        .iter()
        .flatten()
        .find(|w| w.name == "interactions.sessionguard.io")
        .ok_or_else(|| invalid("no interactions webhook"))?;
    let url = connect.client_config.url.clone().unwrap_or_default();
    let bundle = connect
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    let path = url
        .split_once(&format!("127.0.0.1:{port}"))
        .map(|(_, p)| p.to_string())
        .unwrap_or_default();
    let tok = path
        .strip_prefix(token::PREFIX)
        .and_then(|r| r.split_once('/'))
        .map(|(t, _)| t.to_string())
        .unwrap_or_default();
    check(
        tok.len() == 64
            && tok.bytes().all(|b| b.is_ascii_hexdigit())
            && path.ends_with("/validate/connect"),
        format!("the published path carries a token: {url}"),
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
    // Ours (labelled): created and deleted.
    let mut own = unlabelled.clone();
    own.metadata.labels = Some(
        [(keys::MANAGED_BY.to_string(), keys::MANAGER.to_string())]
            .into_iter()
            .collect(),
    );
    ctl_pdbs
        .create(&PostParams::default(), &own)
        .await
        .map_err(|e| invalid(format!("our own PDB refused: {e}")))?;
    ctl_pdbs
        .delete("sessionguard-target", &Default::default())
        .await
        .map_err(|e| invalid(format!("deleting our own PDB refused: {e}")))?;

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
