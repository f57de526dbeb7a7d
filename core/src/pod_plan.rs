//! The decision of a pod reconcile: from what is known about a pod (its
//! labels and annotations, its live logins, its PDB), decide whether it is
//! protected, the label and annotation patch, and when to look again.
//!
//! The controller gathers the inputs from its caches and hands the plan to its
//! writer; nothing here knows the Kubernetes client or the command line.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::cap::{self, Cap, Stage};
use crate::idle::{counts_for_protection, until_release};
use crate::interaction::{Interaction, login_user, plus, rfc3339, until};
use crate::protection::{Map, OptIn, protect_annotations, restore_annotations};
use crate::readback::{Bounds, Eviction, eviction_annotations, read_back};
use crate::{Session, keys, node_clock};

/// The controller's settings a plan depends on (from its flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Keep protection this long after the last session ends.
    pub release_grace: Duration,
    /// Release protection after this long even while sessions continue.
    pub max_protection: Option<Duration>,
    /// Warn at this percentage of the cap (0: no warning).
    pub max_protection_warn: u8,
    /// A login idle this long or longer stops counting for protection
    /// (`--idle-release`); activity makes it count again.
    pub idle_release: Option<Duration>,
    /// Record interactions (label + annotations) for logins.
    pub record_interactions: bool,
    /// Time from first interaction to eviction; also the cap on the TTL
    /// read back from a pod.
    pub ttl: Duration,
    /// Cap on a user's extension of the eviction time.
    pub max_extension: Duration,
}

/// The parts of a pod a plan reads.
#[derive(Clone, Copy, Debug)]
pub struct PodFacts<'a> {
    pub uid: &'a str,
    pub labels: &'a Map,
    pub annotations: &'a Map,
    /// creationTimestamp: the earliest a record on this pod can start.
    pub created: Option<Timestamp>,
}

/// Everything a decision depends on.
pub struct Inputs<'a> {
    pub pod: PodFacts<'a>,
    /// Live logins from a fresh report (consoles already removed), with
    /// their idle time as of `now`; idle ones are still logins for the
    /// interaction record, but may not count for protection.
    pub logins: &'a [Session],
    /// Their report's node-clock offset ([`crate::node_clock::offset`]):
    /// `started_at` is moved onto the controller's clock before it dates a record.
    pub node_offset: SignedDuration,
    /// Set when the node's agent has gone silent past the grace period.
    pub silent_since: Option<Timestamp>,
    /// When the report stops being fresh.
    pub stale_at: Option<Timestamp>,
    pub opt: OptIn,
    pub has_pdb: bool,
    pub last_login: Option<Timestamp>,
    pub now: Timestamp,
    pub settings: &'a Settings,
    /// Whether drift eviction applies to this pod: only then does the
    /// record carry an `evict-at`; otherwise it says why not.
    pub eviction: Eviction<'a>,
    /// The namespace's `sessionguard.io/max-protection` annotation, if any:
    /// it may lower the cap (see [`cap::effective`]).
    pub namespace_cap: Option<&'a str>,
}

/// Why protection ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Release {
    SessionsEnded,
    AgentSilent(Timestamp),
    Capped(Cap),
    /// Every login left has been idle for `--idle-release` or longer: these.
    Idle(Vec<Session>),
    NoPdb,
    OptedOut,
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub protect: bool,
    pub release: Option<Release>,
    /// Merge-patch values for labels and annotations (None removes).
    pub labels: BTreeMap<String, Option<String>>,
    pub annotations: BTreeMap<String, Option<String>>,
    /// Set when the interaction record changed because of a new extension.
    pub extended: Option<Interaction>,
    /// The record as it will be after the patch.
    pub interaction: Option<Interaction>,
    pub interaction_error: Option<String>,
    pub requeue: Option<Duration>,
    /// Set while protection is past the warning fraction of its cap.
    pub expiring: Option<Expiring>,
    /// An unreadable namespace cap, ignored.
    pub cap_issue: Option<String>,
}

/// Protection ends at `end` because of `cap`, while logins continue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiring {
    pub end: Timestamp,
    pub cap: Cap,
}

