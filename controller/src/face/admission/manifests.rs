//! The two webhook configurations, built in one place so the chart's file,
//! the e2e tests and the server's paths cannot drift apart.
//!
//! - Validating `interactions.sessionguard.io`: CONNECT pods/exec and
//!   pods/attach, UPDATE pods/ephemeralcontainers (kubectl debug).
//!   sideEffects NoneOnDryRun: the server records nothing for dry runs.
//! - Validating `evictions.sessionguard.io`: CREATE pods/eviction (the
//!   refusal of a protected pod's eviction, with 429 and who is logged in).
//!   sideEffects NoneOnDryRun: dry runs are answered, not recorded.
//! - Validating `annotations.sessionguard.io` (CREATE pods, UPDATE pods and
//!   pods/status) and mutating `extended-by.sessionguard.io` (UPDATE pods and
//!   pods/status), called only when a request carries or changes a
//!   sessionguard key (matchConditions), so ordinary pod writes (the
//!   kubelet's status updates included) never wait on us. pods/status is
//!   there because it accepts label and annotation changes too.
//!
//! All: failurePolicy Ignore by default (the agent still sees terminal
//! logins), timeoutSeconds 2, kube-system and our own namespace excluded.

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use sessionguard_core::keys;

use super::eviction::EVICTION_PATH;
use super::review::{CONNECT_PATH, GUARD_PATH, MUTATE_PATH};

pub enum Target {
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
    /// `https://host:port` (no path), for webhooks outside the cluster.
    Url(String),
}

pub struct Options {
    /// Name of both configurations.
    pub name: String,
    pub target: Target,
    pub namespace_selector: LabelSelector,
    pub failure_policy: String,
    pub timeout_seconds: i32,
}

impl Options {
    /// Every namespace except `excluded` (kube-system and our own).
    pub fn excluding(name: &str, target: Target, excluded: &[&str]) -> Self {
        Self {
            name: name.into(),
            target,
            namespace_selector: LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "NotIn".into(),
                    values: Some(excluded.iter().map(|s| s.to_string()).collect()),
                }]),
                ..Default::default()
            },
            failure_policy: "Ignore".into(),
            timeout_seconds: 2,
        }
    }

    fn client(&self, path: &str) -> WebhookClientConfig {
        match &self.target {
            Target::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(path.into()),
                    port: Some(*port),
                }),
                ..Default::default()
            },
            Target::Url(base) => WebhookClientConfig {
                url: Some(format!("{}{path}", base.trim_end_matches('/'))),
                ..Default::default()
            },
        }
    }
}

fn rule(op: &str, resources: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec!["".into()]),
        api_versions: Some(vec!["v1".into()]),
        operations: Some(vec![op.into()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        scope: Some("Namespaced".into()),
    }
}

/// CEL: does the update add, change or remove a `sessionguard.io/` key in
/// `field` (labels or annotations)?
fn touches(field: &str) -> String {
    let (new, old) = (
        format!("object.metadata.{field}"),
        format!("oldObject.metadata.{field}"),
    );
    format!(
        "(has({new}) && {new}.exists(k, k.startsWith('{p}') && !(has({old}) && k in {old} && {old}[k] == {new}[k]))) || \
         (has({old}) && {old}.exists(k, k.startsWith('{p}') && !(has({new}) && k in {new})))",
        p = keys::PREFIX
    )
}

/// CEL: does the new object carry a `sessionguard.io/` key in `field`?
fn carries(field: &str) -> String {
    let m = format!("object.metadata.{field}");
    format!(
        "(has({m}) && {m}.exists(k, k.startsWith('{p}')))",
        p = keys::PREFIX
    )
}

fn extension_of(obj: &str) -> String {
    let m = format!("{obj}.metadata.annotations");
    format!(
        "(has({m}) && '{k}' in {m} ? {m}['{k}'] : '')",
        k = keys::EXTENSION
    )
}

