//! The interaction record as the controller (and the webhook's record writer)
//! reads it back from a pod: re-validated, never trusted.
//!
//! The record decides when a pod is evicted, and what is on the pod may have
//! been written past the guard (webhook down, a privileged user) or by a node
//! whose clock is wrong. So every value is bounded again on every read:
//! `ttl` by the `--ttl` flag (lowering the flag shortens existing timers, so a
//! hand-written `100y` cannot outlive it), first and last interaction inside
//! [pod creation, now] (neither a record from before the pod existed nor one
//! from the future), and `evict-at` is always recomputed from those.
//!
//! An unreadable record is *restored*, not left alone: had it been left alone,
//! garbling one annotation would switch drift eviction off for the pod. The
//! values that still parse are kept; an unreadable first interaction becomes
//! the pod's creation time and an unreadable TTL the flag's, so the pod is
//! evicted at the latest at creation + TTL (+ a readable extension). What was
//! replaced is reported.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use crate::interaction::{Interaction, rfc3339};
use crate::{duration, keys};

/// The limits a record read back from a pod must fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The pod's creationTimestamp (the API server's clock); `None` only for
    /// objects that never went through an API server.
    pub created: Option<Timestamp>,
    /// The reader's clock (the controller's, never a node's).
    pub now: Timestamp,
    /// The `--ttl` flag.
    pub max_ttl: Duration,
}

impl Bounds {
    /// `t` moved into [pod creation, now]: a node whose clock runs behind
    /// cannot date a login before the pod existed (and so evict early), one
    /// that runs ahead cannot date it in the future (and so evict late).
    pub fn clamp(&self, t: Timestamp) -> Timestamp {
        let t = t.min(self.now);
        match self.created {
            Some(c) => t.max(c),
            None => t,
        }
    }
}

/// A record read back and bounded, with what had to be corrected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// `None` when the pod carries no record at all.
    pub record: Option<Interaction>,
    /// One sentence per corrected value (unreadable, out of bounds); empty
    /// when the record was fine.
    pub issues: Vec<String>,
}

/// Is there any part of a record on the pod? A record whose
/// first-interaction was deleted by hand is still a record (to be restored),
/// not a pod that was never interacted with.
fn has_record(map: &BTreeMap<String, String>) -> bool {
    [keys::FIRST_INTERACTION, keys::LAST_INTERACTION, keys::TTL]
        .iter()
        .any(|k| map.contains_key(*k))
}

/// Reads the record on a pod and bounds it (see the module docs).
pub fn read_back(map: &BTreeMap<String, String>, b: &Bounds) -> ReadBack {
    if !has_record(map) {
        return ReadBack::default();
    }
    let mut issues = vec![];
    let record = match Interaction::from_annotations(map) {
        Ok(Some(r)) => r,
        Ok(None) | Err(_) => {
            let r = restore(map, b);
            issues.push(format!(
                "the interaction record is unreadable ({}); restored with first-interaction {} and ttl {}",
                unreadable(map),
                rfc3339(r.first),
                duration::format(r.ttl)
            ));
            r
        }
    };
    ReadBack {
        record: Some(bound(record, b, &mut issues)),
        issues,
    }
}

/// The record with every value inside its bounds; each correction noted.
fn bound(mut r: Interaction, b: &Bounds, issues: &mut Vec<String>) -> Interaction {
    if r.ttl > b.max_ttl {
        issues.push(format!(
            "annotation {}={} exceeds --ttl {}; capped",
            keys::TTL,
            duration::format(r.ttl),
            duration::format(b.max_ttl)
        ));
        r.ttl = b.max_ttl;
    }
    for (key, t) in [
        (keys::FIRST_INTERACTION, &mut r.first),
        (keys::LAST_INTERACTION, &mut r.last),
    ] {
        let inside = b.clamp(*t);
        if inside != *t {
            issues.push(format!(
                "annotation {key}={} is outside [pod creation, now]; moved to {}",
                rfc3339(*t),
                rfc3339(inside)
            ));
            *t = inside;
        }
    }
    r.last = r.last.max(r.first);
    r
}

