//! Idle time: how long a session has shown no activity, how it travels in a
//! SessionReport, and whether an idle session still protects its pod.
//!
//! The agent measures it on every scan (`agent/src/scan/idle.rs`). Sent
//! exactly, it would change the report every second, so a report carries it
//! rounded down to a step ([`coarse`]): 0 below the agent's
//! `--idle-resolution`, then the resolution times a power of two. An idle
//! episode costs one write per doubling (8 h idle at the 1 m default: 10
//! writes), activity after it one write back to 0, and a person typing with
//! pauses shorter than the resolution none at all. Heartbeats carry the same
//! step, so they change nothing the controller decides on.
//!
//! The controller turns a step back into a time that grows ([`estimate`]): a
//! step `b > 0` it first saw `t` seconds ago means the session has been idle
//! for at least `b + t` (any activity would have sent 0), but for no more than
//! `2b` is known (the next step the agent would have sent by then). A step of
//! 0 means "maybe active now" and stays 0.

use std::time::Duration;

use crate::Session;

/// The step `idle_seconds` is reported as: 0 below `resolution`, else the
/// largest `resolution × 2^k` not above it.
pub fn coarse(idle_seconds: u32, resolution: Duration) -> u32 {
    let step = resolution.as_secs().max(1);
    let idle = u64::from(idle_seconds);
    if idle < step {
        return 0;
    }
    let mut b = step;
    while b <= idle / 2 {
        b *= 2;
    }
    u32::try_from(b).unwrap_or(u32::MAX)
}

/// Rounds every session's idle time down to its step, for a report.
pub fn coarsen(sessions: &mut [Session], resolution: Duration) {
    for s in sessions {
        s.idle_seconds = coarse(s.idle_seconds, resolution);
    }
}

/// What a reported step says about idle time `since_seen` after the
/// controller first saw it (see the module comment).
pub fn estimate(reported: u32, since_seen: Duration) -> u32 {
    if reported == 0 {
        return 0;
    }
    let r = u64::from(reported);
    let grown = r
        .saturating_add(since_seen.as_secs())
        .min(r.saturating_mul(2));
    u32::try_from(grown).unwrap_or(u32::MAX)
}

/// Whether a login still counts for protection under `--idle-release`: it
/// stops counting once it has been idle that long or longer.
pub fn counts_for_protection(s: &Session, idle_release: Option<Duration>) -> bool {
    idle_release.is_none_or(|r| Duration::from_secs(u64::from(s.idle_seconds)) < r)
}

/// When a login that counts now would stop counting, if its idle time keeps
/// growing: `idle_release` minus its idle time. `None` for a step of 0
/// (nothing grows until the next report) or when it does not count now.
pub fn until_release(s: &Session, idle_release: Option<Duration>) -> Option<Duration> {
    let r = idle_release?;
    let idle = Duration::from_secs(u64::from(s.idle_seconds));
    (s.idle_seconds > 0 && idle < r).then(|| r - idle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::session;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn steps_double_from_the_resolution() {
        let steps: Vec<u32> = [0, 59, 60, 119, 120, 239, 240, 479, 480, 28_800]
            .into_iter()
            .map(|s| coarse(s, MIN))
            .collect();
        assert_eq!(steps, [0, 0, 60, 60, 120, 120, 240, 240, 480, 15_360]);
        assert_eq!(coarse(u32::MAX, MIN), 60 << 26);
        assert_eq!(coarse(3, Duration::from_secs(1)), 2);
        assert_eq!(coarse(3, Duration::ZERO), 2, "a zero resolution is 1 s");
    }

    #[test]
    fn an_idle_episode_costs_one_change_per_doubling() {
        // 8 hours idle, one scan a second: the reported value changes 10 times.
        let mut changes = 0;
        let mut last = 0;
        for t in 0..8 * 3600 {
            let c = coarse(t, MIN);
            changes += u32::from(c != last);
            last = c;
        }
        assert_eq!(
            changes, 9,
            "60, 120, ... 15360 (the 10th write is the reset to 0)"
        );
    }

    #[test]
    fn the_estimate_grows_from_the_step_but_not_past_the_next() {
        assert_eq!(
            estimate(0, Duration::from_secs(500)),
            0,
            "0 may be active now"
        );
        assert_eq!(estimate(60, Duration::ZERO), 60);
        assert_eq!(estimate(60, Duration::from_secs(45)), 105);
        assert_eq!(estimate(60, Duration::from_secs(600)), 120);
        assert_eq!(estimate(u32::MAX, Duration::from_secs(5)), u32::MAX);
    }

    #[test]
    fn idle_logins_stop_counting_at_the_release() {
        let mut s = session().build();
        let release = Some(Duration::from_secs(180));
        assert!(counts_for_protection(&s, None));
        assert!(counts_for_protection(&s, release));
        assert_eq!(until_release(&s, release), None, "0 does not grow");
        s.idle_seconds = 120;
        assert!(counts_for_protection(&s, release));
        assert_eq!(until_release(&s, release), Some(Duration::from_secs(60)));
        s.idle_seconds = 180;
        assert!(!counts_for_protection(&s, release));
        assert_eq!(until_release(&s, release), None);
        assert!(counts_for_protection(&s, None), "off by default");
    }
}
