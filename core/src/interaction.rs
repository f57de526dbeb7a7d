//! The interaction record on a pod: who touched it first and last, and when it
//! is due for eviction.
//!
//! The record lives in the pod's annotations and nowhere else, so every
//! controller replica, restart or failover computes the same eviction time
//! from the same values (kube-exec-controller kept its timers in memory).
//!
//! Times in the record are whole seconds (truncated when recorded). The
//! annotations can only hold whole seconds, and a record that kept the exact
//! time in memory would evict up to a second before the `evict-at` it
//! published, and at a different moment after a restart than before it.

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
    /// Who interacted at `last` (same forms as `interactor`).
    pub last_interactor: String,
    /// The TTL in force at the first interaction; later flag changes do not
    /// move existing timers.
    pub ttl: Duration,
    /// Requested by users (kubectl sessions extend); added to the TTL, at
    /// most the cluster's maximum (see [`Interaction::evict_at`]).
    pub extension: Option<Duration>,
    pub extended_by: Option<String>,
    /// Set when the extension annotation is present but unparsable: the
    /// record stays readable (evict-at without the extension) and the
    /// controller reports this text, instead of the pod never being evicted.
    pub extension_error: Option<String>,
}

/// How a terminal login's user is written: agents report numeric uids.
pub fn login_user(uid: u32) -> String {
    format!("uid:{uid}")
}

fn bad(key: &str, value: &str, why: impl std::fmt::Display) -> Error {
    Error::Report(format!("annotation {key}={value:?} is unreadable: {why}"))
}

/// `t` without its fraction of a second (see the module docs for why).
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn time(map: &BTreeMap<String, String>, key: &str) -> Result<Option<Timestamp>, Error> {
    map.get(key)
        .map(|v| {
            v.parse::<Timestamp>()
                .map(whole_seconds)
                .map_err(|e| bad(key, v, e))
        })
        .transpose()
}

impl Interaction {
    /// Reads the record; `Ok(None)` when the pod was never interacted with.
    /// An unreadable value is an error that names the annotation, so the
    /// controller can report it instead of silently evicting early or never.
    /// The extension is the exception: it is the one value users write, so a
    /// bad one (written while the webhook was down) is ignored and described
    /// in `extension_error` rather than freezing the whole record.
    pub fn from_annotations(map: &BTreeMap<String, String>) -> Result<Option<Self>, Error> {
        let Some(first) = time(map, keys::FIRST_INTERACTION)? else {
            return Ok(None);
        };
        let last = time(map, keys::LAST_INTERACTION)?.unwrap_or(first);
        let ttl = match map.get(keys::TTL) {
            Some(v) => duration::parse(v)?,
            None => return Err(bad(keys::TTL, "", "missing while first-interaction is set")),
        };
        let (extension, extension_error) =
            match map.get(keys::EXTENSION).filter(|v| !v.trim().is_empty()) {
                None => (None, None),
                Some(v) => match duration::parse(v) {
                    Ok(d) => (Some(d), None),
                    Err(e) => (
                        None,
                        Some(format!(
                            "annotation {}={v:?} is unreadable ({e}); evict-at ignores it",
                            keys::EXTENSION
                        )),
                    ),
                },
            };
        let interactor = map.get(keys::INTERACTOR).cloned().unwrap_or_default();
        Ok(Some(Self {
            first,
            last,
            // Records written before last-interactor existed: the first
            // interactor is the best we know.
            last_interactor: map
                .get(keys::LAST_INTERACTOR)
                .cloned()
                .unwrap_or_else(|| interactor.clone()),
            interactor,
            ttl,
            extension,
            extended_by: map.get(keys::EXTENDED_BY).cloned(),
            extension_error,
        }))
    }

    /// First interaction + TTL + extension, the extension clamped to
    /// `max_extension`. The webhook refuses larger values, but it fails open
    /// (failurePolicy Ignore) and privileged users skip it, so the controller
    /// applies the same cap itself: nobody gets past it by writing while the
    /// webhook is down.
    pub fn evict_at(&self, max_extension: Duration) -> Timestamp {
        let ext = self.extension.unwrap_or_default().min(max_extension);
        plus(self.first, self.ttl.saturating_add(ext))
    }

    /// What is wrong with the extension, for the controller to report: it is
    /// unreadable (ignored), or larger than `max_extension` (capped).
    pub fn extension_issue(&self, max_extension: Duration) -> Option<String> {
        if let Some(e) = &self.extension_error {
            return Some(e.clone());
        }
        let ext = self.extension?;
        (ext > max_extension).then(|| {
            format!(
                "annotation {}={} exceeds the maximum extension of {}; evict-at uses the maximum",
                keys::EXTENSION,
                duration::format(ext),
                duration::format(max_extension)
            )
        })
    }

