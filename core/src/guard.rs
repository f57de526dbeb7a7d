//! Who may change sessionguard's labels and annotations on a pod.
//!
//! The interaction record decides when a pod is evicted, so only the
//! controller may write it. Users may change exactly one value, the
//! extension, and the requester is taken from the authenticated request and
//! written next to it (`extended-by`), never from client-written text.
//! Opt-in keys (`protect`, `no-pdb`, `eviction-exempt`) stay the user's.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{duration, keys};

pub type Map = BTreeMap<String, String>;

/// sessionguard keys a user may set or remove freely.
const USER_KEYS: [&str; 4] = [
    keys::PROTECT,
    keys::NO_PDB,
    keys::EVICTION_EXEMPT,
    keys::EXTENSION,
];

fn guarded(key: &str) -> bool {
    key.starts_with(keys::PREFIX) && !USER_KEYS.contains(&key)
}

/// Guarded keys whose value differs between `old` and `new` (added, changed
/// or removed), sorted.
pub fn changed_guarded(old: &Map, new: &Map) -> Vec<String> {
    let mut out: Vec<String> = new
        .iter()
        .filter(|(k, v)| guarded(k) && old.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(
            old.keys()
                .filter(|k| guarded(k) && !new.contains_key(*k))
                .cloned(),
        )
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What a pod update may do, as seen by the guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing of ours changed, or a privileged writer changed it.
    Allow,
    /// The extension changed (set to `Some`, or removed); `extended-by` must
    /// be the requester.
    Extension(Option<Duration>),
    Deny(String),
}

/// One pod update's labels and annotations, before and after.
pub struct Update<'a> {
    pub old_labels: &'a Map,
    pub new_labels: &'a Map,
    pub old_annotations: &'a Map,
    pub new_annotations: &'a Map,
}

/// Decides a pod update. `privileged` writers (the controller) may change
/// anything. For everyone else, only the extension may change; `extended-by`
/// may change only alongside it and must equal `requester` (the mutating
/// webhook sets it, so a client-written value never survives).
pub fn check(u: &Update, privileged: bool, requester: &str, max_extension: Duration) -> Verdict {
    if privileged {
        return Verdict::Allow;
    }
    let labels = changed_guarded(u.old_labels, u.new_labels);
    let mut annotations = changed_guarded(u.old_annotations, u.new_annotations);
    let ext_old = u.old_annotations.get(keys::EXTENSION);
    let ext_new = u.new_annotations.get(keys::EXTENSION);
    let ext_changed = ext_old != ext_new;
    if ext_changed {
        annotations.retain(|k| k != keys::EXTENDED_BY);
    }
    let mut touched: Vec<String> = labels.iter().map(|k| format!("label {k}")).collect();
    touched.extend(annotations.iter().map(|k| format!("annotation {k}")));
    if !touched.is_empty() {
        return Verdict::Deny(format!(
            "{} {} managed by sessionguard and may only be changed by its controller; \
             users may change only the annotation {} (use `kubectl sessions extend POD -d 30m`)",
            touched.join(", "),
            if touched.len() == 1 { "is" } else { "are" },
            keys::EXTENSION
        ));
    }
    if !ext_changed {
        return Verdict::Allow;
    }
    let by = u.new_annotations.get(keys::EXTENDED_BY).map(String::as_str);
    let Some(value) = ext_new.filter(|v| !v.trim().is_empty()) else {
        // Removing the extension: extended-by must not keep naming someone else.
        return match by {
            None => Verdict::Extension(None),
            Some(b) if b == requester => Verdict::Extension(None),
            Some(_) => Verdict::Deny(format!(
                "{} must be removed together with {}",
                keys::EXTENDED_BY,
                keys::EXTENSION
            )),
        };
    };
    let d = match extension_value(value, max_extension) {
        Ok(d) => d,
        Err(why) => return Verdict::Deny(why),
    };
    if by != Some(requester) {
        return Verdict::Deny(format!(
            "annotation {} must name the requester {requester:?}; it is recorded by \
             sessionguard's mutating webhook, which did not run for this request",
            keys::EXTENDED_BY
        ));
    }
    Verdict::Extension(Some(d))
}

