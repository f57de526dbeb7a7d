//! Are the admission policies that narrow this controller's rights in force?
//! Read at start-up, and again until they are (see `core::policy_check` for
//! why and what counts). What "in force" means is the chart's own
//! `files/controller-policy.yaml`, compiled into this binary, renamed as the
//! chart renames it (`sessionguard-` → `<release fullname>-`) and bound to
//! this controller's username.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::Client;
use kube::api::Api;
use serde::Deserialize;
use sessionguard_core::policy_check::{self, Binding, Policy};
use sessionguard_core::scope::{Namespaces, SCOPED_RESOURCES};

use crate::error::{Error, Result};

/// The chart's policies, as this binary was built with them.
const CHART_POLICIES: &str =
    include_str!("../../../charts/sessionguard/files/controller-policy.yaml");

/// The policies this controller needs: the chart's, named with `prefix`
/// (the release's full name) and matching `user` (this controller), and
/// with `--namespaces` the chart's namespace check first on the policies of
/// the resources it writes in namespaces.
pub fn wanted(prefix: &str, user: &str, namespaces: &Namespaces) -> Result<Vec<Policy>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(CHART_POLICIES) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| {
            Error::Webhook(format!(
                "the built-in controller policies do not parse: {e}"
            ))
        })?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("ValidatingAdmissionPolicy") {
            continue;
        }
        let vap: ValidatingAdmissionPolicy = serde_yaml::from_value(value).map_err(|e| {
            Error::Webhook(format!(
                "the built-in controller policies do not parse: {e}"
            ))
        })?;
        let mut p = view(&vap);
        p.name = renamed(&p.name, prefix);
        p.conditions = vec![policy_check::user_condition(user)];
        let scoped = p.rules.iter().any(|r| {
            r.rsplit('|')
                .next()
                .is_some_and(|res| res.split(',').any(|x| SCOPED_RESOURCES.contains(&x)))
        });
        if let (true, Some(check)) = (scoped, namespaces.policy_expression()) {
            let first = p
                .validations
                .iter()
                .take_while(|v| v.starts_with("let "))
                .count();
            p.validations.insert(first, check);
        }
        out.push(p);
    }
    Ok(out)
}

fn renamed(name: &str, prefix: &str) -> String {
    format!("{prefix}-{}", name.trim_start_matches("sessionguard-"))
}

/// A read bounded by `timeout` (a read, so not in the write counters).
async fn timed_call<T>(
    timeout: Duration,
    op: &'static str,
    fut: impl std::future::Future<Output = kube::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(|source| Error::Kube { op, source }),
        Err(_) => Err(Error::Timeout {
            op,
            secs: timeout.as_secs(),
        }),
    }
}

/// What the check reads of a policy.
pub fn view(vap: &ValidatingAdmissionPolicy) -> Policy {
    let spec = vap.spec.clone().unwrap_or_default();
    let rules = spec
        .match_constraints
        .and_then(|m| m.resource_rules)
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let j = |v: Option<Vec<String>>| v.unwrap_or_default().join(",");
            format!(
                "{}|{}|{}|{}",
                j(r.api_groups),
                j(r.api_versions),
                j(r.operations),
                j(r.resources)
            )
        })
        .collect();
    let variables = spec
        .variables
        .unwrap_or_default()
        .into_iter()
        .map(|v| format!("let {} = {}", v.name, v.expression));
    let validations = spec
        .validations
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.expression);
    Policy {
        name: vap.metadata.name.clone().unwrap_or_default(),
        failure_policy: spec.failure_policy,
        conditions: spec
            .match_conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.expression)
            .collect(),
        rules,
        validations: variables.chain(validations).collect(),
    }
}

fn binding_view(b: &ValidatingAdmissionPolicyBinding) -> Binding {
    let spec = b.spec.clone().unwrap_or_default();
    Binding {
        name: b.metadata.name.clone().unwrap_or_default(),
        policy: spec.policy_name.unwrap_or_default(),
        actions: spec.validation_actions.unwrap_or_default(),
    }
}

/// Why this replica does not act, while its policies are not in force:
/// what `/readyz` says.
#[derive(Debug, Default)]
pub struct NotInForce(std::sync::Mutex<Option<String>>);

