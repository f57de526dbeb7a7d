//! The Helm chart without a cluster: `helm lint --strict` and `helm template` with
//! default and all-on values, the values schema refusing bad input, and the rendered
//! objects holding the security properties the README promises.

mod chart_support;

use chart_support::{self as chart, check, docs, find, invalid};
use serde_json::Value;
use sessionguard_core::scope::Namespaces;
use sessionguard_e2e::Result;

fn all_on() -> String {
    chart::all_on_values().display().to_string()
}

#[test]
fn lint_strict_default_all_on_and_cert_manager() -> Result<()> {
    let dir = chart::chart_dir().display().to_string();
    let all_on = all_on();
    let version = chart::kube_version();
    for extra in [
        vec![],
        vec!["-f", all_on.as_str()],
        vec![
            "-f",
            all_on.as_str(),
            "--set",
            "webhook.certManager.enabled=true",
        ],
    ] {
        let mut args = vec!["lint", "--strict", "--kube-version", &version, &dir];
        args.extend_from_slice(&extra);
        let out = chart::helm(&args)?;
        check(
            out.contains("0 chart(s) failed") && !out.contains("[WARNING]"),
            format!("helm lint {extra:?}:\n{out}"),
        )?;
    }
    Ok(())
}

fn kinds(d: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = d
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or("").to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn default_rendering_is_least_privilege() -> Result<()> {
    let d = docs(&chart::template("sg", "sessionguard-system", &[])?)?;
    let k = kinds(&d);
    for absent in ["ServiceMonitor", "PodMonitor", "PrometheusRule", "Secret"] {
        check(
            !k.iter().any(|x| x == absent),
            format!("{absent} rendered by default: {k:?}"),
        )?;
    }
    // NetworkPolicies on by default, admitting only the ports that serve (the agent's
    // metrics port carries /sessions), the metrics ports only from the release
    // namespace and Prometheus pods, the webhook port from anywhere (the API server).
    for (np, ports) in [
        ("sg-sessionguard-agent", vec!["metrics"]),
        ("sg-sessionguard-controller", vec!["metrics", "webhook"]),
    ] {
        let p = find(&d, "NetworkPolicy", Some(np))?;
        let rules = p["spec"]["ingress"].as_array().cloned().unwrap_or_default();
        let open: Vec<String> = rules
            .iter()
            .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|port| port["port"].as_str().map(str::to_string))
            .collect();
        let scrapers = serde_json::json!([
            {"podSelector": {}},
            {"namespaceSelector": {},
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
        ]);
        check(
            open == ports
                && rules.iter().all(|r| match r["ports"][0]["port"].as_str() {
                    Some("metrics") => r["from"] == scrapers,
                    _ => r.get("from").is_none(),
                }),
            format!("{np} ingress: {rules:?}"),
        )?;
    }
    // The exec/attach/debug webhook is on by default, and can never block exec.
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let w = find(&d, kind, Some("sg-sessionguard"))?;
        for hook in w["webhooks"].as_array().into_iter().flatten() {
            check(
                hook["failurePolicy"] == "Ignore",
                format!(
                    "{kind} {}: failurePolicy {}",
                    hook["name"], hook["failurePolicy"]
                ),
            )?;
        }
    }

    // --- the agent: host /proc read-only, nothing else from the host ---
    let ds = find(&d, "DaemonSet", Some("sg-sessionguard-agent"))?;
    let pod = &ds["spec"]["template"]["spec"];
    for host in ["hostPID", "hostNetwork", "hostIPC"] {
        check(pod[host] == false, format!("agent {host} must be false"))?;
    }
    let sc = &pod["securityContext"];
    check(
        sc["runAsNonRoot"] == true && sc["runAsUser"].as_u64().is_some_and(|u| u > 0),
        format!("agent pod securityContext: {sc}"),
    )?;
    check(
        sc["seccompProfile"]["type"] == "RuntimeDefault",
        "seccomp RuntimeDefault",
    )?;
    let c = &pod["containers"][0];
    let csc = &c["securityContext"];
    check(
        csc["allowPrivilegeEscalation"] == false
            && csc["readOnlyRootFilesystem"] == true
            && csc["privileged"] == false
            && csc["capabilities"]["drop"] == serde_json::json!(["ALL"])
            && csc["capabilities"].get("add").is_none(),
        format!("agent container securityContext: {csc}"),
    )?;
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    check(volumes.len() == 1, format!("agent volumes: {volumes:?}"))?;
    check(
        volumes[0]["hostPath"]["path"] == "/proc",
        "the only host volume is /proc",
    )?;
    let mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
    check(
        mounts.len() == 1
            && mounts[0]["mountPath"] == "/host/proc"
            && mounts[0]["readOnly"] == true,
        format!("agent mounts: {mounts:?}"),
    )?;
    let env = c["env"].as_array().cloned().unwrap_or_default();
    let env_of = |n: &str| env.iter().find(|e| e["name"] == n).cloned();
    check(
        env_of("NODE_NAME")
            .is_some_and(|e| e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "NODE_NAME from the downward API",
    )?;
    check(
        env_of("SESSIONGUARD_PROC_ROOT").is_some_and(|e| e["value"] == "/host/proc"),
        "proc root /host/proc",
    )?;
    check(
        pod["tolerations"] == serde_json::json!([{"operator": "Exists"}]),
        "agent tolerates every taint",
    )?;
    check(
        c["resources"]["limits"]["memory"].is_string()
            && c["resources"]["requests"]["cpu"].is_string(),
        "agent resources set",
    )?;
    let ann = &ds["spec"]["template"]["metadata"]["annotations"];
    check(
        ann["prometheus.io/scrape"] == "true" && ann["prometheus.io/port"] == "9102",
        format!("agent scrape annotations: {ann}"),
    )?;

    // --- the controller: 2 replicas, its own PDB, POD_NAME/POD_NAMESPACE ---
    let dep = find(&d, "Deployment", Some("sg-sessionguard-controller"))?;
    check(dep["spec"]["replicas"] == 2, "2 controller replicas")?;
    let cpod = &dep["spec"]["template"]["spec"];
    check(
        cpod["hostPID"].is_null() && cpod["volumes"].is_null(),
        "controller needs nothing from the host",
    )?;
    let cenv = cpod["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (n, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        check(
            cenv.iter()
                .any(|e| e["name"] == n && e["valueFrom"]["fieldRef"]["fieldPath"] == path),
            format!("controller env {n}"),
        )?;
    }
    check(
        cpod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] == true
            && cpod["securityContext"]["runAsNonRoot"] == true,
        "controller non-root, read-only root",
    )?;
    let pdb = find(
        &d,
        "PodDisruptionBudget",
        Some("sg-sessionguard-controller"),
    )?;
    check(
        pdb["spec"]["minAvailable"] == 1,
        "controller PDB minAvailable 1",
    )?;

    // --- RBAC: no wildcards, only the webhook's own Secret, exactly the agent's one rule ---
    for o in d
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        for r in o["rules"].as_array().into_iter().flatten() {
            let text = r.to_string();
            check(
                !text.contains("\"*\""),
                format!("wildcard in {}: {text}", o["metadata"]["name"]),
            )?;
            // Secrets: the controller's Role only, create (the first replica makes it;
            // create cannot name an object) or get/update of the webhook Secret by name.
            check(
                !text.contains("secrets")
                    || (o["kind"] == "Role"
                        && o["metadata"]["name"] == "sg-sessionguard-controller"
                        && (r["verbs"] == serde_json::json!(["create"])
                            || r["resourceNames"]
                                == serde_json::json!(["sg-sessionguard-webhook-tls"]))),
                format!("secrets in {}: {text}", o["metadata"]["name"]),
            )?;
            let verbs: Vec<&str> = r["verbs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            let resources = &r["resources"];
            // Updates only of named objects (the Lease); gets only where the
            // controller needs a fresh copy (see controller-rbac.yaml).
            check(
                !verbs.contains(&"update") || r["resourceNames"].is_array(),
                format!(
                    "update of unnamed objects in {}: {text}",
                    o["metadata"]["name"]
                ),
            )?;
            check(
                !verbs.contains(&"get")
                    || r["resourceNames"].is_array()
                    || *resources == serde_json::json!(["pods"])
                    || *resources == serde_json::json!(["poddisruptionbudgets"]),
                format!(
                    "get outside the Lease, pods and PDBs in {}: {text}",
                    o["metadata"]["name"]
                ),
            )?;
        }
    }
    // The agent reads no pods: it writes its report, nothing else.
    let agent_role = find(&d, "ClusterRole", Some("sg-sessionguard-agent"))?;
    check(
        agent_role["rules"]
            == serde_json::json!([
                {"apiGroups": ["sessionguard.io"], "resources": ["sessionreports"], "verbs": ["create", "patch"]}
            ]),
        format!("agent ClusterRole: {}", agent_role["rules"]),
    )?;
    // Nodes: only what the cordon check reads (no get, no writes).
    let ctl_role = find(&d, "ClusterRole", Some("sg-sessionguard-controller"))?;
    let node_rules: Vec<&Value> = ctl_role["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["resources"].to_string().contains("nodes"))
        .collect();
    check(
        node_rules.len() == 1
            && node_rules[0]["resources"] == serde_json::json!(["nodes"])
            && node_rules[0]["verbs"] == serde_json::json!(["list", "watch"]),
        format!("controller nodes rule is list, watch only: {node_rules:?}"),
    )?;
    let lease_rule = find(&d, "Role", Some("sg-sessionguard-controller"))?["rules"][1].clone();
    check(
        lease_rule["resourceNames"] == serde_json::json!(["sg-sessionguard-controller"]),
        format!("Lease get/update limited to its name: {lease_rule}"),
    )?;

    // --- the node-binding policy, from files/, renamed after the release ---
    let vap = find(
        &d,
        "ValidatingAdmissionPolicy",
        Some("sg-sessionguard-sessionreports"),
    )?;
    let vapb = find(
        &d,
        "ValidatingAdmissionPolicyBinding",
        Some("sg-sessionguard-sessionreports"),
    )?;
    check(
        vapb["spec"]["policyName"] == "sg-sessionguard-sessionreports"
            && vapb["spec"]["validationActions"] == serde_json::json!(["Deny"]),
        "policy and binding renamed together",
    )?;
    check(
        vap["spec"]["validations"].as_array().map(Vec::len) == Some(3),
        "policy validations come from files/sessionreport-policy.yaml unchanged",
    )?;
    // --- the controller's policies, bound to its ServiceAccount by username ---
    for name in [
        "sg-sessionguard-controller-pods",
        "sg-sessionguard-controller-pdbs",
        "sg-sessionguard-controller-webhooks",
        "sg-sessionguard-controller-statefulsets",
        "sg-sessionguard-controller-evictions",
    ] {
        let p = find(&d, "ValidatingAdmissionPolicy", Some(name))?;
        let b = find(&d, "ValidatingAdmissionPolicyBinding", Some(name))?;
        check(
            p["spec"]["matchConditions"][0]["expression"]
                == "request.userInfo.username == 'system:serviceaccount:sessionguard-system:sg-sessionguard-controller'"
                && p["spec"]["failurePolicy"] == "Fail"
                && b["spec"]["policyName"] == name
                && b["spec"]["validationActions"] == serde_json::json!(["Deny"]),
            format!("{name}: {p} / {b}"),
        )?;
    }
    Ok(())
}