    /// Folds one interaction (at `at`, by `who`) into an existing record, or
    /// starts one with `ttl`. The TTL never moves. The fold commutes
    /// (replicas may apply interactions in any order): first = min and
    /// `interactor` is whoever was first, last = max and `last_interactor`
    /// whoever was last; on a tie the smaller name is first and the greater
    /// name last.
    pub fn record(existing: Option<&Self>, at: Timestamp, who: &str, ttl: Duration) -> Self {
        let at = whole_seconds(at);
        match existing {
            Some(r) => {
                let earlier = at < r.first || (at == r.first && who < r.interactor.as_str());
                let later = at > r.last || (at == r.last && who > r.last_interactor.as_str());
                let pick =
                    |new: bool, old: &String| if new { who.to_string() } else { old.clone() };
                Self {
                    first: r.first.min(at),
                    interactor: pick(earlier, &r.interactor),
                    last: r.last.max(at),
                    last_interactor: pick(later, &r.last_interactor),
                    ..r.clone()
                }
            }
            None => Self {
                first: at,
                last: at,
                interactor: who.to_string(),
                last_interactor: who.to_string(),
                ttl,
                extension: None,
                extended_by: None,
                extension_error: None,
            },
        }
    }

    /// The annotations that represent this record. Not `evict-at`: whether
    /// there is an eviction time depends on whether drift eviction applies
    /// (`readback::eviction_annotations`, which builds on this). The extension is the
    /// user's and is not among them.
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(keys::FIRST_INTERACTION.into(), rfc3339(self.first));
        m.insert(keys::LAST_INTERACTION.into(), rfc3339(self.last));
        m.insert(keys::INTERACTOR.into(), self.interactor.clone());
        m.insert(keys::LAST_INTERACTOR.into(), self.last_interactor.clone());
        m.insert(keys::TTL.into(), duration::format(self.ttl));
        m
    }
}

