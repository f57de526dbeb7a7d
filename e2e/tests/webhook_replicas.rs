//! Two controller replicas behind the webhooks: one Secret (first writer
//! wins), both serve the same certificate, a request that reaches the
//! standby is still recorded (by the standby), and neither renewing the
//! serving certificate (same CA, caBundle unchanged) nor rotating the CA
//! (two-phase) ever makes the API server fail open: at every moment, each
//! replica serves a certificate the published caBundle trusts.

mod webhook_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use sessionguard_controller::face::admission::{certs, tls};
use sessionguard_core::keys;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, wait};
use webhook_support::{self as wh, ADMIN, check, sg};

const POD: &str = "shared";

fn data(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// The Secret as the test follows it: serving certificate, its CA, the bundle.
#[derive(Clone, Debug, PartialEq)]
struct Certs {
    leaf: String,
    ca: String,
    bundle: String,
}

fn certs_of(s: &Secret) -> Certs {
    Certs {
        leaf: data(s, "tls.crt"),
        ca: data(s, "ca.crt"),
        bundle: data(s, "ca-bundle.crt"),
    }
}

fn bundle_text(b: Option<&k8s_openapi::ByteString>) -> String {
    b.map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// The caBundle of every webhook in both configurations, once they agree.
/// The publisher updates the two configurations one after the other, so a
/// read between the two sees them differ for a moment; longer is a failure.
async fn published(env: &TestEnv) -> Result<String> {
    let name = wh::config_name(env);
    let bundles = || async {
        let v = Api::<ValidatingWebhookConfiguration>::all(env.client().clone())
            .get(&name)
            .await?;
        let m = Api::<MutatingWebhookConfiguration>::all(env.client().clone())
            .get(&name)
            .await?;
        let mut all: Vec<String> = v
            .webhooks
            .iter()
            .flatten()
            .map(|w| bundle_text(w.client_config.ca_bundle.as_ref()))
            .collect();
        all.extend(
            m.webhooks
                .iter()
                .flatten()
                .map(|w| bundle_text(w.client_config.ca_bundle.as_ref())),
        );
        Ok::<_, sessionguard_e2e::Error>(all)
    };
    wait::until(
        "every webhook to have the same caBundle",
        Duration::from_secs(5),
        || async {
            let mut all = bundles().await?;
            Ok(all
                .windows(2)
                .all(|w| w[0] == w[1])
                .then(|| all.pop().unwrap_or_default()))
        },
    )
    .await
}

/// What a replica serves, verified as the API server would: against the
/// published caBundle.
async fn served(addr: SocketAddr, bundle: &str) -> Result<Vec<u8>> {
    tls::probe(addr, "127.0.0.1", bundle)
        .await
        .map_err(|e| wh::invalid(format!("replica {addr} fails open: {e}")))
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
    // Short lives, so renewals and a CA rotation happen while the test runs.
    let lives = [
        "--webhook-cert-validity",
        "30s",
        "--webhook-cert-renew-before",
        "20s",
        "--webhook-ca-validity",
        "60s",
    ];
    let a = wh::start(&env, &kubeconfig, "wh-a", port_a, true, &lives).await?;
    let b = wh::start(&env, &kubeconfig, "wh-b", port_b, false, &lives).await?;
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

    // --- renewals and CA rotations by whichever replica is first; never failing open ---
    // Serving certificates live 30s and are renewed with 20s left (about
    // every 10s, same CA); the CA lives 60s and a new one is added with 30s
    // left, then signs once both configurations trust it.
    let secrets: Api<Secret> = Api::namespaced(env.client().clone(), env.ns());
    let addrs: Vec<SocketAddr> = [port_a, port_b]
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    let mut last = certs_of(&secrets.get(&wh::secret_name(&env)).await?);
    let (mut same_ca_renewals, mut ca_moves, mut max_cas, mut checks) = (0, 0, 0, 0);
    let mut served_leaves = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(75);
    while (same_ca_renewals < 2 || ca_moves < 1) && Instant::now() < deadline {
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
        // Both replicas, checked against what the API server trusts now.
        let bundle = published(&env).await?;
        max_cas = max_cas.max(certs::ders(&bundle).len());
        for addr in &addrs {
            served_leaves.insert(served(*addr, &bundle).await?);
        }
        checks += 1;

        let now = certs_of(&secrets.get(&wh::secret_name(&env)).await?);
        if now.leaf != last.leaf {
            // Same CA and the bundle untouched: a pure serving-certificate
            // renewal. (A CA added in the same check may change the bundle.)
            if now.ca == last.ca && now.bundle == last.bundle {
                same_ca_renewals += 1;
            } else if now.ca != last.ca {
                // A new CA signs only after the configurations trust it.
                check(
                    certs::ders(&published(&env).await?).contains(&certs::ders(&now.ca)[0]),
                    "the new CA was published before it signed",
                )?;
                ca_moves += 1;
            }
        }
        last = now;
    }
    check(
        same_ca_renewals >= 2 && ca_moves >= 1 && max_cas >= 2,
        format!(
            "within 75s: {same_ca_renewals} same-CA renewals, {ca_moves} moves to a new CA, \
             at most {max_cas} CAs in the bundle"
        ),
    )?;
    let logs_all = format!("{}{}", logs(&a), logs(&b));
    check(
        logs_all.matches("generated the webhook CA").count() == 1
            && logs_all.contains("renewed the webhook serving certificate with the same CA")
            && logs_all.contains("added CA")
            && logs_all.contains("moved the webhook serving certificate to CA"),
        "the replicas' logs tell the same story",
    )?;
    eprintln!(
        "{checks} guard calls and {} TLS probes against the published caBundle across \
         {same_ca_renewals} same-CA renewals and {ca_moves} CA moves ({} serving certificates \
         seen, up to {max_cas} CAs trusted), none failed open",
        checks * addrs.len(),
        served_leaves.len()
    );

    drop((a, b));
    wh::remove_webhooks(&env).await;
    env.finish().await
}
