//! Two controller replicas behind the webhooks: one Secret (first writer
//! wins), both serve the same certificate, a request that reaches the
//! standby is still recorded (by the standby), and certificate renewal never
//! makes the API server fail open.

mod webhook_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use sessionguard_core::keys;
use sessionguard_e2e::Result;
use sessionguard_e2e::harness::{TestEnv, await_};
use webhook_support::{self as wh, ADMIN, check, sg};

const POD: &str = "shared";

fn not_after(s: &Secret) -> String {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("sessionguard.io/not-after"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_certs_and_both_record() -> Result<()> {
    let _serial = sg::serial().await;
    let Some(env) = TestEnv::start("wh-replicas").await? else {
        return Ok(());
    };
    sg::install(env.client()).await?;
    let kubeconfig = wh::controller_kubeconfig(&env).await?;
    let (port_a, port_b) = (wh::free_port()?, wh::free_port()?);
    // The API server talks to the standby first.
    wh::install_webhooks(&env, port_b).await?;
    let pods: Api<Pod> = env.api();
    wh::pod(&env, POD).await?;
    // Certificates live 30s and are renewed when 20s are left: a renewal
    // about every 10s while the test runs.
    let certs = [
        "--webhook-cert-validity",
        "30s",
        "--webhook-cert-renew-before",
        "20s",
    ];
    let a = wh::start(&env, &kubeconfig, "wh-a", port_a, true, &certs).await?;
    let b = wh::start(&env, &kubeconfig, "wh-b", port_b, false, &certs).await?;
    check(
        b.metric("sessionguard_leader", &[]).await? == Some(0.0),
        "wh-b is the standby",
    )?;
    let logs = |c: &sg::Controller| std::fs::read_to_string(&c.log).unwrap_or_default();
    check(
        logs(&b).matches("generated the webhook CA").count() == 0,
        "the second replica read the first one's Secret instead of generating",
    )?;
    wh::await_guard(&env, POD).await?;

    // --- a request reaching the standby is recorded, by the standby ---
    let (_, out) = wh::kubectl(&env, &["exec", POD, "-c", "app", "--", "id"]).await?;
    check(!out.contains("denied"), format!("exec: {out}"))?;
    let (_, _, instance) = wh::await_event(&env, POD, "Exec", ": id").await?;
    check(
        instance == "wh-b",
        format!("recorded by the standby, got {instance}"),
    )?;
    let p = await_::object(&pods, POD, "interaction recorded", |p| {
        wh::annotation(p, keys::INTERACTOR).as_deref() == Some(ADMIN)
    })
    .await?;
    let first = wh::annotation(&p, keys::FIRST_INTERACTION);

    // --- and one reaching the leader, by the leader, folding into the same record ---
    wh::retarget(&env, port_a).await?;
    sessionguard_e2e::wait::until("the leader to receive exec", await_::TIMEOUT, || async {
        let _ = wh::kubectl(&env, &["exec", POD, "-c", "app", "--", "hostname"]).await?;
        Ok(wh::events(&env, POD)
            .await?
            .into_iter()
            .find(|(r, n, i)| r == "Exec" && n.contains(": hostname") && i == "wh-a"))
    })
    .await?;
    let p = pods.get(POD).await?;
    check(
        wh::annotation(&p, keys::FIRST_INTERACTION) == first,
        "first interaction kept",
    )?;

    // --- renewals by whichever replica is first; the API server never fails open ---
    let secrets: Api<Secret> = Api::namespaced(env.client().clone(), env.ns());
    let mut seen = vec![not_after(&secrets.get("sessionguard-webhook-tls").await?)];
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut checks = 0;
    while seen.len() < 3 && Instant::now() < deadline {
        // Every guard call must reach a replica over TLS: with failurePolicy
        // Ignore, a TLS failure would admit this dry-run edit.
        let (ok, out) = wh::kubectl(
            &env,
            &[
                "annotate",
                "pod",
                POD,
                "--overwrite",
                "--dry-run=server",
                "sessionguard.io/ttl=99h",
            ],
        )
        .await?;
        check(
            !ok && out.contains("managed by sessionguard"),
            format!("guard call failed open during renewal: {out}"),
        )?;
        checks += 1;
        let now = not_after(&secrets.get("sessionguard-webhook-tls").await?);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
    }
    check(
        seen.len() >= 3,
        format!("two renewals within 40s: {seen:?}"),
    )?;
    let vwc: Api<ValidatingWebhookConfiguration> = Api::all(env.client().clone());
    let bundle = vwc
        .get(&wh::config_name(&env))
        .await?
        .webhooks
        .unwrap_or_default()[0]
        .client_config
        .ca_bundle
        .clone()
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    check(
        bundle.matches("BEGIN CERTIFICATE").count() == 2,
        "caBundle trusts the new and the previous CA",
    )?;
    let generated: usize = [&a, &b]
        .iter()
        .map(|c| {
            let l = logs(c);
            l.matches("generated the webhook CA").count()
                + l.matches("renewed the webhook CA").count()
        })
        .sum();
    check(
        generated >= seen.len(),
        format!(
            "every certificate seen was made by a replica ({generated} made, {} seen)",
            seen.len()
        ),
    )?;
    eprintln!(
        "{checks} guard calls over TLS across {} certificates, none failed open",
        seen.len()
    );

    drop((a, b));
    wh::remove_webhooks(&env).await;
    env.finish().await
}
