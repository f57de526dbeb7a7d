//! The interaction record on a pod: who touched it first and last, and when it
//! is due for eviction.
//!
//! The record lives in the pod's annotations and nowhere else, so every
//! controller replica, restart or failover computes the same eviction time
//! from the same values (kube-exec-controller kept its timers in memory).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::{Error, duration, keys};

/// A parsed interaction record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interaction {
    pub first: Timestamp,
    pub last: Timestamp,
    /// Who interacted first: a username from the API server, or `uid:<n>` for
    /// a terminal login the agent saw (the node knows uids, not user names).
    pub interactor: String,
    /// The TTL in force at the first interaction; later flag changes do not
    /// move existing timers.
    pub ttl: Duration,
    /// Requested by users (kubectl sessions extend); added to the TTL.
    pub extension: Option<Duration>,
    pub extended_by: Option<String>,
}

/// How a terminal login's user is written: agents report numeric uids.
pub fn login_user(uid: u32) -> String {
    format!("uid:{uid}")
}

fn bad(key: &str, value: &str, why: impl std::fmt::Display) -> Error {
    Error::Report(format!("annotation {key}={value:?} is unreadable: {why}"))
}

fn time(map: &BTreeMap<String, String>, key: &str) -> Result<Option<Timestamp>, Error> {
    map.get(key)
        .map(|v| v.parse::<Timestamp>().map_err(|e| bad(key, v, e)))
        .transpose()
}

impl Interaction {
    /// Reads the record; `Ok(None)` when the pod was never interacted with.
    /// An unreadable value is an error that names the annotation, so the
    /// controller can report it instead of silently evicting early or never.
    pub fn from_annotations(map: &BTreeMap<String, String>) -> Result<Option<Self>, Error> {
        let Some(first) = time(map, keys::FIRST_INTERACTION)? else {
            return Ok(None);
        };
        let last = time(map, keys::LAST_INTERACTION)?.unwrap_or(first);
        let ttl = match map.get(keys::TTL) {
            Some(v) => duration::parse(v)?,
            None => return Err(bad(keys::TTL, "", "missing while first-interaction is set")),
        };
        let extension = map
            .get(keys::EXTENSION)
            .filter(|v| !v.trim().is_empty())
            .map(|v| duration::parse(v))
            .transpose()?;
        Ok(Some(Self {
            first,
            last,
            interactor: map.get(keys::INTERACTOR).cloned().unwrap_or_default(),
            ttl,
            extension,
            extended_by: map.get(keys::EXTENDED_BY).cloned(),
        }))
    }

    /// First interaction + TTL + extension.
    pub fn evict_at(&self) -> Timestamp {
        let total = self.ttl + self.extension.unwrap_or_default();
        let total = SignedDuration::try_from(total).unwrap_or(SignedDuration::MAX);
        self.first.checked_add(total).unwrap_or(Timestamp::MAX)
    }

    /// Folds one interaction (at `at`, by `who`) into an existing record, or
    /// starts one with `ttl`. First interaction and TTL never move.
    pub fn record(existing: Option<&Self>, at: Timestamp, who: &str, ttl: Duration) -> Self {
        match existing {
            Some(r) => Self {
                last: r.last.max(at),
                first: r.first.min(at),
                ..r.clone()
            },
            None => Self {
                first: at,
                last: at,
                interactor: who.to_string(),
                ttl,
                extension: None,
                extended_by: None,
            },
        }
    }

    /// The annotations that represent this record (evict-at included, for
    /// people and tools; the controller always recomputes it).
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(keys::FIRST_INTERACTION.into(), rfc3339(self.first));
        m.insert(keys::LAST_INTERACTION.into(), rfc3339(self.last));
        m.insert(keys::INTERACTOR.into(), self.interactor.clone());
        m.insert(keys::TTL.into(), duration::format(self.ttl));
        m.insert(keys::EVICT_AT.into(), rfc3339(self.evict_at()));
        m
    }
}

/// RFC3339 in UTC with whole seconds: what `kubectl get -o yaml` readers expect.
pub fn rfc3339(t: Timestamp) -> String {
    t.round(jiff::Unit::Second)
        .unwrap_or(t)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn first_login_starts_the_timer() {
        let r = Interaction::record(
            None,
            ts("2026-11-24T01:00:00Z"),
            &login_user(1000),
            Duration::from_secs(600),
        );
        let a = r.to_annotations();
        assert_eq!(a["sessionguard.io/interactor"], "uid:1000");
        assert_eq!(a["sessionguard.io/ttl"], "10m0s");
        assert_eq!(a["sessionguard.io/evict-at"], "2026-11-24T01:10:00Z");
        assert_eq!(Interaction::from_annotations(&a).unwrap().unwrap(), r);
    }

    #[test]
    fn later_logins_move_last_not_first() {
        let a = map(&[
            ("sessionguard.io/first-interaction", "2026-11-24T01:00:00Z"),
            ("sessionguard.io/interactor", "alice@example.com"),
            ("sessionguard.io/ttl", "10m0s"),
        ]);
        let old = Interaction::from_annotations(&a).unwrap().unwrap();
        let r = Interaction::record(
            Some(&old),
            ts("2026-11-24T01:05:00Z"),
            "uid:0",
            Duration::from_secs(60),
        );
        assert_eq!(r.first, ts("2026-11-24T01:00:00Z"));
        assert_eq!(r.last, ts("2026-11-24T01:05:00Z"));
        assert_eq!(r.interactor, "alice@example.com");
        assert_eq!(
            r.ttl,
            Duration::from_secs(600),
            "TTL is fixed at first interaction"
        );
    }

    #[test]
    fn extension_pushes_evict_at() {
        let a = map(&[
            ("sessionguard.io/first-interaction", "2026-11-24T01:00:00Z"),
            ("sessionguard.io/ttl", "10m"),
            ("sessionguard.io/extension", "1h30m"),
            ("sessionguard.io/extended-by", "oidc:https://idp/#bob"),
        ]);
        let r = Interaction::from_annotations(&a).unwrap().unwrap();
        assert_eq!(r.evict_at(), ts("2026-11-24T02:40:00Z"));
        assert_eq!(r.extended_by.as_deref(), Some("oidc:https://idp/#bob"));
    }

    #[test]
    fn unreadable_records_name_the_annotation() {
        let none = Interaction::from_annotations(&BTreeMap::new()).unwrap();
        assert!(none.is_none());
        let cases = [
            (
                map(&[("sessionguard.io/first-interaction", "yesterday")]),
                "first-interaction",
            ),
            (
                map(&[
                    ("sessionguard.io/first-interaction", "2026-11-24T01:00:00Z"),
                    ("sessionguard.io/ttl", "3x"),
                ]),
                "3x",
            ),
            (
                map(&[("sessionguard.io/first-interaction", "2026-11-24T01:00:00Z")]),
                "ttl",
            ),
        ];
        for (m, want) in cases {
            let e = Interaction::from_annotations(&m).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }
}