/// The controller's rules for one rendering, as (resources, verbs) JSON text.
fn controller_rules(extra: &[&str]) -> Result<String> {
    let d = docs(&chart::template("sg", "sessionguard-system", extra)?)?;
    Ok(find(&d, "ClusterRole", Some("sg-sessionguard-controller"))?["rules"].to_string())
}

/// `agent.podNames`: the pod read and the flag come together, or neither.
#[test]
fn the_agent_reads_pods_only_with_pod_names() -> Result<()> {
    for (set, reads) in [
        ("agent.podNames=false", false),
        ("agent.podNames=true", true),
    ] {
        let d = docs(&chart::template(
            "sg",
            "sessionguard-system",
            &["--set", set],
        )?)?;
        let rules = find(&d, "ClusterRole", Some("sg-sessionguard-agent"))?["rules"].clone();
        let pods = serde_json::json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]});
        check(
            rules.as_array().into_iter().flatten().any(|r| *r == pods) == reads,
            format!("{set}: agent rules {rules}"),
        )?;
        let env = find(&d, "DaemonSet", Some("sg-sessionguard-agent"))?["spec"]["template"]["spec"]
            ["containers"][0]["env"]
            .clone();
        let flag = env
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == "SESSIONGUARD_POD_NAMES")
            .map(|e| e["value"].clone());
        check(
            flag == Some(serde_json::json!(reads.to_string())),
            format!("{set}: SESSIONGUARD_POD_NAMES {flag:?}"),
        )?;
    }
    Ok(())
}