/// RFC3339 in UTC with whole seconds: what `kubectl get -o yaml` readers
/// expect. Truncated, never rounded up: a published evict-at must never be
/// later than the moment the controller acts on.
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `t + d`, saturating at [`Timestamp::MAX`] (a huge TTL or grace period
/// means "never", not an error).
pub fn plus(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// How long from `now` until `t`; zero once `t` has passed.
pub fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::map;

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// The record as the controller publishes it where eviction applies.
    fn published(r: &Interaction) -> BTreeMap<String, String> {
        let mut a = r.to_annotations();
        a.insert(keys::EVICT_AT.into(), rfc3339(r.evict_at(WEEK)));
        a
    }

    #[test]
    fn first_login_starts_the_timer() {
        let r = Interaction::record(
            None,
            ts("2026-11-24T01:00:00Z"),
            &login_user(1000),
            Duration::from_secs(600),
        );
        let a = published(&r);
        assert_eq!(a["sessionguard.io/interactor"], "uid:1000");
        assert_eq!(a["sessionguard.io/last-interactor"], "uid:1000");
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
        assert_eq!(r.last_interactor, "uid:0");
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
        assert_eq!(r.evict_at(WEEK), ts("2026-11-24T02:40:00Z"));
        assert_eq!(r.extended_by.as_deref(), Some("oidc:https://idp/#bob"));
        assert_eq!(r.extension_issue(WEEK), None);
    }

    #[test]
    fn the_extension_is_capped_by_the_controller_too() {
        // Written while the webhook was down: 40 days.
        let a = map(&[
            ("sessionguard.io/first-interaction", "2026-11-24T01:00:00Z"),
            ("sessionguard.io/ttl", "10m"),
            ("sessionguard.io/extension", "40d"),
        ]);
        let r = Interaction::from_annotations(&a).unwrap().unwrap();
        assert_eq!(r.evict_at(WEEK), ts("2026-12-01T01:10:00Z"));
        assert_eq!(
            published(&r)["sessionguard.io/evict-at"],
            "2026-12-01T01:10:00Z"
        );
        let why = r.extension_issue(WEEK).unwrap();
        assert!(
            why.contains("exceeds the maximum extension of 168h0m0s"),
            "{why}"
        );
    }

    #[test]
    fn a_bad_extension_is_ignored_not_fatal() {
        let a = map(&[
            ("sessionguard.io/first-interaction", "2026-11-24T01:00:00Z"),
            ("sessionguard.io/ttl", "10m"),
            ("sessionguard.io/extension", "bogus"),
        ]);
        let r = Interaction::from_annotations(&a)
            .expect("the record stays readable")
            .unwrap();
        assert_eq!(r.extension, None);
        assert_eq!(r.evict_at(WEEK), ts("2026-11-24T01:10:00Z"));
        let why = r.extension_issue(WEEK).unwrap();
        assert!(
            why.contains("sessionguard.io/extension=\"bogus\" is unreadable"),
            "{why}"
        );
        // Folding a new interaction keeps working.
        let next = Interaction::record(Some(&r), ts("2026-11-24T01:05:00Z"), "bob", WEEK);
        assert_eq!(next.last, ts("2026-11-24T01:05:00Z"));
    }

    #[test]
    fn eviction_never_precedes_the_published_evict_at() {
        // An agent's session start has sub-second precision.
        let at = ts("2026-11-24T01:00:00.7Z");
        let r = Interaction::record(None, at, "uid:0", Duration::from_secs(600));
        let a = published(&r);
        let at_published: Timestamp = a["sessionguard.io/evict-at"].parse().unwrap();
        assert!(r.evict_at(WEEK) >= at_published);
        // ... and the record read back (a restarted controller) agrees exactly.
        let back = Interaction::from_annotations(&a).unwrap().unwrap();
        assert_eq!(back.evict_at(WEEK), r.evict_at(WEEK));
        // Re-folding the same exact start (every reconcile) changes nothing.
        let again = Interaction::record(Some(&back), at, "uid:0", Duration::from_secs(600));
        assert_eq!(again, back);
        // A sub-second TTL: published is truncated, eviction is later.
        let r = Interaction::record(None, at, "uid:0", Duration::from_millis(1500));
        let a = published(&r);
        assert_eq!(a["sessionguard.io/ttl"], "1.5s");
        assert_eq!(a["sessionguard.io/evict-at"], "2026-11-24T01:00:01Z");
        assert!(r.evict_at(WEEK) >= a["sessionguard.io/evict-at"].parse().unwrap());
        let back = Interaction::from_annotations(&a).unwrap().unwrap();
        assert_eq!(back.evict_at(WEEK), r.evict_at(WEEK));
    }

    #[test]
    fn last_interactor_follows_the_latest_and_the_fold_commutes() {
        let t = |s| ts(s);
        let ttl = Duration::from_secs(600);
        let a = Interaction::record(None, t("2026-11-24T01:00:00Z"), "alice", ttl);
        let ab = Interaction::record(Some(&a), t("2026-11-24T01:05:00Z"), "bob", ttl);
        assert_eq!(
            (ab.interactor.as_str(), ab.last_interactor.as_str()),
            ("alice", "bob")
        );
        // An older interaction folded late does not take over "last".
        let abz = Interaction::record(Some(&ab), t("2026-11-24T01:02:00Z"), "zed", ttl);
        assert_eq!(abz.last_interactor, "bob");
        // Same second, either order: the same result.
        let x = Interaction::record(Some(&ab), t("2026-11-24T01:05:00Z"), "carol", ttl);
        let b = Interaction::record(None, t("2026-11-24T01:05:00Z"), "carol", ttl);
        let y = Interaction::record(Some(&b), t("2026-11-24T01:05:00Z"), "bob", ttl);
        assert_eq!(x.last_interactor, y.last_interactor);
    }

    /// Every order of the same interactions gives the same whole record.
    fn every_order(interactions: &[(&str, &str)], ttl: Duration) -> Interaction {
        fn orders(items: &[usize]) -> Vec<Vec<usize>> {
            if items.len() <= 1 {
                return vec![items.to_vec()];
            }
            let mut out = vec![];
            for (i, &x) in items.iter().enumerate() {
                let mut rest = items.to_vec();
                rest.remove(i);
                for mut o in orders(&rest) {
                    o.insert(0, x);
                    out.push(o);
                }
            }
            out
        }
        let all = orders(&(0..interactions.len()).collect::<Vec<_>>());
        let fold = |order: &Vec<usize>| {
            order.iter().fold(None, |acc: Option<Interaction>, &i| {
                let (at, who) = interactions[i];
                Some(Interaction::record(acc.as_ref(), ts(at), who, ttl))
            })
        };
        let first = fold(&all[0]).unwrap();
        for order in &all {
            assert_eq!(fold(order).as_ref(), Some(&first), "order {order:?}");
        }
        first
    }

    #[test]
    fn the_whole_record_is_the_same_in_every_order() {
        let ttl = Duration::from_secs(600);
        // An agent-seen login that reaches the controller after a webhook
        // exec that happened later: the login is still the first interactor.
        let r = every_order(
            &[
                ("2026-11-24T01:05:00Z", "oidc:https://idp#alice"),
                ("2026-11-24T01:00:00.4Z", "uid:1000"),
                ("2026-11-24T01:09:00Z", "bob"),
            ],
            ttl,
        );
        assert_eq!(
            r,
            Interaction {
                first: ts("2026-11-24T01:00:00Z"),
                last: ts("2026-11-24T01:09:00Z"),
                interactor: "uid:1000".into(),
                last_interactor: "bob".into(),
                ttl,
                extension: None,
                extended_by: None,
                extension_error: None,
            }
        );
        // Ties on both ends: the smaller name is first, the greater last.
        let r = every_order(
            &[
                ("2026-11-24T01:00:00Z", "carol"),
                ("2026-11-24T01:00:00Z", "alice"),
                ("2026-11-24T01:00:00Z", "bob"),
            ],
            ttl,
        );
        assert_eq!(
            (r.interactor.as_str(), r.last_interactor.as_str()),
            ("alice", "carol")
        );
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