/// What still parses of an unreadable record, the rest filled in so the pod
/// is evicted no later than creation + TTL.
fn restore(map: &BTreeMap<String, String>, b: &Bounds) -> Interaction {
    let time = |k: &str| map.get(k).and_then(|v| v.parse::<Timestamp>().ok());
    let first = time(keys::FIRST_INTERACTION).unwrap_or(b.created.unwrap_or(b.now));
    let last = time(keys::LAST_INTERACTION).unwrap_or(first);
    let ttl = map
        .get(keys::TTL)
        .and_then(|v| duration::parse(v).ok())
        .unwrap_or(b.max_ttl);
    let who = |k: &str| map.get(k).cloned().unwrap_or_else(|| "unknown".into());
    let mut r = Interaction::record(None, first, &who(keys::INTERACTOR), ttl);
    r = Interaction::record(Some(&r), last, &who(keys::LAST_INTERACTOR), ttl);
    // The extension is read as from_annotations reads it (ignored if bad).
    let mut copy = map.clone();
    copy.insert(keys::FIRST_INTERACTION.into(), rfc3339(r.first));
    copy.insert(keys::TTL.into(), duration::format(ttl));
    if let Ok(Some(parsed)) = Interaction::from_annotations(&copy) {
        r.extension = parsed.extension;
        r.extended_by = parsed.extended_by;
        r.extension_error = parsed.extension_error;
    }
    r
}

/// The record's annotations that do not parse, for the report.
fn unreadable(map: &BTreeMap<String, String>) -> String {
    let mut bad = vec![];
    for k in [keys::FIRST_INTERACTION, keys::LAST_INTERACTION] {
        match map.get(k) {
            None if k == keys::FIRST_INTERACTION => bad.push(format!("{k} missing")),
            Some(v) if v.parse::<Timestamp>().is_err() => bad.push(format!("{k}={v:?}")),
            _ => {}
        }
    }
    match map.get(keys::TTL) {
        None => bad.push(format!("{} missing", keys::TTL)),
        Some(v) if duration::parse(v).is_err() => bad.push(format!("{}={v:?}", keys::TTL)),
        _ => {}
    }
    bad.join(", ")
}

/// Whether drift eviction applies to a pod, as the controller decides it
/// (flag, namespace allowlist, namespace label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction<'a> {
    On,
    /// Off, and why (e.g. `--evict-interacted is false`).
    Off(&'a str),
}

/// The value of [`keys::EVICTION`] when eviction is off.
pub fn off_value(why: &str) -> String {
    format!("off: {why}")
}

/// The reason in a [`keys::EVICTION`] value, if it says off.
pub fn off_reason(value: &str) -> Option<&str> {
    value.strip_prefix("off:").map(str::trim)
}