pub fn validating(o: &Options) -> ValidatingWebhookConfiguration {
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(o.name.clone()),
            ..Default::default()
        },
        webhooks: Some(vec![
            ValidatingWebhook {
                name: "interactions.sessionguard.io".into(),
                admission_review_versions: vec!["v1".into()],
                client_config: o.client(CONNECT_PATH),
                rules: Some(vec![
                    rule("CONNECT", &["pods/exec", "pods/attach"]),
                    rule("UPDATE", &["pods/ephemeralcontainers"]),
                ]),
                side_effects: "NoneOnDryRun".into(),
                failure_policy: Some(o.failure_policy.clone()),
                match_policy: Some("Equivalent".into()),
                namespace_selector: Some(o.namespace_selector.clone()),
                timeout_seconds: Some(o.timeout_seconds),
                ..Default::default()
            },
            ValidatingWebhook {
                name: "annotations.sessionguard.io".into(),
                admission_review_versions: vec!["v1".into()],
                client_config: o.client(GUARD_PATH),
                rules: Some(vec![
                    rule("CREATE", &["pods"]),
                    rule("UPDATE", &["pods", "pods/status"]),
                ]),
                side_effects: "None".into(),
                failure_policy: Some(o.failure_policy.clone()),
                match_policy: Some("Equivalent".into()),
                namespace_selector: Some(o.namespace_selector.clone()),
                timeout_seconds: Some(o.timeout_seconds),
                match_conditions: Some(vec![MatchCondition {
                    name: "touches-sessionguard-keys".into(),
                    // CEL's && is false when either side is, even if the
                    // other errs: oldObject is null on CREATE.
                    expression: format!(
                        "(request.operation == 'CREATE' && ({} || {})) || \
                         (request.operation == 'UPDATE' && ({} || {}))",
                        carries("annotations"),
                        carries("labels"),
                        touches("annotations"),
                        touches("labels")
                    ),
                }]),
                ..Default::default()
            },
            ValidatingWebhook {
                name: "evictions.sessionguard.io".into(),
                admission_review_versions: vec!["v1".into()],
                client_config: o.client(EVICTION_PATH),
                rules: Some(vec![rule("CREATE", &["pods/eviction"])]),
                // Refusals are recorded as events, never for dry runs.
                side_effects: "NoneOnDryRun".into(),
                failure_policy: Some(o.failure_policy.clone()),
                match_policy: Some("Equivalent".into()),
                namespace_selector: Some(o.namespace_selector.clone()),
                timeout_seconds: Some(o.timeout_seconds),
                ..Default::default()
            },
        ]),
    }
}