pub fn plan(i: &Inputs) -> Plan {
    let mut p = Plan::default();
    let mut wake: Vec<Timestamp> = Vec::new();
    protection(i, &mut p, &mut wake);
    interaction_record(i, &mut p);
    p.requeue = wake
        .into_iter()
        .min()
        .map(|t| until(i.now, t) + Duration::from_millis(50));
    p
}

/// Whether the pod is protected, the protection labels and annotations, why
/// protection ends, and when a timer (grace, cap, staleness) runs out.
fn protection(i: &Inputs, p: &mut Plan, wake: &mut Vec<Timestamp>) {
    let current = i.pod.annotations;
    let release = i.settings.idle_release;
    let (counting, idle): (Vec<&Session>, Vec<&Session>) = i
        .logins
        .iter()
        .partition(|s| counts_for_protection(s, release));
    // A login that counts stops counting when its idle time reaches the
    // release; its idle time grows between reports, so look again then.
    wake.extend(
        counting
            .iter()
            .filter_map(|s| until_release(s, release))
            .map(|d| plus(i.now, d)),
    );
    let active = !counting.is_empty();
    let in_grace = !active
        && i.has_pdb
        && i.last_login
            .is_some_and(|t| i.now < plus(t, i.settings.release_grace));
    let since = current
        .get(keys::PROTECTED_SINCE)
        .and_then(|v| v.parse::<Timestamp>().ok());
    let (cap, cap_issue) = cap::effective(i.settings.max_protection, i.namespace_cap);
    p.cap_issue = cap_issue;
    let capped = match (cap, since) {
        (Some(cap), Some(since)) if active => {
            match cap::stage(since, cap.limit, i.settings.max_protection_warn, i.now) {
                Stage::Expired => Some(cap),
                Stage::Warning { end } => {
                    p.expiring = Some(Expiring { end, cap });
                    wake.push(end);
                    None
                }
                Stage::Before { next } => {
                    wake.push(next);
                    None
                }
            }
        }
        _ => None,
    };
    p.protect = i.opt.wants_protection() && capped.is_none() && (active || in_grace);
    if !p.protect {
        p.expiring = None;
    }
    if in_grace && p.protect {
        wake.push(plus(
            i.last_login.unwrap_or(i.now),
            i.settings.release_grace,
        ));
    }
    if let Some(stale) = i.stale_at.filter(|_| !i.logins.is_empty()) {
        wake.push(stale);
    }

    if p.protect {
        let uid = i.pod.uid.to_string();
        if i.pod.labels.get(keys::POD_UID_LABEL) != Some(&uid) {
            p.labels.insert(keys::POD_UID_LABEL.into(), Some(uid));
        }
        p.annotations.extend(protect_annotations(current));
        if since.is_none() {
            p.annotations
                .insert(keys::PROTECTED_SINCE.into(), Some(rfc3339(i.now)));
        }
    } else {
        p.annotations.extend(restore_annotations(current));
        // protected-since survives a cap while sessions continue, so the cap
        // is not re-armed by the next reconcile; it goes with the last session
        // (an idle one included: going idle does not restart the cap).
        if i.logins.is_empty() && since.is_some() {
            p.annotations.insert(keys::PROTECTED_SINCE.into(), None);
        }
        if i.has_pdb || current.contains_key(keys::SAVED_ANNOTATIONS) {
            p.release = Some(if let Some(cap) = capped {
                Release::Capped(cap)
            } else if !i.opt.protect {
                Release::OptedOut
            } else if i.opt.no_pdb {
                Release::NoPdb
            } else if let Some(t) = i.silent_since {
                Release::AgentSilent(t)
            } else if !idle.is_empty() {
                Release::Idle(idle.into_iter().cloned().collect())
            } else {
                Release::SessionsEnded
            });
        }
    }
}

