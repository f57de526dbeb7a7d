//! The namespaces the operator lets sessionguard act in (`--namespaces`,
//! the chart's `controller.namespaces`): protect, record, evict and roll out
//! there and nowhere else. Empty means every namespace, as before the option
//! existed. The chart's admission policies hold the controller's token to the
//! same list, so a stolen token reaches no further than the controller would.

use std::collections::BTreeSet;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespaces(Option<BTreeSet<String>>);

impl Namespaces {
    /// Every namespace.
    pub fn all() -> Self {
        Self(None)
    }

    /// The namespaces named (entries trimmed; empty entries ignored); no
    /// name at all is every namespace. A name that no namespace can have is
    /// an error naming it.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for n in names
            .iter()
            .map(|n| n.as_ref().trim())
            .filter(|n| !n.is_empty())
        {
            if !is_dns_label(n) {
                return Err(format!(
                    "{n:?} is not a namespace name (lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit)"
                ));
            }
            set.insert(n.to_string());
        }
        Ok(Self((!set.is_empty()).then_some(set)))
    }

    pub fn contains(&self, ns: &str) -> bool {
        self.0.as_ref().is_none_or(|s| s.contains(ns))
    }

    /// The names, when limited.
    pub fn names(&self) -> Option<&BTreeSet<String>> {
        self.0.as_ref()
    }

    /// The validation the chart puts first in its policies on
    /// [`SCOPED_RESOURCES`] when limited (names sorted, as the chart sorts
    /// them): the controller checks at start-up that it is there.
    pub fn policy_expression(&self) -> Option<String> {
        let names = self.0.as_ref()?;
        let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        Some(format!("request.namespace in [{}]", quoted.join(", ")))
    }
}

/// What the chart's policies hold to the chosen namespaces: every resource the
/// controller writes in a namespace.
pub const SCOPED_RESOURCES: &[&str] = &[
    "pods",
    "poddisruptionbudgets",
    "statefulsets/status",
    "pods/eviction",
];

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_everywhere_and_a_list_is_only_there() {
        let all = Namespaces::parse::<&str>(&[]).unwrap();
        assert_eq!(all, Namespaces::all());
        assert!(all.contains("anything"));
        assert_eq!(Namespaces::parse(&["", " "]).unwrap(), Namespaces::all());
        let some = Namespaces::parse(&["ops", " db "]).unwrap();
        assert!(some.contains("ops") && some.contains("db"));
        assert!(!some.contains("default") && !some.contains("kube-system"));
        assert_eq!(some.names().unwrap().len(), 2);
        assert_eq!(
            some.policy_expression().as_deref(),
            Some("request.namespace in ['db', 'ops']"),
            "sorted, as the chart renders it"
        );
        assert_eq!(all.policy_expression(), None);
    }

    #[test]
    fn a_name_no_namespace_can_have_is_refused_by_name() {
        for bad in [
            "Ops",
            "-a",
            "a-",
            "a_b",
            "a.b",
            &"x".repeat(64),
            "ops'] || true || ['",
        ] {
            let e = Namespaces::parse(&[bad]).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