/// The extension's value as the guard accepts it: a valid duration within
/// the cap, else the reason for the refusal.
fn extension_value(value: &str, max_extension: Duration) -> Result<Duration, String> {
    let d = duration::parse(value).map_err(|e| format!("annotation {}: {e}", keys::EXTENSION))?;
    if d > max_extension {
        return Err(format!(
            "annotation {}={value:?} exceeds the maximum extension of {} set by the cluster's \
             sessionguard (--webhook-max-extension); ask for at most that",
            keys::EXTENSION,
            duration::format(max_extension)
        ));
    }
    Ok(d)
}

/// Decides a pod creation: a new pod may carry the opt-in keys and an
/// extension (a pod template may ask for a longer life, within the same cap
/// as an update), but no part of the record and no `extended-by` (nobody
/// requested anything yet). Otherwise a pod created with a far-future TTL,
/// or someone else as interactor, would carry that into its first real
/// interaction; and an unparsable extension would be a value the controller
/// has to ignore.
pub fn check_create(
    labels: &Map,
    annotations: &Map,
    privileged: bool,
    max_extension: Duration,
) -> Verdict {
    if privileged {
        return Verdict::Allow;
    }
    let empty = Map::new();
    let mut touched: Vec<String> = changed_guarded(&empty, labels)
        .into_iter()
        .map(|k| format!("label {k}"))
        .collect();
    touched.extend(
        changed_guarded(&empty, annotations)
            .into_iter()
            .map(|k| format!("annotation {k}")),
    );
    if !touched.is_empty() {
        return Verdict::Deny(format!(
            "a new pod may not carry {}: sessionguard writes these when someone interacts with the \
             pod (remove them from the manifest or pod template)",
            touched.join(", ")
        ));
    }
    match annotations
        .get(keys::EXTENSION)
        .filter(|v| !v.trim().is_empty())
    {
        None => Verdict::Allow,
        Some(v) => match extension_value(v, max_extension) {
            Ok(_) => Verdict::Allow,
            Err(why) => Verdict::Deny(format!("a new pod's {why}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn verdict(old: &Map, new: &Map, privileged: bool) -> Verdict {
        let empty = Map::new();
        check(
            &Update {
                old_labels: &empty,
                new_labels: &empty,
                old_annotations: old,
                new_annotations: new,
            },
            privileged,
            "alice@example.com",
            7 * DAY,
        )
    }

    fn record() -> Map {
        map(&[
            (keys::FIRST_INTERACTION, "2026-11-24T01:00:00Z"),
            (keys::TTL, "10m0s"),
            (keys::INTERACTOR, "bob"),
            ("team", "ops"),
        ])
    }

    #[test]
    fn users_may_extend_and_extended_by_must_be_them() {
        let old = record();
        let mut new = old.clone();
        new.insert(keys::EXTENSION.into(), "1h30m".into());
        new.insert(keys::EXTENDED_BY.into(), "alice@example.com".into());
        assert_eq!(
            verdict(&old, &new, false),
            Verdict::Extension(Some(Duration::from_secs(5400)))
        );
        new.insert(keys::EXTENSION.into(), "2d".into());
        assert_eq!(
            verdict(&old, &new, false),
            Verdict::Extension(Some(2 * DAY))
        );

        new.insert(keys::EXTENDED_BY.into(), "mallory".into());
        let Verdict::Deny(why) = verdict(&old, &new, false) else {
            panic!("forged extended-by admitted")
        };
        assert!(why.contains("must name the requester"), "{why}");
    }

    #[test]
    fn bad_or_oversized_durations_are_refused_with_the_reason() {
        let old = record();
        for (value, want) in [("3x", "unknown unit"), ("8d", "exceeds the maximum")] {
            let mut new = old.clone();
            new.insert(keys::EXTENSION.into(), value.into());
            new.insert(keys::EXTENDED_BY.into(), "alice@example.com".into());
            let Verdict::Deny(why) = verdict(&old, &new, false) else {
                panic!("{value} admitted")
            };
            assert!(why.contains(want), "{value}: {why}");
        }
    }

    #[test]
    fn the_record_is_the_controllers() {
        let old = record();
        let mut new = old.clone();
        new.insert(
            keys::FIRST_INTERACTION.into(),
            "2030-01-01T00:00:00Z".into(),
        );
        new.remove(keys::INTERACTOR);
        let Verdict::Deny(why) = verdict(&old, &new, false) else {
            panic!("record edit admitted")
        };
        assert!(
            why.contains("annotation sessionguard.io/first-interaction, annotation sessionguard.io/interactor are managed"),
            "{why}"
        );
        assert_eq!(verdict(&old, &new, true), Verdict::Allow, "controller");

        let mut only_by = old.clone();
        only_by.insert(keys::EXTENDED_BY.into(), "alice@example.com".into());
        assert!(matches!(verdict(&old, &only_by, false), Verdict::Deny(_)));

        // Whether eviction applies is the controller's to say, both ways.
        let mut off = old.clone();
        off.insert(keys::EVICTION.into(), "off: namespace allowlisted".into());
        for (from, to) in [(&old, &off), (&off, &old)] {
            let Verdict::Deny(why) = verdict(from, to, false) else {
                panic!("eviction edit admitted")
            };
            assert!(
                why.contains("annotation sessionguard.io/eviction is managed"),
                "{why}"
            );
        }
    }

    #[test]
    fn unrelated_and_opt_in_changes_pass() {
        let old = record();
        let mut new = old.clone();
        new.insert("team".into(), "dev".into());
        new.insert(keys::NO_PDB.into(), "true".into());
        assert_eq!(verdict(&old, &new, false), Verdict::Allow);

        let empty = Map::new();
        let labels = map(&[(keys::INTERACTED, "true")]);
        let v = check(
            &Update {
                old_labels: &labels,
                new_labels: &empty,
                old_annotations: &empty,
                new_annotations: &empty,
            },
            false,
            "alice",
            DAY,
        );
        assert!(matches!(v, Verdict::Deny(w) if w.contains("label sessionguard.io/interacted")));
    }

    #[test]
    fn new_pods_carry_no_record() {
        let forged = map(&[(keys::TTL, "99999h"), (keys::EXTENSION, "1h")]);
        let Verdict::Deny(why) = check_create(&Map::new(), &forged, false, DAY) else {
            panic!("forged record admitted")
        };
        assert!(
            why.contains("annotation sessionguard.io/ttl") && !why.contains("extension"),
            "{why}"
        );
        let opt_in = map(&[(keys::PROTECT, "true")]);
        assert_eq!(
            check_create(&opt_in, &map(&[(keys::EXTENSION, "1h")]), false, DAY),
            Verdict::Allow
        );
        assert_eq!(
            check_create(&Map::new(), &forged, true, DAY),
            Verdict::Allow
        );
    }

    #[test]
    fn new_pods_extensions_are_validated_and_capped_and_name_no_requester() {
        let create = |pairs: &[(&str, &str)]| check_create(&Map::new(), &map(pairs), false, DAY);
        for (value, want) in [
            ("bogus", "invalid duration \"bogus\""),
            ("3x", "unknown unit"),
            ("2d", "exceeds the maximum extension of 24h0m0s"),
        ] {
            let Verdict::Deny(why) = create(&[(keys::EXTENSION, value)]) else {
                panic!("extension {value} admitted on create")
            };
            assert!(why.contains(want), "{value}: {why}");
        }
        assert_eq!(create(&[(keys::EXTENSION, "12h")]), Verdict::Allow);
        let Verdict::Deny(why) = create(&[(keys::EXTENSION, "1h"), (keys::EXTENDED_BY, "alice")])
        else {
            panic!("extended-by admitted on create")
        };
        assert!(
            why.contains("annotation sessionguard.io/extended-by"),
            "{why}"
        );
        for key in [
            keys::LAST_INTERACTOR,
            keys::LAST_COMMAND,
            keys::LAST_GROUPS,
            keys::LAST_CONTAINER,
        ] {
            assert!(
                matches!(create(&[(key, "x")]), Verdict::Deny(_)),
                "{key} must be the controller's"
            );
        }
    }

    #[test]
    fn removing_the_extension_removes_the_requester_too() {
        let mut old = record();
        old.insert(keys::EXTENSION.into(), "1h".into());
        old.insert(keys::EXTENDED_BY.into(), "bob".into());
        let mut new = old.clone();
        new.remove(keys::EXTENSION);
        new.remove(keys::EXTENDED_BY);
        assert_eq!(verdict(&old, &new, false), Verdict::Extension(None));
        new.insert(keys::EXTENDED_BY.into(), "bob".into());
        assert!(matches!(verdict(&old, &new, false), Verdict::Deny(_)));
    }
}