/// The interaction record after this reconcile (read back and bounded,
/// logins folded in, extension applied), and what of it changed.
fn interaction_record(i: &Inputs, p: &mut Plan) {
    let current = i.pod.annotations;
    let bounds = Bounds {
        created: i.pod.created,
        now: i.now,
        max_ttl: i.settings.ttl,
    };
    let back = read_back(current, &bounds);
    let mut issues = back.issues;
    let existing = back.record;
    let mut record = existing.clone();
    if i.settings.record_interactions && !i.logins.is_empty() {
        // started_at is the node's clock: moved onto ours, then bounded, before
        // it can move a timer.
        let at = |s: &Session| {
            bounds.clamp(node_clock::on_controller_clock(s.started_at, i.node_offset))
        };
        let first = i.logins.iter().min_by_key(|s| at(s)).expect("non-empty");
        let last = i.logins.iter().max_by_key(|s| at(s)).expect("non-empty");
        let r = Interaction::record(
            existing.as_ref(),
            at(first),
            &login_user(first.uid),
            i.settings.ttl,
        );
        record = Some(Interaction::record(
            Some(&r),
            at(last),
            &login_user(last.uid),
            i.settings.ttl,
        ));
        if i.pod.labels.get(keys::INTERACTED).map(String::as_str) != Some("true") {
            p.labels
                .insert(keys::INTERACTED.into(), Some("true".into()));
        }
    }
    if let Some(r) = &record {
        let max_ext = i.settings.max_extension;
        let desired = r
            .to_annotations()
            .into_iter()
            .map(|(k, v)| (k.to_string(), Some(v)))
            .chain(
                eviction_annotations(r, i.eviction, max_ext)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v)),
            );
        for (k, v) in desired {
            if current.get(&k) != v.as_ref() {
                p.annotations.insert(k, v);
            }
        }
        // Someone changed the extension (kubectl sessions extend): evict-at moves.
        let stored_evict_at = current.get(keys::EVICT_AT);
        if existing.is_some()
            && r.extension.is_some()
            && stored_evict_at.is_some_and(|s| *s != rfc3339(r.evict_at(max_ext)))
        {
            p.extended = Some(r.clone());
        }
        // A bad or oversized extension does not freeze the record (evict-at
        // ignores or caps it); it is reported through the same path.
        issues.extend(r.extension_issue(max_ext));
    }
    p.interaction_error = (!issues.is_empty()).then(|| issues.join("; "));
    p.interaction = record;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{PodFixture, pod, session, settings, ts};

    fn run(pod: &PodFixture, logins: &[Session], has_pdb: bool, cfg: &Settings) -> Plan {
        run_with(pod, logins, has_pdb, cfg, Eviction::On)
    }

    fn run_with(
        pod: &PodFixture,
        logins: &[Session],
        has_pdb: bool,
        cfg: &Settings,
        eviction: Eviction,
    ) -> Plan {
        run_skewed(pod, logins, has_pdb, cfg, eviction, SignedDuration::ZERO)
    }

    fn run_skewed(
        pod: &PodFixture,
        logins: &[Session],
        has_pdb: bool,
        cfg: &Settings,
        eviction: Eviction,
        node_offset: SignedDuration,
    ) -> Plan {
        plan(&Inputs {
            pod: pod.facts(),
            logins,
            node_offset,
            silent_since: None,
            stale_at: Some(ts("2026-11-24T01:02:00Z")),
            opt: OptIn::from_objects([(&pod.labels, &pod.annotations)]),
            has_pdb,
            last_login: Some(ts("2026-11-24T01:00:00Z")),
            now: ts("2026-11-24T01:00:00Z"),
            settings: cfg,
            eviction,
            namespace_cap: None,
        })
    }

    #[test]
    fn a_login_on_a_protected_pod_protects_and_records() {
        let cfg = settings();
        let p = pod("web-0").protected().build();
        let plan = run(
            &p,
            &[session().uid(1000).at("2026-11-24T00:59:00Z").build()],
            false,
            &cfg,
        );
        assert!(plan.protect);
        assert_eq!(plan.labels[keys::POD_UID_LABEL], Some(p.uid.clone()));
        assert_eq!(plan.labels[keys::INTERACTED].as_deref(), Some("true"));
        assert_eq!(
            plan.annotations[keys::CA_SAFE_TO_EVICT].as_deref(),
            Some("false")
        );
        assert_eq!(
            plan.annotations[keys::KARPENTER_DO_NOT_DISRUPT].as_deref(),
            Some("true")
        );
        assert_eq!(
            plan.annotations[keys::INTERACTOR].as_deref(),
            Some("uid:1000")
        );
        assert_eq!(
            plan.annotations[keys::EVICT_AT].as_deref(),
            Some("2026-11-24T01:09:00Z")
        );
        assert_eq!(
            plan.requeue,
            Some(Duration::from_millis(120_050)),
            "look again when the report goes stale"
        );
    }

    #[test]
    fn consoles_are_not_passed_in_and_unprotected_pods_are_only_recorded() {
        let cfg = settings();
        let p = pod("debug").build();
        let plan = run(&p, &[session().uid(0).build()], false, &cfg);
        assert!(!plan.protect && plan.release.is_none());
        assert_eq!(plan.annotations[keys::INTERACTOR].as_deref(), Some("uid:0"));
        assert!(!plan.annotations.contains_key(keys::CA_SAFE_TO_EVICT));
    }

    #[test]
    fn last_logout_releases_and_restores() {
        let cfg = settings();
        let p = pod("web-0").protected().was_protected().build();
        let plan = run(&p, &[], true, &cfg);
        assert!(!plan.protect);
        assert_eq!(plan.release, Some(Release::SessionsEnded));
        assert_eq!(plan.annotations[keys::CA_SAFE_TO_EVICT], None);
        assert_eq!(plan.annotations[keys::SAVED_ANNOTATIONS], None);
        assert_eq!(plan.annotations[keys::PROTECTED_SINCE], None);
    }

    #[test]
    fn release_grace_keeps_the_pdb_briefly() {
        let mut cfg = settings();
        cfg.release_grace = Duration::from_secs(5);
        let p = pod("web-0").protected().was_protected().build();
        let plan = run(&p, &[], true, &cfg);
        assert!(plan.protect && plan.release.is_none());
        assert_eq!(plan.requeue, Some(Duration::from_millis(5_050)));
    }

    #[test]
    fn no_pdb_and_cap_release_with_their_reason() {
        let cfg = settings();
        let p = pod("web-0").protected().no_pdb().was_protected().build();
        assert_eq!(
            run(&p, &[session().build()], true, &cfg).release,
            Some(Release::NoPdb)
        );

        let mut cfg = settings();
        cfg.max_protection = Some(Duration::from_secs(60));
        let p = pod("web-0").protected().was_protected().build(); // since 00:58
        let plan = run(&p, &[session().build()], true, &cfg);
        assert_eq!(
            plan.release,
            Some(Release::Capped(Cap {
                limit: Duration::from_secs(60),
                from: crate::cap::CapFrom::Flag
            }))
        );
        assert!(
            !plan.annotations.contains_key(keys::PROTECTED_SINCE),
            "cap stays armed while logged in"
        );
    }

    #[test]
    fn a_warning_before_the_cap_and_a_namespace_may_lower_it() {
        // protected since 00:58, now 01:00.
        let p = pod("web-0").protected().was_protected().build();
        let mut cfg = settings();
        cfg.max_protection = Some(Duration::from_secs(150)); // ends 01:00:30, warns at 01:00:00
        let plan = run(&p, &[session().build()], true, &cfg);
        assert!(plan.protect && plan.release.is_none());
        let e = plan.expiring.expect("past 80% of the cap");
        assert_eq!(e.end, ts("2026-11-24T01:00:30Z"));
        assert_eq!(
            plan.requeue,
            Some(Duration::from_millis(30_050)),
            "wake at the cap"
        );

        cfg.max_protection = Some(Duration::from_secs(3600));
        let plan = run(&p, &[session().build()], true, &cfg);
        assert_eq!(plan.expiring, None, "2 minutes into an hour");
        let logins = [session().build()];
        let lowered = plan_for(&p, &logins, &cfg, Some("1m"));
        assert_eq!(
            lowered.release,
            Some(Release::Capped(Cap {
                limit: Duration::from_secs(60),
                from: crate::cap::CapFrom::Namespace
            })),
            "the namespace's 1m cap has passed"
        );
        let higher = plan_for(&p, &logins, &cfg, Some("48h"));
        assert!(
            higher.protect && higher.cap_issue.is_none(),
            "never raised, never an error"
        );
        let bad = plan_for(&p, &logins, &cfg, Some("soon"));
        assert!(bad.protect, "the flag's cap still applies");
        assert!(bad.cap_issue.unwrap().contains("\"soon\""));
    }

    fn plan_for(
        fixture: &PodFixture,
        logins: &[Session],
        cfg: &Settings,
        namespace_cap: Option<&str>,
    ) -> Plan {
        plan(&Inputs {
            pod: fixture.facts(),
            logins,
            silent_since: None,
            stale_at: Some(ts("2026-11-24T01:02:00Z")),
            opt: OptIn::from_objects([(&fixture.labels, &fixture.annotations)]),
            has_pdb: true,
            last_login: Some(ts("2026-11-24T01:00:00Z")),
            now: ts("2026-11-24T01:00:00Z"),
            settings: cfg,
            eviction: Eviction::On,
            namespace_cap,
            node_offset: SignedDuration::ZERO,
        })
    }

    #[test]
    fn a_login_idle_past_the_release_stops_protecting_and_activity_brings_it_back() {
        let mut cfg = settings();
        cfg.idle_release = Some(Duration::from_secs(180));
        let p = pod("web-0").protected().was_protected().build();
        let idle = session().uid(1000).tty("pts/3").idle(200).build();
        let plan = run(&p, std::slice::from_ref(&idle), true, &cfg);
        assert!(!plan.protect);
        assert_eq!(plan.release, Some(Release::Idle(vec![idle.clone()])));
        assert_eq!(plan.annotations[keys::CA_SAFE_TO_EVICT], None, "restored");
        assert!(
            !plan.annotations.contains_key(keys::PROTECTED_SINCE),
            "going idle does not restart --max-protection"
        );
        assert_eq!(
            plan.annotations[keys::LAST_INTERACTION].as_deref(),
            Some("2026-11-24T00:59:30Z"),
            "an idle login is still a login for the record"
        );
        // Typing: the next report says 0 and the pod is protected again.
        let p = pod("web-0").protected().build();
        let active = Session {
            idle_seconds: 0,
            ..idle.clone()
        };
        let plan = run(&p, &[active], false, &cfg);
        assert!(plan.protect && plan.release.is_none());
        // Off by default: the same idle login protects.
        let plan = run(&p, std::slice::from_ref(&idle), false, &settings());
        assert!(plan.protect);
    }

    #[test]
    fn an_idle_login_counts_until_the_release_and_the_plan_looks_again_then() {
        let mut cfg = settings();
        cfg.idle_release = Some(Duration::from_secs(60));
        let p = pod("web-0").protected().build();
        let plan = run(&p, &[session().idle(45).build()], false, &cfg);
        assert!(plan.protect);
        assert_eq!(plan.requeue, Some(Duration::from_millis(15_050)));
        // One active login keeps the pod protected beside an idle one.
        let plan = run(
            &p,
            &[session().idle(600).build(), session().tty("pts/1").build()],
            false,
            &cfg,
        );
        assert!(plan.protect && plan.release.is_none());
    }

    #[test]
    fn release_grace_also_follows_the_last_login_that_counted() {
        let mut cfg = settings();
        cfg.idle_release = Some(Duration::from_secs(60));
        cfg.release_grace = Duration::from_secs(5);
        let p = pod("web-0").protected().was_protected().build();
        let plan = run(&p, &[session().idle(61).build()], true, &cfg);
        assert!(
            plan.protect,
            "within the grace after the last counting login"
        );
        assert_eq!(plan.requeue, Some(Duration::from_millis(5_050)));
    }

    #[test]
    fn an_extension_moves_evict_at() {
        let cfg = settings();
        let p = pod("web-0")
            .annotated(keys::FIRST_INTERACTION, "2026-11-24T00:50:00Z")
            .annotated(keys::TTL, "10m0s")
            .annotated(keys::EVICT_AT, "2026-11-24T01:00:00Z")
            .annotated(keys::EXTENSION, "1h")
            .build();
        let plan = run(&p, &[], false, &cfg);
        assert_eq!(
            plan.annotations[keys::EVICT_AT].as_deref(),
            Some("2026-11-24T02:00:00Z")
        );
        assert!(plan.extended.is_some());
    }

    #[test]
    fn a_bad_or_oversized_extension_is_reported_and_the_login_still_recorded() {
        let cfg = settings(); // max extension 7d
        let base = || {
            pod("web-0")
                .annotated(keys::FIRST_INTERACTION, "2026-11-24T00:50:00Z")
                .annotated(keys::LAST_INTERACTION, "2026-11-24T00:50:00Z")
                .annotated(keys::INTERACTOR, "alice")
                .annotated(keys::TTL, "10m0s")
                .annotated(keys::EVICT_AT, "2026-11-24T01:00:00Z")
        };
        // Written while the webhook was down: not a duration.
        let p = base().annotated(keys::EXTENSION, "bogus").build();
        let plan = run(&p, &[session().uid(1000).build()], false, &cfg);
        let err = plan.interaction_error.expect("reported");
        assert!(err.contains("bogus"), "{err}");
        assert_eq!(
            plan.annotations[keys::LAST_INTERACTION].as_deref(),
            Some("2026-11-24T00:59:30Z"),
            "the login is still recorded"
        );
        assert!(
            !plan.annotations.contains_key(keys::EVICT_AT),
            "evict-at stays first + ttl: the bad extension is ignored"
        );
        // Far beyond the cap: evict-at gets first + ttl + 7d at most.
        let p = base().annotated(keys::EXTENSION, "9999h").build();
        let plan = run(&p, &[session().uid(1000).build()], false, &cfg);
        assert!(plan.interaction_error.is_some(), "over the cap is reported");
        assert_eq!(
            plan.annotations[keys::EVICT_AT].as_deref(),
            Some("2026-12-01T01:00:00Z")
        );
    }

    #[test]
    fn an_unreadable_record_is_restored_and_reported() {
        let cfg = settings();
        let p = pod("web-0")
            .created("2026-11-24T00:30:00Z")
            .annotated(keys::FIRST_INTERACTION, "soon")
            .annotated(keys::TTL, "10m0s")
            .build();
        let plan = run(&p, &[session().build()], false, &cfg);
        let err = plan.interaction_error.unwrap();
        assert!(err.contains(r#"first-interaction="soon""#), "{err}");
        // Evicted at creation + TTL, not never.
        assert_eq!(
            plan.annotations[keys::FIRST_INTERACTION].as_deref(),
            Some("2026-11-24T00:30:00Z")
        );
        assert_eq!(
            plan.annotations[keys::EVICT_AT].as_deref(),
            Some("2026-11-24T00:40:00Z")
        );
        assert_eq!(
            plan.annotations[keys::LAST_INTERACTION].as_deref(),
            Some("2026-11-24T00:59:30Z"),
            "the login is folded into the restored record"
        );
    }

    #[test]
    fn a_hand_edited_record_is_bounded_and_evict_at_recomputed() {
        let cfg = settings(); // --ttl 10m
        let p = pod("web-0")
            .created("2026-11-24T00:30:00Z")
            .annotated(keys::FIRST_INTERACTION, "2099-01-01T00:00:00Z")
            .annotated(keys::LAST_INTERACTION, "2099-01-01T00:00:00Z")
            .annotated(keys::INTERACTOR, "alice")
            .annotated(keys::TTL, "876000h")
            .annotated(keys::EVICT_AT, "2199-01-01T00:00:00Z")
            .build();
        let plan = run(&p, &[], false, &cfg);
        let a = |k: &str| plan.annotations[k].clone();
        assert_eq!(
            a(keys::FIRST_INTERACTION).as_deref(),
            Some("2026-11-24T01:00:00Z")
        );
        assert_eq!(a(keys::TTL).as_deref(), Some("10m0s"));
        assert_eq!(a(keys::EVICT_AT).as_deref(), Some("2026-11-24T01:10:00Z"));
        assert!(plan.interaction_error.unwrap().contains("exceeds --ttl"));
        // Only evict-at edited: put back.
        let p = pod("web-0")
            .annotated(keys::FIRST_INTERACTION, "2026-11-24T00:50:00Z")
            .annotated(keys::TTL, "10m0s")
            .annotated(keys::EVICT_AT, "2199-01-01T00:00:00Z")
            .build();
        let plan = run(&p, &[], false, &cfg);
        assert_eq!(
            plan.annotations[keys::EVICT_AT].as_deref(),
            Some("2026-11-24T01:00:00Z")
        );
    }

    #[test]
    fn a_login_dated_by_a_wrong_node_clock_is_bounded() {
        let cfg = settings();
        let p = pod("web-0").created("2026-11-24T00:55:00Z").build();
        // The node's clock runs an hour behind: the login seems older than the pod.
        let behind = session().at("2026-11-23T23:59:30Z").build();
        let plan = run(&p, &[behind], false, &cfg);
        assert_eq!(
            plan.annotations[keys::EVICT_AT].as_deref(),
            Some("2026-11-24T01:05:00Z"),
            "no earlier than pod creation + TTL"
        );
        // ... an hour ahead: the login seems to be in the future.
        let ahead = session().at("2026-11-24T01:59:30Z").build();
        let plan = run(&p, &[ahead], false, &cfg);
        assert_eq!(
            plan.annotations[keys::FIRST_INTERACTION].as_deref(),
            Some("2026-11-24T01:00:00Z")
        );
    }

    /// The pod is hours old, so the [creation, now] bounds cannot hide the
    /// skew: only the report's offset keeps a lagging node from evicting early.
    #[test]
    fn a_node_clock_behind_an_old_pod_does_not_move_evict_at_earlier() {
        let cfg = settings();
        let p = pod("web-0").created("2026-11-23T20:00:00Z").build();
        // The login began at 00:59:30 on our clock; the node, 20 minutes
        // behind, dates it 00:39:30, and its report (generated 00:39:50 on its
        // clock) reached us at 00:59:51.
        let login = session().at("2026-11-24T00:39:30Z").build();
        let offset = node_clock::offset(ts("2026-11-24T00:59:51Z"), ts("2026-11-24T00:39:50Z"));
        let plan = run_skewed(
            &p,
            std::slice::from_ref(&login),
            false,
            &cfg,
            Eviction::On,
            offset,
        );
        assert_eq!(
            plan.annotations[keys::FIRST_INTERACTION].as_deref(),
            Some("2026-11-24T00:59:31Z"),
            "the login's start on our clock, one second of latency late"
        );
        assert_eq!(
            plan.annotations[keys::EVICT_AT].as_deref(),
            Some("2026-11-24T01:09:31Z")
        );
        // Without the offset it would have been 20 minutes early.
        let naive = run(&p, &[login], false, &cfg);
        assert_eq!(
            naive.annotations[keys::EVICT_AT].as_deref(),
            Some("2026-11-24T00:49:30Z")
        );
    }

    #[test]
    fn with_eviction_off_there_is_no_evict_at_but_the_reason() {
        let cfg = settings();
        let p = pod("web-0").build();
        let off = Eviction::Off("--evict-interacted is false");
        let plan = run_with(&p, &[session().build()], false, &cfg, off);
        assert!(plan.annotations.contains_key(keys::FIRST_INTERACTION));
        assert!(!plan.annotations.contains_key(keys::EVICT_AT));
        assert_eq!(
            plan.annotations[keys::EVICTION].as_deref(),
            Some("off: --evict-interacted is false")
        );
        // A record from before (or from when eviction applied) loses its evict-at.
        let p = pod("web-0")
            .annotated(keys::FIRST_INTERACTION, "2026-11-24T00:50:00Z")
            .annotated(keys::TTL, "10m0s")
            .annotated(keys::EVICT_AT, "2026-11-24T01:00:00Z")
            .build();
        let plan = run_with(&p, &[], false, &cfg, off);
        assert_eq!(plan.annotations[keys::EVICT_AT], None, "removed");
        // Turned on again: evict-at back, the reason gone.
        let p = pod("web-0")
            .annotated(keys::FIRST_INTERACTION, "2026-11-24T00:50:00Z")
            .annotated(keys::TTL, "10m0s")
            .annotated(keys::EVICTION, "off: namespace allowlisted")
            .build();
        let plan = run(&p, &[], false, &cfg);
        assert_eq!(plan.annotations[keys::EVICTION], None);
        assert_eq!(
            plan.annotations[keys::EVICT_AT].as_deref(),
            Some("2026-11-24T01:00:00Z")
        );
    }
}