impl NotInForce {
    pub fn set(&self, why: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    pub fn why(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Says, once per change of reason, why the controller does not act: a
/// Warning event on its Lease (in its namespace, where `kubectl get events`
/// shows it; the Lease need not exist) and an error line. Not through the
/// writer: this replica does not lead, and must still be heard.
pub async fn announce(client: &Client, namespace: &str, lease: &str, identity: &str, why: &str) {
    tracing::error!(%why, "admission policies not in force: not acting (--require-admission-policies)");
    let regarding = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        name: Some(lease.to_string()),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    };
    let event = crate::io::events::build(
        regarding,
        crate::io::events::Kind::Warning,
        "AdmissionPoliciesMissing",
        format!("not acting: {why}"),
        identity,
        jiff::Timestamp::now(),
    );
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let sent = timed_call(
        Duration::from_secs(10),
        "create_event",
        api.create(&Default::default(), &event),
    )
    .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not record the AdmissionPoliciesMissing event");
    }
}

/// What keeps the wanted policies from being in force, in two kinds: what
/// the API server says is missing or differs, and what could not be read (an
/// outage, a timeout). Both keep a starting controller from acting; only the
/// first stops a running one, which must not exit because the API server is
/// slow.
#[derive(Debug, Default)]
pub struct Findings {
    pub absent: Vec<String>,
    pub unreadable: Vec<String>,
}

impl Findings {
    /// Every problem, what is known absent first.
    pub fn all(self) -> Vec<String> {
        let mut out = self.absent;
        out.extend(self.unreadable);
        out
    }
}

/// One line for many problems: the first, and how many more.
pub fn summary(problems: &[String]) -> Option<String> {
    let first = problems.first()?;
    Some(match problems.len() {
        1 => first.clone(),
        n => format!("{first} (and {} more)", n - 1),
    })
}

/// What keeps each wanted policy from being in force; empty when all are.
pub async fn problems(client: &Client, wanted: &[Policy], timeout: Duration) -> Findings {
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let mut out = Findings::default();
    for want in wanted {
        let found = timed_call(
            timeout,
            "get_admission_policy",
            policies.get_opt(&want.name),
        )
        .await;
        let bound = timed_call(
            timeout,
            "get_admission_policy_binding",
            bindings.get_opt(&want.name),
        )
        .await;
        match (found, bound) {
            (Ok(p), Ok(b)) => out.absent.extend(policy_check::problem(
                want,
                p.as_ref().map(view).as_ref(),
                b.as_ref().map(binding_view).as_ref(),
            )),
            (Err(e), _) | (_, Err(e)) => out.unreadable.push(format!(
                "cannot read ValidatingAdmissionPolicy {} or its binding: {e}",
                want.name
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_names_the_first_problem_and_counts_the_rest() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&["a".into()]).as_deref(), Some("a"));
        assert_eq!(
            summary(&["a".into(), "b".into(), "c".into()]).as_deref(),
            Some("a (and 2 more)")
        );
        let f = Findings {
            absent: vec!["gone".into()],
            unreadable: vec!["timeout".into()],
        };
        assert_eq!(f.all(), ["gone", "timeout"]);
    }

    #[test]
    fn the_built_in_policies_are_the_chart_s_renamed_for_the_release_and_user() {
        let w = wanted(
            "sg",
            "system:serviceaccount:ns:sg-controller",
            &Namespaces::all(),
        )
        .unwrap();
        let names: Vec<&str> = w.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sg-controller-pods",
                "sg-controller-pdbs",
                "sg-controller-webhooks",
                "sg-controller-statefulsets",
                "sg-controller-evictions"
            ]
        );
        for p in &w {
            assert_eq!(p.failure_policy.as_deref(), Some("Fail"), "{}", p.name);
            assert_eq!(
                p.conditions,
                ["request.userInfo.username == 'system:serviceaccount:ns:sg-controller'"]
            );
            assert!(!p.validations.is_empty() && !p.rules.is_empty(), "{p:?}");
        }
        // The PDB policy's variable is part of what must match.
        assert!(
            w[1].validations[0].starts_with("let pdb = "),
            "{:?}",
            w[1].validations
        );
        assert_eq!(w[0].rules, ["|*|UPDATE|pods"]);

        // With --namespaces, the chart's namespace check comes first on pods,
        // PDBs (after its variable) and StatefulSet status; not on webhooks.
        let only = Namespaces::parse(&["ops", "db"]).unwrap();
        let check = only.policy_expression().unwrap();
        let s = wanted("sg", "system:serviceaccount:ns:sg-controller", &only).unwrap();
        assert_eq!(s[0].validations[0], check);
        assert_eq!(s[1].validations[1], check, "{:?}", s[1].validations);
        assert_eq!(
            s[2].validations, w[2].validations,
            "webhooks: cluster-scoped"
        );
        assert_eq!(s[3].validations[0], check);
        assert_eq!(s[4].validations[0], check);
        for i in [0, 1, 3, 4] {
            assert_eq!(s[i].validations.len(), w[i].validations.len() + 1);
        }
    }
}
