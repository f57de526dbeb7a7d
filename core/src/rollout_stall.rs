//! A rollout that waits on the same thing for too long is stuck, and says so.
//!
//! Waiting is normal for a moment (a replacement starting, an eviction refused
//! once); waiting on one pod that terminates for ever, a replacement that never
//! becomes Ready, or a PDB that is not ours answering 429 to every eviction is
//! not, and must not be a silent loop. Each reconcile hands what the rollout is
//! blocked on (or nothing); the stall keeps when that began, and is stuck once
//! it has lasted the threshold. Waiting for a logout is not a stall: it is the
//! product working.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// What a rollout has been blocked on, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// What it waits on, stable across reconciles (a pod, and why).
    pub on: String,
    /// The latest words for it, for events (an API server's message may vary).
    pub why: String,
    pub since: Timestamp,
    /// The stuck event went out for this stall.
    pub announced: bool,
}

/// What this reconcile found the rollout blocked on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub on: String,
    pub why: String,
}

/// What to say after this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Say {
    Nothing,
    /// Became stuck: a Warning event with this text.
    Stuck(String),
    /// A stuck rollout moves again.
    Resumed(String),
}

/// The stall after this reconcile, and what to say. `blocked` is `None` when
/// the rollout made progress, is idle, or waits for logouts.
pub fn track(
    prev: Option<Stall>,
    blocked: Option<Blocked>,
    now: Timestamp,
    after: Duration,
) -> (Option<Stall>, Say) {
    match (prev, blocked) {
        (None, None) => (None, Say::Nothing),
        (Some(p), None) => {
            let say = if p.announced {
                Say::Resumed(resumed(&p))
            } else {
                Say::Nothing
            };
            (None, say)
        }
        (prev, Some(b)) => {
            // The same blocker keeps its start; a new one starts afresh (and
            // is announced again if it gets stuck too). A stuck rollout that
            // moved on to another blocker did move: say so, or the Warning
            // stays the last word (a replaced pod is always followed by a
            // short wait for its replacement, so this is the common way out).
            let mut moved_on = None;
            let mut s = match prev {
                Some(p) if p.on == b.on => p,
                prev => {
                    moved_on = prev.filter(|p| p.announced).map(|p| resumed(&p));
                    Stall {
                        on: b.on,
                        why: String::new(),
                        since: now,
                        announced: false,
                    }
                }
            };
            s.why = b.why;
            let say = if !s.announced && is_stuck(&s, now, after) {
                s.announced = true;
                Say::Stuck(format!(
                    "rollout waiting for {} on {}: {}",
                    waited(&s, now),
                    s.on,
                    s.why
                ))
            } else {
                moved_on.map_or(Say::Nothing, Say::Resumed)
            };
            (Some(s), say)
        }
    }
}

fn resumed(p: &Stall) -> String {
    format!(
        "no longer waiting on {} (stuck since {})",
        p.on,
        p.since.round(jiff::Unit::Second).unwrap_or(p.since)
    )
}

/// Has the stall lasted the threshold?
pub fn is_stuck(s: &Stall, now: Timestamp, after: Duration) -> bool {
    now.duration_since(s.since) >= SignedDuration::try_from(after).unwrap_or(SignedDuration::MAX)
}

fn waited(s: &Stall, now: Timestamp) -> String {
    let secs = now.duration_since(s.since).as_secs().max(0) as u64;
    crate::duration::format(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ts;

    fn on(pod: &str, why: &str) -> Option<Blocked> {
        Some(Blocked {
            on: pod.into(),
            why: why.into(),
        })
    }

    const AFTER: Duration = Duration::from_secs(600);

    #[test]
    fn the_same_blocker_for_the_threshold_is_stuck_once() {
        let t0 = ts("2026-11-24T01:00:00Z");
        let (s, say) = track(
            None,
            on("web-1 terminating", "web-1 is terminating"),
            t0,
            AFTER,
        );
        assert_eq!(say, Say::Nothing);
        let s = s.unwrap();
        assert_eq!(s.since, t0);
        let (s, say) = track(
            Some(s),
            on("web-1 terminating", "web-1 is terminating"),
            ts("2026-11-24T01:09:59Z"),
            AFTER,
        );
        assert_eq!(say, Say::Nothing, "not yet");
        let (s, say) = track(
            s,
            on("web-1 terminating", "web-1 is terminating"),
            ts("2026-11-24T01:10:00Z"),
            AFTER,
        );
        assert_eq!(
            say,
            Say::Stuck(
                "rollout waiting for 10m0s on web-1 terminating: web-1 is terminating".into()
            )
        );
        let (s, say) = track(
            s,
            on("web-1 terminating", "web-1 is terminating"),
            ts("2026-11-24T01:20:00Z"),
            AFTER,
        );
        assert_eq!(say, Say::Nothing, "said once, not on every reconcile");
        assert!(is_stuck(
            s.as_ref().unwrap(),
            ts("2026-11-24T01:20:00Z"),
            AFTER
        ));
        let (s, say) = track(s, None, ts("2026-11-24T01:21:00Z"), AFTER);
        assert!(s.is_none());
        assert!(matches!(say, Say::Resumed(m) if m.contains("web-1 terminating")));
    }

    #[test]
    fn a_new_blocker_starts_afresh_and_short_waits_say_nothing() {
        let t0 = ts("2026-11-24T01:00:00Z");
        let (s, _) = track(None, on("a", "x"), t0, AFTER);
        let (s, say) = track(s, on("b", "y"), ts("2026-11-24T01:10:00Z"), AFTER);
        assert_eq!(say, Say::Nothing);
        assert_eq!(s.as_ref().unwrap().since, ts("2026-11-24T01:10:00Z"));
        let (s, say) = track(s, None, ts("2026-11-24T01:10:01Z"), AFTER);
        assert_eq!(
            (s, say),
            (None, Say::Nothing),
            "never stuck: nothing to resume"
        );
    }

    #[test]
    fn a_stuck_rollout_moving_on_to_another_wait_has_resumed() {
        let t0 = ts("2026-11-24T01:00:00Z");
        let (s, _) = track(None, on("web-1 terminating", "x"), t0, AFTER);
        let (s, say) = track(
            s,
            on("web-1 terminating", "x"),
            ts("2026-11-24T01:10:00Z"),
            AFTER,
        );
        assert!(matches!(say, Say::Stuck(_)));
        // The finalizer went: now the replacement is awaited, a new short wait.
        let (s, say) = track(
            s,
            on("1 of 2 pods exist", "y"),
            ts("2026-11-24T01:10:05Z"),
            AFTER,
        );
        assert!(
            matches!(&say, Say::Resumed(m) if m.contains("web-1 terminating")),
            "{say:?}"
        );
        let s = s.unwrap();
        assert_eq!((s.on.as_str(), s.announced), ("1 of 2 pods exist", false));
        let (_, say) = track(Some(s), None, ts("2026-11-24T01:10:09Z"), AFTER);
        assert_eq!(say, Say::Nothing, "resumed once");
    }
}