/// `evict-at` and `eviction` for a record: an eviction time only where
/// eviction applies, else no time and the reason. `None` removes the key.
pub fn eviction_annotations(
    r: &Interaction,
    eviction: Eviction,
    max_extension: Duration,
) -> [(&'static str, Option<String>); 2] {
    match eviction {
        Eviction::On => [
            (keys::EVICT_AT, Some(rfc3339(r.evict_at(max_extension)))),
            (keys::EVICTION, None),
        ],
        Eviction::Off(why) => [
            (keys::EVICT_AT, None),
            (keys::EVICTION, Some(off_value(why))),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::map;
    use crate::fixtures::ts;

    const TEN_MIN: Duration = Duration::from_secs(600);

    fn bounds() -> Bounds {
        Bounds {
            created: Some(ts("2026-11-24T00:00:00Z")),
            now: ts("2026-11-24T01:00:00Z"),
            max_ttl: TEN_MIN,
        }
    }

    #[test]
    fn a_ttl_over_the_flag_is_capped() {
        let b = read_back(
            &map(&[
                ("sessionguard.io/first-interaction", "2026-11-24T00:50:00Z"),
                ("sessionguard.io/ttl", "876000h"),
            ]),
            &bounds(),
        );
        let r = b.record.unwrap();
        assert_eq!(r.ttl, TEN_MIN);
        assert_eq!(r.evict_at(Duration::ZERO), ts("2026-11-24T01:00:00Z"));
        assert!(
            b.issues[0].contains("exceeds --ttl 10m0s"),
            "{:?}",
            b.issues
        );
    }

    #[test]
    fn times_outside_pod_creation_and_now_are_clamped() {
        // first in the future: it cannot push eviction later.
        let b = read_back(
            &map(&[
                ("sessionguard.io/first-interaction", "2099-01-01T00:00:00Z"),
                ("sessionguard.io/last-interaction", "2099-01-01T00:00:00Z"),
                ("sessionguard.io/ttl", "10m0s"),
            ]),
            &bounds(),
        );
        let r = b.record.unwrap();
        assert_eq!((r.first, r.last), (bounds().now, bounds().now));
        assert_eq!(b.issues.len(), 2, "{:?}", b.issues);
        // first before the pod existed: it cannot pull eviction earlier.
        let b = read_back(
            &map(&[
                ("sessionguard.io/first-interaction", "2020-01-01T00:00:00Z"),
                ("sessionguard.io/last-interaction", "2026-11-24T00:30:00Z"),
                ("sessionguard.io/ttl", "10m0s"),
            ]),
            &bounds(),
        );
        let r = b.record.unwrap();
        assert_eq!(r.first, ts("2026-11-24T00:00:00Z"));
        assert_eq!(r.last, ts("2026-11-24T00:30:00Z"));
        assert!(
            b.issues[0].contains("first-interaction=2020-01-01T00:00:00Z is outside"),
            "{:?}",
            b.issues
        );
        // In bounds: nothing to say.
        let b = read_back(
            &map(&[
                ("sessionguard.io/first-interaction", "2026-11-24T00:10:00Z"),
                ("sessionguard.io/ttl", "5m"),
            ]),
            &bounds(),
        );
        assert!(b.issues.is_empty(), "{:?}", b.issues);
    }

    #[test]
    fn an_unreadable_record_is_restored_to_evict_at_creation_plus_ttl() {
        let b = read_back(
            &map(&[
                ("sessionguard.io/first-interaction", "soon"),
                ("sessionguard.io/interactor", "alice"),
                ("sessionguard.io/ttl", "forever"),
                ("sessionguard.io/extension", "5m"),
            ]),
            &bounds(),
        );
        let r = b.record.unwrap();
        assert_eq!(r.first, ts("2026-11-24T00:00:00Z"), "pod creation");
        assert_eq!(r.ttl, TEN_MIN, "the flag's TTL");
        assert_eq!(r.interactor, "alice", "what still parses is kept");
        assert_eq!(r.evict_at(Duration::MAX), ts("2026-11-24T00:15:00Z"));
        let why = &b.issues[0];
        assert!(
            why.contains(r#"first-interaction="soon""#) && why.contains(r#"ttl="forever""#),
            "{why}"
        );
        // A record whose first-interaction was deleted is restored too.
        let b = read_back(&map(&[("sessionguard.io/ttl", "10m0s")]), &bounds());
        assert_eq!(b.record.unwrap().first, ts("2026-11-24T00:00:00Z"));
        assert!(
            b.issues[0].contains("first-interaction missing"),
            "{:?}",
            b.issues
        );
        // No record at all: nothing to restore.
        assert_eq!(read_back(&map(&[]), &bounds()), ReadBack::default());
    }

    #[test]
    fn only_where_eviction_applies_is_there_an_eviction_time() {
        let r = Interaction::record(None, ts("2026-11-24T00:50:00Z"), "uid:0", TEN_MIN);
        assert_eq!(
            eviction_annotations(&r, Eviction::On, Duration::ZERO),
            [
                (keys::EVICT_AT, Some("2026-11-24T01:00:00Z".into())),
                (keys::EVICTION, None)
            ]
        );
        let off = eviction_annotations(
            &r,
            Eviction::Off("--evict-interacted is false"),
            Duration::ZERO,
        );
        assert_eq!(off[0], (keys::EVICT_AT, None));
        let v = off[1].1.clone().unwrap();
        assert_eq!(v, "off: --evict-interacted is false");
        assert_eq!(off_reason(&v), Some("--evict-interacted is false"));
        assert_eq!(off_reason("2026-11-24T01:00:00Z"), None);
    }
}