#[test]
fn eviction_and_statefulset_status_rights_only_with_their_features() -> Result<()> {
    for (set, eviction, sts_status) in [
        (
            "controller.rollout=true,controller.evictInteracted=false",
            true,
            true,
        ),
        (
            "controller.rollout=false,controller.evictInteracted=true",
            true,
            false,
        ),
        (
            "controller.rollout=false,controller.evictInteracted=false",
            false,
            false,
        ),
    ] {
        let rules = controller_rules(&["--set", set])?;
        check(
            rules.contains("pods/eviction") == eviction
                && rules.contains("statefulsets/status") == sts_status,
            format!("{set}: eviction {eviction}, statefulsets/status {sts_status}: {rules}"),
        )?;
    }
    Ok(())
}

/// notify.terminal: exactly the privilege the README names, and only when on.
#[test]
fn notify_terminal_privileges_only_when_enabled() -> Result<()> {
    let env_of = |c: &Value, name: &str| {
        c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    let off = docs(&chart::template("sg", "sessionguard-system", &[])?)?;
    check(
        !controller_rules(&[])?.contains("sessionreports/status"),
        "no status right by default",
    )?;
    let agent =
        &find(&off, "DaemonSet", Some("sg-sessionguard-agent"))?["spec"]["template"]["spec"];
    check(
        env_of(&agent["containers"][0], "SESSIONGUARD_NOTIFY_TERMINAL").is_none(),
        "the agent does not notify by default",
    )?;

    let set = [
        "--set",
        "notify.terminal.enabled=true,notify.terminal.after=90s",
    ];
    let on = docs(&chart::template("sg", "sessionguard-system", &set)?)?;
    let rules: Value = serde_json::from_str(&controller_rules(&set)?)?;
    let status: Vec<&Value> = rules
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["resources"].to_string().contains("sessionreports/status"))
        .collect();
    check(
        status.len() == 1
            && status[0]["resources"] == serde_json::json!(["sessionreports/status"])
            && status[0]["verbs"] == serde_json::json!(["patch"]),
        format!("the controller may patch the status only: {rules}"),
    )?;
    let agent_rules = find(&on, "ClusterRole", Some("sg-sessionguard-agent"))?["rules"].to_string();
    check(
        !agent_rules.contains("status"),
        format!("the agent never gets the status: {agent_rules}"),
    )?;
    let pod = &find(&on, "DaemonSet", Some("sg-sessionguard-agent"))?["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    check(
        containers.len() == 2
            && containers[0]["name"] == "agent"
            && containers[1]["name"] == "notifier",
        format!("the agent and the notifier, each its own container: {containers:?}"),
    )?;
    let (sc, c, n) = (&pod["securityContext"], &containers[0], &containers[1]);
    let off_pod = &agent["securityContext"];
    // The agent is exactly as unprivileged as without notices.
    check(
        sc == off_pod && c["securityContext"] == agent["containers"][0]["securityContext"],
        format!(
            "the agent keeps its unprivileged identity with notify.terminal: {sc} {}",
            c["securityContext"]
        ),
    )?;
    check(
        sc["runAsNonRoot"] == true
            && sc["runAsUser"] != 0
            && sc["seccompProfile"]["type"] == "RuntimeDefault",
        format!("agent pod securityContext with notify.terminal: {sc}"),
    )?;
    let nsc = &n["securityContext"];
    check(
        nsc["runAsUser"] == 0
            && nsc["runAsGroup"] == 5
            && nsc["capabilities"]["drop"] == serde_json::json!(["ALL"])
            && nsc["capabilities"]["add"] == serde_json::json!(["SYS_PTRACE"])
            && nsc["allowPrivilegeEscalation"] == false
            && nsc["privileged"] == false
            && nsc["readOnlyRootFilesystem"] == true,
        format!("notifier securityContext: {nsc}"),
    )?;
    check(
        n["args"] == serde_json::json!(["notifier"])
            && env_of(n, "SESSIONGUARD_NOTIFY_CLIENT_UID")
                == Some(sc["runAsUser"].to_string().into())
            && env_of(n, "SESSIONGUARD_NOTIFY_SOCKET") == env_of(c, "SESSIONGUARD_NOTIFY_SOCKET")
            && n["ports"].is_null()
            && n["env"].to_string().find("KUBE").is_none(),
        format!(
            "the notifier answers the agent's uid on their shared socket, and listens on no port: {n}"
        ),
    )?;
    // The notifier gets no API token: the pod mounts none by itself, the
    // agent's container mounts one; the notifier mounts /host/proc and the
    // socket's directory only.
    check(
        pod["automountServiceAccountToken"] == false
            && c["volumeMounts"]
                .to_string()
                .contains("/var/run/secrets/kubernetes.io/serviceaccount"),
        format!("the token is the agent container's alone: {pod}"),
    )?;
    let mounts: Vec<String> = n["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| format!("{}:{}", m["name"], m["mountPath"]))
        .collect();
    check(
        mounts
            == [
                "\"host-proc\":\"/host/proc\"",
                "\"notify\":\"/run/sessionguard\"",
            ],
        format!("the notifier mounts /host/proc and the socket's directory only: {mounts:?}"),
    )?;
    check(
        env_of(c, "SESSIONGUARD_NOTIFY_TERMINAL") == Some("true".into())
            && env_of(c, "SESSIONGUARD_NOTIFY_INTERVAL") == Some("5m".into()),
        "the agent notifies",
    )?;
    let ctl = &find(&on, "Deployment", Some("sg-sessionguard-controller"))?["spec"]["template"]["spec"]
        ["containers"][0];
    check(
        env_of(ctl, "SESSIONGUARD_NOTIFY_TERMINAL") == Some("true".into())
            && env_of(ctl, "SESSIONGUARD_NOTIFY_TERMINAL_AFTER") == Some("90s".into()),
        "the controller publishes notices",
    )?;
    Ok(())
}

/// controller.namespaces: the controller told, every policy on pods, PDBs and
/// StatefulSet status refusing its writes elsewhere, the webhooks not called
/// elsewhere; without it, none of that.
#[test]
fn chosen_namespaces_reach_the_flag_the_policies_and_the_webhooks() -> Result<()> {
    let set = [
        "--set",
        "controller.namespaces={ops,db}",
        "--set",
        "webhook.enabled=true",
    ];
    let on = docs(&chart::template("sg", "sessionguard-system", &set)?)?;
    let off = docs(&chart::template(
        "sg",
        "sessionguard-system",
        &["--set", "webhook.enabled=true"],
    )?)?;
    let ctl = &find(&on, "Deployment", Some("sg-sessionguard-controller"))?["spec"]["template"]["spec"]
        ["containers"][0];
    check(
        ctl["env"]
            .to_string()
            .contains(r#"{"name":"SESSIONGUARD_NAMESPACES","value":"db,ops"}"#),
        format!("the controller's --namespaces: {}", ctl["env"]),
    )?;
    let scoped = |d: &[Value], policy: &str| -> Result<bool> {
        let p = find(
            d,
            "ValidatingAdmissionPolicy",
            Some(&format!("sg-sessionguard-controller-{policy}")),
        )?;
        // The text the controller expects first (core::scope), or it stays NotReady.
        let want = Namespaces::parse(&["ops", "db"])
            .map_err(invalid)?
            .policy_expression()
            .unwrap_or_default();
        Ok(p["spec"]["validations"][0]["expression"] == want.as_str())
    };
    for policy in ["pods", "pdbs", "statefulsets"] {
        check(
            scoped(&on, policy)?,
            format!("the {policy} policy is held to ops and db"),
        )?;
        check(
            !scoped(&off, policy)?,
            format!("the {policy} policy is not limited by default"),
        )?;
    }
    check(
        !scoped(&on, "webhooks")?,
        "the webhook configurations' policy has no namespace",
    )?;
    let hooks: Vec<&Value> = on
        .iter()
        .filter(|d| {
            d["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        })
        .flat_map(|d| d["webhooks"].as_array().into_iter().flatten())
        .collect();
    check(!hooks.is_empty(), "webhooks rendered")?;
    for h in hooks {
        check(
            h["namespaceSelector"]["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["operator"] == "In" && e["values"] == serde_json::json!(["ops", "db"])),
            format!(
                "webhook {} is called only for ops and db: {}",
                h["name"], h["namespaceSelector"]
            ),
        )?;
    }
    Ok(())
}

/// A rotation's first step: the Secret the controller reads holds the current token
/// and the next, one a line; the configurations keep the current one.
#[test]
fn a_next_path_token_joins_the_secret_but_not_the_paths() -> Result<()> {
    let (tok, next) = ("a".repeat(32), "b".repeat(32));
    let d = cert_manager_docs(&[
        &format!("webhook.certManager.pathToken={tok}"),
        &format!("webhook.certManager.nextPathToken={next}"),
    ])?;
    let w = find(
        &d,
        "ValidatingWebhookConfiguration",
        Some("sg-sessionguard"),
    )?;
    let path = w["webhooks"][0]["clientConfig"]["service"]["path"]
        .as_str()
        .unwrap_or("");
    check(
        path.starts_with(&format!("/s/{tok}/")),
        format!("path {path}"),
    )?;
    let secret = find(&d, "Secret", Some("sg-sessionguard-webhook-path"))?;
    // base64 of "a"×32 "\n" "b"×32
    let want =
        "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWEKYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmI=";
    check(
        secret["data"]["token"] == want,
        format!("token Secret: {secret}"),
    )?;
    let bad = chart::template(
        "sg",
        "sessionguard-system",
        &["--set", "webhook.certManager.nextPathToken=short"],
    );
    check(
        bad.is_err_and(|e| e.to_string().contains("nextPathToken")),
        "a short nextPathToken is refused by the schema, naming the key",
    )?;
    Ok(())
}

/// The chart rendered in cert-manager mode, with these further `--set` values.
fn cert_manager_docs(sets: &[&str]) -> Result<Vec<Value>> {
    let mut args = vec!["--set", "webhook.certManager.enabled=true"];
    for s in sets {
        args.extend(["--set", s]);
    }
    docs(&chart::template("sg", "sessionguard-system", &args)?)
}

#[test]
fn cert_manager_mode_renders_the_path_token_into_paths_and_a_secret() -> Result<()> {
    let tok = "Abcdefghijklmnopqrstuvwxyz0123456789_-ABCDEFGHIJ";
    let d = cert_manager_docs(&[&format!("webhook.certManager.pathToken={tok}")])?;
    for kind in [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ] {
        let w = find(&d, kind, Some("sg-sessionguard"))?;
        for hook in w["webhooks"].as_array().into_iter().flatten() {
            let path = hook["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap_or("");
            check(
                path.starts_with(&format!("/s/{tok}/")),
                format!("{kind} {}: path {path}", hook["name"]),
            )?;
        }
    }
    let secret = find(&d, "Secret", Some("sg-sessionguard-webhook-path"))?;
    let b64 = secret["data"]["token"].as_str().unwrap_or("");
    check(
        b64 == "QWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU2Nzg5Xy1BQkNERUZHSElK",
        format!("token Secret: {secret}"),
    )?;
    let env = find(&d, "Deployment", None)?["spec"]["template"]["spec"]["containers"][0]["env"]
        .to_string();
    check(
        env.contains("SESSIONGUARD_WEBHOOK_PATH_TOKEN_FILE"),
        format!("controller env: {env}"),
    )?;
    // Without a value: a random 48-character token, different on every render
    // (an install keeps the one it finds: lookup).
    let paths: Vec<String> = (0..2)
        .map(|_| {
            let d = cert_manager_docs(&[])?;
            Ok(find(&d, "MutatingWebhookConfiguration", None)?["webhooks"][0]["clientConfig"]
                ["service"]["path"]
                .as_str()
                .unwrap_or("")
                .to_string())
        })
        .collect::<Result<_>>()?;
    check(
        paths[0] != paths[1]
            && paths
                .iter()
                .all(|p| p.len() == "/s/".len() + 48 + "/mutate/pods".len()),
        format!("generated paths: {paths:?}"),
    )?;
    for bad in ["short", "has/slash/in/it/and/is/long/enough/0123456789"] {
        let r = chart::template(
            "sg",
            "sessionguard-system",
            &["--set", &format!("webhook.certManager.pathToken={bad}")],
        );
        check(r.is_err(), format!("pathToken {bad} accepted"))?;
    }
    Ok(())
}

#[test]
fn all_on_rendering_has_every_optional_part() -> Result<()> {
    let all_on = all_on();
    let d = docs(&chart::template(
        "sg",
        "sessionguard-system",
        &["-f", &all_on],
    )?)?;
    let k = kinds(&d);
    for want in [
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "ConfigMap",
    ] {
        check(
            k.iter().any(|x| x == want),
            format!("{want} missing: {k:?}"),
        )?;
    }
    // Monitors replace the annotations, and keep the metrics' own namespace/pod labels.
    let ds = find(&d, "DaemonSet", None)?;
    check(
        ds["spec"]["template"]["metadata"]["annotations"]
            .get("prometheus.io/scrape")
            .is_none(),
        "no scrape annotations when a monitor scrapes",
    )?;
    // PodMonitors instead of ServiceMonitors: the same promises.
    let pm = docs(&chart::template(
        "sg",
        "sessionguard-system",
        &["--set", "podMonitor.enabled=true"],
    )?)?;
    check(
        pm.iter().filter(|o| o["kind"] == "PodMonitor").count() == 2,
        "PodMonitors for the agent and the controller",
    )?;
    check(
        find(&pm, "DaemonSet", None)?["spec"]["template"]["metadata"]["annotations"]
            .get("prometheus.io/scrape")
            .is_none(),
        "no scrape annotations when a PodMonitor scrapes",
    )?;
    for kind in ["ServiceMonitor", "PodMonitor"] {
        for m in d.iter().chain(&pm).filter(|o| o["kind"] == kind) {
            let ep = if kind == "ServiceMonitor" {
                &m["spec"]["endpoints"][0]
            } else {
                &m["spec"]["podMetricsEndpoints"][0]
            };
            check(ep["honorLabels"] == true, format!("{kind} honorLabels"))?;
        }
    }
    let rule = find(&d, "PrometheusRule", None)?;
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .ok_or_else(|| invalid("PrometheusRule without rules"))?
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for a in [
        "SessionguardLoginTooLong",
        "SessionguardDrainBlocked",
        "SessionguardAgentDown",
        "SessionguardAgentUnavailable",
        "SessionguardAgentNotReporting",
        "SessionguardUpdatePending",
    ] {
        check(
            alerts.contains(&a),
            format!("alert {a} missing: {alerts:?}"),
        )?;
    }
    // Without reports there is nothing to miss: the not-reporting alert would fire forever.
    let quiet = docs(&chart::template(
        "sg",
        "sessionguard-system",
        &["--set", "prometheusRule.enabled=true,agent.report=false"],
    )?)?;
    let quiet_rules =
        find(&quiet, "PrometheusRule", None)?["spec"]["groups"][0]["rules"].to_string();
    check(
        !quiet_rules.contains("SessionguardAgentNotReporting")
            && quiet_rules.contains("SessionguardAgentDown"),
        "agent.report=false drops SessionguardAgentNotReporting only",
    )?;
    for r in rule["spec"]["groups"][0]["rules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let a = &r["annotations"];
        check(
            ["summary", "description", "runbook", "runbook_url"]
                .iter()
                .all(|k| a[*k].as_str().is_some_and(|s| !s.is_empty())),
            format!("{} lacks summary/description/runbook: {a}", r["alert"]),
        )?;
    }
    // The webhooks (files/webhooks.yaml, from the controller): pointed at this
    // release's Service, excluding kube-system and the release namespace.
    for w in d.iter().filter(|o| {
        o["kind"] == "ValidatingWebhookConfiguration" || o["kind"] == "MutatingWebhookConfiguration"
    }) {
        check(
            w["metadata"]["name"] == "sg-sessionguard",
            format!("webhook configuration name: {}", w["metadata"]["name"]),
        )?;
        for hook in w["webhooks"].as_array().into_iter().flatten() {
            let sel = hook["namespaceSelector"].to_string();
            check(
                sel.contains("kube-system") && sel.contains("sessionguard-system"),
                format!("webhook namespaceSelector: {sel}"),
            )?;
            check(
                hook["failurePolicy"] == "Ignore"
                    && hook["clientConfig"]["service"]["name"] == "sg-sessionguard-controller"
                    && hook["clientConfig"]["service"]["namespace"] == "sessionguard-system"
                    && hook["clientConfig"].get("caBundle").is_none(),
                format!("webhook {}: {}", hook["name"], hook["clientConfig"]),
            )?;
        }
    }
    let dep = find(&d, "Deployment", None)?;
    let env = dep["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    for (k, v) in [
        ("SESSIONGUARD_WEBHOOK", "true"),
        ("SESSIONGUARD_WEBHOOK_SERVICE", "sg-sessionguard-controller"),
        ("SESSIONGUARD_WEBHOOK_VALIDATING_CONFIG", "sg-sessionguard"),
        ("SESSIONGUARD_WEBHOOK_SECRET", "sg-sessionguard-webhook-tls"),
    ] {
        check(
            env.contains(&format!("{{\"name\":\"{k}\",\"value\":\"{v}\"}}")),
            format!("controller env {k}={v} missing: {env}"),
        )?;
    }
    Ok(())
}

#[test]
fn schema_refuses_bad_values_with_the_key_named() -> Result<()> {
    for (set, needle) in [
        ("agent.runAsUser=0", "/agent/runAsUser"),
        ("controller.ttl=3x", "/controller/ttl"),
        ("agent.bogus=1", "bogus"),
        ("logFormat=xml", "/logFormat"),
        // A name goes into the policies' CEL: only what a namespace can be called.
        (
            "controller.namespaces={ops'] || true || ['x}",
            "/controller/namespaces/0",
        ),
        (
            "alerts.longLogin.thresholdSeconds=-5",
            "/alerts/longLogin/thresholdSeconds",
        ),
        (
            "serviceMonitor.enabled=true,podMonitor.enabled=true",
            "serviceMonitor.enabled and podMonitor.enabled are both true",
        ),
    ] {
        match chart::template("sg", "sessionguard-system", &["--set", set]) {
            Ok(_) => return Err(invalid(format!("--set {set} was accepted"))),
            Err(e) => check(
                e.to_string().contains(needle),
                format!("--set {set}: error does not name {needle}: {e}"),
            )?,
        }
    }
    Ok(())
}
