//! Whether the admission policies that narrow the controller's own rights
//! are in force, as the chart ships them.
//!
//! RBAC gives the controller `patch` on every pod and `create`/`delete` on
//! every PodDisruptionBudget; only its ValidatingAdmissionPolicies take that
//! back to its own keys and its own budgets. Without them (`admissionPolicy.
//! enabled=false`, a cluster without the API, a policy edited or unbound) a
//! stolen token reaches much further, and nothing would say so. So the
//! controller compares what it finds with what it was built with and acts
//! only when they match (or the operator has said, by a flag, that it may
//! run without them).

/// A policy as far as this check reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub failure_policy: Option<String>,
    /// The match conditions' expressions (ours: the controller's username).
    pub conditions: Vec<String>,
    /// What it matches: each resource rule as `groups|versions|operations|resources`.
    pub rules: Vec<String>,
    /// The variables (`let <name> = <expression>`), then the validations'
    /// expressions, in order.
    pub validations: Vec<String>,
}

/// A binding as far as this check reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    pub policy: String,
    pub actions: Vec<String>,
}

/// The match condition that applies a policy to `user` only.
pub fn user_condition(user: &str) -> String {
    format!("request.userInfo.username == '{user}'")
}

/// What is wrong with `found` (and its binding) against `want`, if anything:
/// one line that says what, and what to do.
pub fn problem(want: &Policy, found: Option<&Policy>, binding: Option<&Binding>) -> Option<String> {
    let name = &want.name;
    let Some(found) = found else {
        return Some(format!(
            "ValidatingAdmissionPolicy {name} does not exist (install the chart with admissionPolicy.enabled=true, \
             or apply deploy/sessionguard.yaml on Kubernetes >= 1.34)"
        ));
    };
    if found.failure_policy.as_deref() != Some("Fail") {
        return Some(format!(
            "ValidatingAdmissionPolicy {name} has failurePolicy {:?}, not Fail",
            found.failure_policy.as_deref().unwrap_or("unset")
        ));
    }
    if found.conditions != want.conditions {
        return Some(format!(
            "ValidatingAdmissionPolicy {name} applies to {:?}, not to this controller ({:?})",
            found.conditions, want.conditions
        ));
    }
    if found.rules != want.rules {
        return Some(format!(
            "ValidatingAdmissionPolicy {name} matches {:?}, not {:?}: re-apply the chart of this controller's version",
            found.rules, want.rules
        ));
    }
    if found.validations != want.validations {
        let differs = want
            .validations
            .iter()
            .zip(
                found
                    .validations
                    .iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .position(|(w, f)| f != Some(w))
            .unwrap_or(want.validations.len());
        return Some(format!(
            "ValidatingAdmissionPolicy {name} differs from this release's (validation {} of {}, {} found): \
             re-apply the chart of this controller's version",
            differs + 1,
            want.validations.len(),
            found.validations.len()
        ));
    }
    let Some(binding) = binding else {
        return Some(format!(
            "ValidatingAdmissionPolicyBinding {name} does not exist: the policy is not applied"
        ));
    };
    if binding.policy != *name || !binding.actions.iter().any(|a| a == "Deny") {
        return Some(format!(
            "ValidatingAdmissionPolicyBinding {name} binds {:?} with actions {:?}; it must bind {name} with Deny",
            binding.policy, binding.actions
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Policy {
        Policy {
            name: "sg-controller-pods".into(),
            failure_policy: Some("Fail".into()),
            conditions: vec![user_condition("system:serviceaccount:ns:sg-controller")],
            rules: vec!["|*|UPDATE|pods".into()],
            validations: vec!["object.spec == oldObject.spec".into(), "true".into()],
        }
    }

    fn bound() -> Binding {
        Binding {
            name: "sg-controller-pods".into(),
            policy: "sg-controller-pods".into(),
            actions: vec!["Deny".into()],
        }
    }

    #[test]
    fn in_force_when_the_policy_and_its_deny_binding_match() {
        assert_eq!(problem(&want(), Some(&want()), Some(&bound())), None);
    }

    #[test]
    fn every_way_of_not_being_in_force_is_named() {
        let w = want();
        let cases: Vec<(Option<Policy>, Option<Binding>, &str)> = vec![
            (None, Some(bound()), "does not exist"),
            (
                Some(Policy {
                    failure_policy: Some("Ignore".into()),
                    ..want()
                }),
                Some(bound()),
                "failurePolicy \"Ignore\"",
            ),
            (
                Some(Policy {
                    conditions: vec![user_condition("someone-else")],
                    ..want()
                }),
                Some(bound()),
                "not to this controller",
            ),
            (
                Some(Policy {
                    validations: vec![
                        "object.spec == oldObject.spec".into(),
                        "false || true".into(),
                    ],
                    ..want()
                }),
                Some(bound()),
                "validation 2 of 2",
            ),
            (
                Some(Policy {
                    validations: vec!["object.spec == oldObject.spec".into()],
                    ..want()
                }),
                Some(bound()),
                "validation 2 of 2, 1 found",
            ),
            (
                Some(Policy {
                    rules: vec!["|*|CREATE|pods".into()],
                    ..want()
                }),
                Some(bound()),
                "matches",
            ),
            (
                Some(want()),
                None,
                "Binding sg-controller-pods does not exist",
            ),
            (
                Some(want()),
                Some(Binding {
                    actions: vec!["Audit".into()],
                    ..bound()
                }),
                "must bind sg-controller-pods with Deny",
            ),
            (
                Some(want()),
                Some(Binding {
                    policy: "other".into(),
                    ..bound()
                }),
                "binds \"other\"",
            ),
        ];
        for (found, binding, says) in cases {
            let p = problem(&w, found.as_ref(), binding.as_ref()).expect(says);
            assert!(p.contains(says), "{p:?} should say {says:?}");
        }
    }
}