pub fn mutating(o: &Options) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(o.name.clone()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "extended-by.sessionguard.io".into(),
            admission_review_versions: vec!["v1".into()],
            client_config: o.client(MUTATE_PATH),
            rules: Some(vec![rule("UPDATE", &["pods", "pods/status"])]),
            side_effects: "None".into(),
            failure_policy: Some(o.failure_policy.clone()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(o.namespace_selector.clone()),
            timeout_seconds: Some(o.timeout_seconds),
            reinvocation_policy: Some("Never".into()),
            match_conditions: Some(vec![MatchCondition {
                name: "changes-extension".into(),
                expression: format!(
                    "{} != {}",
                    extension_of("object"),
                    extension_of("oldObject")
                ),
            }]),
            ..Default::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart_options() -> Options {
        Options::excluding(
            "sessionguard",
            Target::Service {
                namespace: "sessionguard-system".into(),
                name: "sessionguard-webhook".into(),
                port: 443,
            },
            &["kube-system", "sessionguard-system"],
        )
    }

    /// charts/sessionguard/files/webhooks.yaml is this function's output;
    /// regenerate with ``make manifests` (SESSIONGUARD_UPDATE_MANIFESTS=1)`.
    #[test]
    fn chart_file_is_current() {
        let o = chart_options();
        let text = format!(
            "# Generated from controller/src/face/admission/manifests.rs; do not edit.\n# The controller fills in caBundle (or cert-manager's CA injector does).\n{}---\n{}",
            serde_yaml::to_string(&with_kind(validating(&o), "ValidatingWebhookConfiguration"))
                .unwrap(),
            serde_yaml::to_string(&with_kind(mutating(&o), "MutatingWebhookConfiguration"))
                .unwrap()
        );
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/sessionguard/files/webhooks.yaml"
        );
        if std::env::var_os("SESSIONGUARD_UPDATE_MANIFESTS").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            on_disk, text,
            "{path} is stale; regenerate with make manifests"
        );
    }

    /// charts/sessionguard/files/controller-policy.yaml is hand-written CEL;
    /// the keys it lets the controller write must be the ones it writes.
    #[test]
    fn the_controller_policy_allows_every_key_the_controller_writes() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/sessionguard/files/controller-policy.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let annotations = text
            .split("validations:")
            .nth(1)
            .and_then(|v| v.split("only sessionguard.io/ labels").nth(1))
            .unwrap();
        for (key, _) in sessionguard_core::protection::AUTOSCALER {
            assert!(annotations.contains(&format!("k == '{key}'")), "{key}");
        }
        assert!(text.contains(&format!("k.startsWith('{}')", keys::PREFIX)));
        assert!(text.contains(&format!(
            "labels['{}'] == '{}'",
            keys::MANAGED_BY,
            keys::MANAGER
        )));
    }

    /// The webhook-configuration policy compares every field but caBundle by
    /// name: a field the API types gain later must be named there too, or a
    /// stolen token could change it. Every field of a fully populated webhook
    /// (the API types as this build knows them) is either compared or the
    /// caBundle.
    #[test]
    fn the_webhook_policy_compares_every_field_but_the_ca_bundle() {
        use k8s_openapi::api::admissionregistration::v1::{
            MatchCondition, MutatingWebhook, ServiceReference, ValidatingWebhook,
            WebhookClientConfig,
        };
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/sessionguard/files/controller-policy.yaml"
        ))
        .unwrap();
        let policy = text
            .split("name: sessionguard-controller-webhooks")
            .nth(1)
            .unwrap();
        let client_config = WebhookClientConfig {
            ca_bundle: Some(k8s_openapi::ByteString(vec![1])),
            service: Some(ServiceReference {
                name: "s".into(),
                namespace: "n".into(),
                path: Some("/p".into()),
                port: Some(443),
            }),
            url: Some("https://x".into()),
        };
        let fields = |v: serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        let rules = Some(vec![RuleWithOperations::default()]);
        let conditions = Some(vec![MatchCondition::default()]);
        let validating = ValidatingWebhook {
            admission_review_versions: vec!["v1".into()],
            client_config: client_config.clone(),
            failure_policy: Some("Fail".into()),
            match_conditions: conditions.clone(),
            match_policy: Some("Equivalent".into()),
            name: "w".into(),
            namespace_selector: Some(LabelSelector::default()),
            object_selector: Some(LabelSelector::default()),
            rules: rules.clone(),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
        };
        let mutating = MutatingWebhook {
            admission_review_versions: vec!["v1".into()],
            client_config: client_config.clone(),
            failure_policy: Some("Fail".into()),
            match_conditions: conditions,
            match_policy: Some("Equivalent".into()),
            name: "w".into(),
            namespace_selector: Some(LabelSelector::default()),
            object_selector: Some(LabelSelector::default()),
            reinvocation_policy: Some("Never".into()),
            rules,
            side_effects: "None".into(),
            timeout_seconds: Some(5),
        };
        let mut all = fields(serde_json::to_value(validating).unwrap());
        all.extend(fields(serde_json::to_value(mutating).unwrap()));
        for f in all {
            match f.as_str() {
                "name" => assert!(policy.contains("o.name == w.name")),
                "clientConfig" => {
                    for c in fields(serde_json::to_value(&client_config).unwrap()) {
                        if c != "caBundle" {
                            assert!(
                                policy.contains(&format!(
                                    "w.clientConfig.?{c}.hasValue() == o.clientConfig.?{c}.hasValue()"
                                )),
                                "clientConfig.{c} is not compared"
                            );
                        }
                    }
                    let service = client_config.service.clone().unwrap();
                    for s in fields(serde_json::to_value(service).unwrap()) {
                        let compared = match s.as_str() {
                            // Compared without its token segment.
                            "path" => policy.contains("o.clientConfig.?service.?path.orValue('')"),
                            s => policy.contains(&format!(
                                "w.clientConfig.?service.?{s} == o.clientConfig.?service.?{s}"
                            )),
                        };
                        assert!(compared, "clientConfig.service.{s} is not compared");
                    }
                }
                f => assert!(
                    policy.contains(&format!("w.?{f} == o.?{f}")),
                    "{f} is not compared"
                ),
            }
        }
    }

    fn with_kind<T: serde::Serialize>(obj: T, kind: &str) -> serde_json::Value {
        let mut v = serde_json::to_value(obj).unwrap();
        v["apiVersion"] = "admissionregistration.k8s.io/v1".into();
        v["kind"] = kind.into();
        v
    }

    #[test]
    fn paths_and_policies() {
        let v = validating(&chart_options());
        let hooks = v.webhooks.unwrap();
        assert_eq!(
            hooks[0]
                .client_config
                .service
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some(CONNECT_PATH)
        );
        assert!(
            hooks
                .iter()
                .all(|h| h.failure_policy.as_deref() == Some("Ignore"))
        );
        let sel = hooks[0].namespace_selector.as_ref().unwrap();
        let req = &sel.match_expressions.as_ref().unwrap()[0];
        assert_eq!(req.operator, "NotIn");
        assert!(
            req.values
                .as_ref()
                .unwrap()
                .contains(&"kube-system".to_string())
        );
        // The status subresource accepts metadata changes: guarded too.
        let status = |rules: &[RuleWithOperations]| {
            rules.iter().any(|r| {
                r.operations.as_deref() == Some(&["UPDATE".to_string()][..])
                    && r.resources
                        .as_ref()
                        .is_some_and(|rs| rs.contains(&"pods/status".to_string()))
            })
        };
        assert!(status(hooks[1].rules.as_ref().unwrap()), "guard");
        // Evictions: CREATE of the subresource, dry runs answered unrecorded.
        let ev = &hooks[2];
        let r = &ev.rules.as_ref().unwrap()[0];
        assert_eq!(
            r.resources.as_deref(),
            Some(&["pods/eviction".to_string()][..])
        );
        assert_eq!(r.operations.as_deref(), Some(&["CREATE".to_string()][..]));
        assert_eq!(ev.side_effects, "NoneOnDryRun");
        assert_eq!(
            ev.client_config.service.as_ref().unwrap().path.as_deref(),
            Some(EVICTION_PATH)
        );
        let m = mutating(&chart_options()).webhooks.unwrap();
        assert!(status(m[0].rules.as_ref().unwrap()), "mutating");
        let u = Options::excluding("x", Target::Url("https://127.0.0.1:9443/".into()), &[]);
        assert_eq!(
            mutating(&u).webhooks.unwrap()[0]
                .client_config
                .url
                .as_deref(),
            Some("https://127.0.0.1:9443/mutate/pods")
        );
    }
}
