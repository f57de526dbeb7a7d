//! Which pids a tick must read without listing the proc root. Listing
//! `/proc` is most of a quiet tick's cost on a large node: the kernel builds
//! a dentry for each of 10,000 pids, about 18 ms here, while reading the few
//! pids that changed takes microseconds.
//!
//! The kernel hands out pids cyclically: a new one is the next free number
//! above the last one handed out, wrapping at `pid_max`. So every process
//! created between two readings of "the newest pid" has a pid in the cyclic
//! interval between them, and a tick can read that interval instead of
//! listing. The reading is a probe: a short-lived thread reads
//! `<proc root>/thread-self`, whose target names its own tid in the proc
//! mount's pid namespace (`/proc/loadavg` would name the reader's namespace,
//! which is not the host's in an agent pod without hostPID).
//!
//! Trust is checked, not assumed: each listing (every resync, and any tick
//! whose interval is too long) checks that every process it finds new and
//! young lies in the interval since the tick before. One that does not (a
//! proc root of an unexpected kind, a kernel that allocates otherwise) turns
//! the cursor off for the scanner's life, and every tick lists again.
//!
//! The pure parts are here; the probe is in `procfs.rs`.

use std::iter::Chain;
use std::ops::RangeInclusive;

/// A tick whose interval holds more pids than this lists instead: by then
/// the listing is cheaper than the reads, and a wide interval means a node
/// busy enough that one listing per tick is small beside its own churn.
pub const INTERVAL_MAX: u32 = 2048;

/// The pids of the cyclic interval (before, now].
pub type NewPids = Chain<RangeInclusive<u32>, RangeInclusive<u32>>;

/// The pid of the probe thread from the target of `<proc>/thread-self`,
/// `<tgid>/task/<tid>`.
pub fn parse_thread_self(target: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(target).ok()?;
    let (_, tid) = text.split_once("/task/")?;
    tid.parse().ok().filter(|&tid| tid > 0)
}

/// The pids created after the probe read `before` and up to the one read
/// `now`, or `None` when there are more than `limit` of them or the interval
/// wraps and `pid_max` is unknown. Run a full cycle of pid_max forks within
/// one interval and this is wrong, which the next listing bounds.
pub fn created_between(before: u32, now: u32, pid_max: Option<u32>, limit: u32) -> Option<NewPids> {
    if now >= before {
        let n = now - before;
        // An empty second half, so both shapes are one type.
        #[allow(clippy::reversed_empty_ranges)]
        return (n <= limit).then(|| (before + 1..=now).chain(1..=0));
    }
    // Wrapped: the top of the cycle, then its bottom.
    let pid_max = pid_max.filter(|&m| m > before)?;
    let n = (pid_max - 1 - before).saturating_add(now);
    (n <= limit).then(|| (before + 1..=pid_max - 1).chain(1..=now))
}

/// Is `pid` in the cyclic interval (before, now]?
pub fn created_in(pid: u32, before: u32, now: u32) -> bool {
    if now >= before {
        pid > before && pid <= now
    } else {
        pid > before || pid <= now
    }
}

/// The scanner's cursor state.
#[derive(Clone, Debug)]
pub struct Cursor {
    enabled: bool,
    /// The probe's reading at the last tick, and the uptime (in clock ticks)
    /// when it was taken.
    last: Option<(u32, Option<u64>)>,
}

/// Start times within this many clock ticks after a probe may belong to a
/// process created just before it: not a miss.
const START_SLACK_TICKS: u64 = 2;

// === impl Cursor ===

impl Cursor {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            last: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The pids to read on a tick whose probe read `now`, or `None` to list.
    pub fn plan(&self, now: Option<u32>, pid_max: impl FnOnce() -> Option<u32>) -> Option<NewPids> {
        let (before, _) = self.last.filter(|_| self.enabled)?;
        let now = now?;
        let pid_max = if now < before { pid_max() } else { None };
        created_between(before, now, pid_max, INTERVAL_MAX)
    }

    /// After a tick that read every pid the probe `now` covered.
    pub fn advance(&mut self, now: Option<u32>, uptime_ticks: Option<u64>) {
        self.last = now.map(|n| (n, uptime_ticks));
    }

