//! The chart on the real control plane: rendered output applied with server-side dry
//! run (default and all-on values), then really installed with the pinned helm; the
//! DaemonSet pod scheduled and running on the test's simulated node; the real agent
//! and controller working under the chart's ServiceAccounts, RBAC and admission policy.
//!
//! The simulated node cannot pull images: it runs a stand-in process for each
//! container. The chart's objects, scheduling and identities are real; the binaries
//! run as host processes with tokens bound to the chart's pods.

mod chart_support;

use chart_support::{self as chart, Release, check, invalid};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde_json::json;
use sessionguard_e2e::harness::{TestEnv, await_};
use sessionguard_e2e::{Result, paths, wait};

/// The Prometheus Operator's CRDs, generated from its own API module by controller-gen
/// (`make tools`, pinned in e2e/crds): a ServiceMonitor, PodMonitor or PrometheusRule
/// field or value the Operator refuses is refused here too. Server-side applied, so a
/// reused cluster that has them already (or older ones) ends up with these.
async fn operator_crds(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for plural in ["servicemonitors", "podmonitors", "prometheusrules"] {
        let name = format!("{plural}.monitoring.coreos.com");
        let file = paths::generated_crd(&format!("monitoring.coreos.com_{plural}.yaml"))?;
        let text = std::fs::read_to_string(&file)
            .map_err(|e| invalid(format!("{}: {e}", file.display())))?;
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text)?;
        check(
            crd.metadata.name.as_deref() == Some(name.as_str()),
            format!(
                "{} defines {:?}, not {name}",
                file.display(),
                crd.metadata.name
            ),
        )?;
        crds.patch(
            &name,
            &PatchParams::apply("sessionguard-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        await_::object(&crds, &name, "Established", |c| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        })
        .await?;
    }
    Ok(())
}

use sessionguard_e2e::harness::install::report_api;

/// What the stand-ins let through and the Operator's CRDs refuse: a value outside an
/// enum, a missing required field, an undeclared field (server-side apply answers that
/// one with a 500, "field not declared in schema", as `kubectl apply --server-side`
/// shows it). A well-formed ServiceMonitor beside them is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_crds_refuse_what_the_operator_refuses() -> Result<()> {
    let Some(env) = TestEnv::start("chart-operator-crds").await? else {
        return Ok(());
    };
    operator_crds(env.client()).await?;
    let api = |kind: &str, plural: &str| -> Api<DynamicObject> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind),
            plural,
        );
        Api::namespaced_with(env.client().clone(), env.ns(), &ar)
    };
    let monitor = |name: &str, endpoint: serde_json::Value| {
        json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "endpoints": [endpoint]}
        })
    };
    let strict = PatchParams::apply("sessionguard-e2e").validation_strict();
    let cases = [
        (
            api("ServiceMonitor", "servicemonitors"),
            monitor("bad-scheme", json!({"port": "metrics", "scheme": "ftp"})),
            "scheme",
        ),
        (
            api("ServiceMonitor", "servicemonitors"),
            monitor(
                "unknown-field",
                json!({"port": "metrics", "intervall": "30s"}),
            ),
            "intervall",
        ),
        (
            api("PrometheusRule", "prometheusrules"),
            json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                "metadata": {"name": "no-expr"},
                "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "for": "5m"}]}]}
            }),
            "expr",
        ),
    ];
    for (api, obj, field) in cases {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match api.patch(&name, &strict, &Patch::Apply(&obj)).await {
            Err(kube::Error::Api(s)) if s.code >= 400 && s.message.contains(field) => {
                eprintln!("{name}: refused with {}: {}", s.code, s.message);
            }
            other => {
                return Err(invalid(format!(
                    "{name} (bad {field}) was not refused naming it: {other:?}"
                )));
            }
        }
    }
    let good = monitor(
        "good",
        json!({"port": "metrics", "scheme": "https", "interval": "30s"}),
    );
    api("ServiceMonitor", "servicemonitors")
        .patch("good", &strict, &Patch::Apply(&good))
        .await?;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_dry_run_of_default_and_all_on() -> Result<()> {
    let Some(env) = TestEnv::start("chart-dry-run").await? else {
        return Ok(());
    };
    operator_crds(env.client()).await?;
    let all_on = chart::all_on_values().display().to_string();
    for (release, extra) in [
        ("sgdry", vec!["--include-crds"]),
        ("sgdryall", vec!["--include-crds", "-f", all_on.as_str()]),
        // PodMonitors instead of the all-on ServiceMonitors (one kind at a time).
        (
            "sgdrypm",
            vec!["--include-crds", "--set", "podMonitor.enabled=true"],
        ),
    ] {
        let rendered = chart::template(release, env.ns(), &extra)?;
        let file = env.scratch_dir().join(format!("{release}.yaml"));
        std::fs::write(&file, &rendered).map_err(|e| invalid(e.to_string()))?;
        let f = file.display().to_string();
        let (ok, out) = env
            .kubectl(&["apply", "--server-side", "--dry-run=server", "-f", &f])
            .await?;
        check(
            ok,
            format!("server-side dry run of {release} failed:\n{out}"),
        )?;
        let objects = chart::docs(&rendered)?.len();
        let applied = out
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        check(
            applied == objects,
            format!("{applied} of {objects} objects accepted:\n{out}"),
        )?;
        eprintln!("{release}: {objects} objects accepted by server-side dry run");
    }
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_all_on_values() -> Result<()> {
    let Some(env) = TestEnv::start("chart-all-on").await? else {
        return Ok(());
    };
    operator_crds(env.client()).await?;
    let all_on = chart::all_on_values().display().to_string();
    let release = Release::install(&env, "sgall", &["-f", &all_on])?;
    let agents = chart::await_component(&env, "sgall", "agent", 1).await?;
    check(agents.len() == 1, "one agent pod on the node")?;
    chart::await_component(&env, "sgall", "controller", 2).await?;
    let (ok, out) = env
        .kubectl(&[
            "get",
            "validatingwebhookconfiguration/sgall-sessionguard",
            "mutatingwebhookconfiguration/sgall-sessionguard",
            "-n",
            env.ns(),
            "-o",
            "name",
        ])
        .await?;
    check(ok, format!("webhook configurations: {out}"))?;
    for kind in [
        "networkpolicy",
        "servicemonitor",
        "prometheusrule",
        "configmap",
    ] {
        let (ok, out) = env
            .kubectl(&[
                "get",
                kind,
                "-n",
                env.ns(),
                "-l",
                "app.kubernetes.io/instance=sgall",
                "-o",
                "name",
            ])
            .await?;
        check(ok && !out.trim().is_empty(), format!("{kind}: {out}"))?;
    }
    release.uninstall()?;
    let (_, out) = env
        .kubectl(&["get", "validatingwebhookconfiguration/sgall-sessionguard"])
        .await?;
    check(
        out.contains("NotFound"),
        format!("uninstall left the webhook: {out}"),
    )?;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_protects_a_login_with_the_charts_identities() -> Result<()> {
    let Some(env) = TestEnv::start("chart-install").await? else {
        return Ok(());
    };
    // Default values (the webhook on), its configurations scoped to a namespace label
    // nothing carries: they are cluster-wide objects, and the chart's Service has no
    // real server behind it here, so other tests' evictions must not be sent to it.
    let release = Release::install(
        &env,
        "sgi",
        &[
            "--set",
            "webhook.namespaceSelector.matchLabels.sessionguard\\.io/e2e-webhook-slot=never-set",
        ],
    )?;
    let full = release.fullname();

    // --- the objects, scheduled: one agent on this node, two controllers, its PDB ---
    let ds: Api<DaemonSet> = env.api();
    await_::object(&ds, &format!("{full}-agent"), "created", |_| true).await?;
    let agents = chart::await_component(&env, "sgi", "agent", 1).await?;
    let agent_pod = agents[0].clone();
    let controllers = chart::await_component(&env, "sgi", "controller", 2).await?;
    let deploy: Api<Deployment> = env.api();
    await_::object(
        &deploy,
        &format!("{full}-controller"),
        "2 ready replicas",
        |d| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(2),
    )
    .await?;
    let pdbs: Api<PodDisruptionBudget> = env.api();
    pdbs.get(&format!("{full}-controller")).await?;
    eprintln!(
        "agent pod {} and controllers {:?} running on {}",
        agent_pod.metadata.name.as_deref().unwrap_or(""),
        controllers
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect::<Vec<_>>(),
        env.node_name()
    );

    // --- the real binaries with the chart's identities ---
    let agent = chart::start_agent(&env, &agent_pod, "500ms").await?;
    let reports = report_api(env.client());
    await_::object(&reports, env.node_name(), "written by the agent", |_| true).await?;
    let ctl = chart::start_controller(&env, "sgi", &controllers[0]).await?;

    // A protected pod, logged in: the controller's PDB appears (pods patch, PDB create,
    // events, Lease, every watch: all through the chart's RBAC).
    let pods: Api<Pod> = env.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bastion", "labels": {"sessionguard.io/protect": "true"}},
        "spec": {"containers": [{"name": "main", "image": "debian:12", "command": ["sleep", "infinity"]}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    await_::pod_ready(&pods, "bastion").await?;
    let session = env.session("bastion", "main", &["sh"]).await?;
    await_::object(
        &pdbs,
        "sessionguard-bastion",
        "created for the login",
        |_| true,
    )
    .await?;
    session.close()?;
    wait::until(
        "the PDB to be released after logout",
        await_::TIMEOUT,
        || async {
            Ok(pdbs
                .get_opt("sessionguard-bastion")
                .await?
                .is_none()
                .then_some(()))
        },
    )
    .await?;
    let log = std::fs::read_to_string(&ctl.log).unwrap_or_default();
    check(
        !log.contains("forbidden") && !log.contains("Forbidden"),
        format!(
            "the controller was refused something: see {}",
            ctl.log.display()
        ),
    )?;

    // --- node binding: the agent's token cannot speak for another node ---
    let agent_client = sessionguard_e2e::controlplane::kubeconfig::client(
        &chart::pod_kubeconfig(&env, &agent_pod).await?,
    )
    .await?;
    let forged = json!({
        "apiVersion": "sessionguard.io/v1alpha1", "kind": "SessionReport",
        "metadata": {"name": "some-other-node"},
        "spec": {"node": "some-other-node", "generated_at": "2026-01-01T00:00:00Z", "sessions": []}
    });
    match report_api(&agent_client)
        .patch(
            "some-other-node",
            &PatchParams::apply("forger").force(),
            &Patch::Apply(&forged),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            eprintln!("forged report refused: {}", s.message);
        }
        other => {
            return Err(invalid(format!(
                "a cross-node report was not refused: {other:?}"
            )));
        }
    }
    drop(ctl);
    drop(agent);

    // --- uninstall removes the cluster-scoped objects too ---
    release.uninstall()?;
    let roles: Api<ClusterRole> = Api::all(env.client().clone());
    check(
        roles.get_opt(&format!("{full}-agent")).await?.is_none()
            && roles
                .get_opt(&format!("{full}-controller"))
                .await?
                .is_none(),
        "ClusterRoles removed by helm uninstall",
    )?;
    env.finish().await
}