    /// A listing, with the probe after its readdir reading `after`, found a
    /// process unknown to the scanner: was it missed by the cursor? Only a
    /// process started after the last probe counts; an older one unknown
    /// here is one whose earlier read failed, not a miss.
    pub fn missed(&self, pid: u32, starttime: u64, after: Option<u32>) -> bool {
        let (Some((before, at)), Some(after)) = (self.last, after) else {
            return false;
        };
        if !self.enabled || created_in(pid, before, after) {
            return false;
        }
        at.is_none_or(|at| starttime > at + START_SLACK_TICKS)
    }

    /// Off for good, after a miss.
    pub fn distrust(&mut self) {
        self.enabled = false;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pids(before: u32, now: u32, pid_max: Option<u32>, limit: u32) -> Option<Vec<u32>> {
        created_between(before, now, pid_max, limit).map(Iterator::collect)
    }

    #[test]
    fn the_probe_names_its_tid_in_the_proc_mounts_namespace() {
        assert_eq!(parse_thread_self(b"4711/task/4718"), Some(4718));
        assert_eq!(parse_thread_self(b"1/task/1"), Some(1));
        assert_eq!(parse_thread_self(b"4711"), None);
        assert_eq!(parse_thread_self(b"4711/task/"), None);
        assert_eq!(parse_thread_self(b"4711/task/x1"), None);
        assert_eq!(parse_thread_self(b"4711/task/0"), None);
        assert_eq!(parse_thread_self(b"\xff/task/3"), None);
    }

    #[test]
    fn a_quiet_tick_reads_only_the_probe_and_what_came_before_it() {
        assert_eq!(pids(500, 500, None, 10), Some(vec![]));
        assert_eq!(pids(500, 503, None, 10), Some(vec![501, 502, 503]));
    }

    #[test]
    fn a_wrapped_interval_reads_the_top_then_the_bottom() {
        assert_eq!(
            pids(32765, 2, Some(32768), 10),
            Some(vec![32766, 32767, 1, 2])
        );
        // Without pid_max the top is unknown: list instead.
        assert_eq!(pids(32765, 2, None, 10), None);
        // A pid_max below the last reading is not this kernel's.
        assert_eq!(pids(32765, 2, Some(30000), 10), None);
    }

    #[test]
    fn a_busy_interval_lists_instead() {
        assert_eq!(pids(100, 110, None, 9), None);
        assert_eq!(pids(100, 110, None, 10).map(|p| p.len()), Some(10));
        assert_eq!(pids(32760, 5, Some(32768), 11), None);
        assert_eq!(pids(32760, 5, Some(32768), 12).map(|p| p.len()), Some(12));
    }

    #[test]
    fn membership_follows_the_cycle() {
        assert!(created_in(501, 500, 503) && created_in(503, 500, 503));
        assert!(!created_in(500, 500, 503) && !created_in(504, 500, 503));
        assert!(created_in(32767, 32765, 2) && created_in(1, 32765, 2));
        assert!(!created_in(3, 32765, 2) && !created_in(32765, 32765, 2));
    }

    #[test]
    fn a_new_process_outside_the_interval_is_a_miss_only_if_it_is_young() {
        let mut cursor = Cursor::new(true);
        assert!(
            cursor.plan(Some(10), || None).is_none(),
            "no base yet: list"
        );
        cursor.advance(Some(1000), Some(50_000));
        assert_eq!(cursor.plan(Some(1002), || None).map(|p| p.count()), Some(2));
        // Inside (1000, 1010]: found by the cursor's reads.
        assert!(!cursor.missed(1005, 60_000, Some(1010)));
        // Outside, started long before the probe: an earlier read had failed.
        assert!(!cursor.missed(77, 10_000, Some(1010)));
        assert!(!cursor.missed(77, 50_002, Some(1010)));
        // Outside and started after the probe: the cursor missed it.
        assert!(cursor.missed(77, 50_100, Some(1010)));
        cursor.distrust();
        assert!(!cursor.enabled());
        assert!(cursor.plan(Some(1002), || None).is_none());
    }

    #[test]
    fn a_disabled_cursor_always_lists() {
        let mut cursor = Cursor::new(false);
        cursor.advance(Some(1000), None);
        assert!(cursor.plan(Some(1001), || None).is_none());
        assert!(!cursor.missed(5, u64::MAX, Some(1001)));
    }
}
