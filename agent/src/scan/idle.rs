//! Each session's last activity, kept across scans.
//!
//! Two sources, in this order:
//! - **The terminal's access time**, as `w` shows it: the kernel updates it
//!   when a process reads input from the terminal, so it is the time of the
//!   last keystroke, to within 8 s (the kernel moves a terminal's times at
//!   most once per 8-second window, so as not to leak keystroke timing). Read
//!   with a `stat` through `/proc/<leader>/fd/{0,1,2}`, which needs ptrace
//!   read access to the leader: the same uid, or `CAP_SYS_PTRACE`. The
//!   chart's agent (uid 65533, no capabilities) has neither; an agent run as
//!   root does. Known at once, on the first scan.
//! - **The session's processes** otherwise, with no privilege: any change in
//!   the CPU time (`stat`) or context switches (`status`) of a process on the
//!   terminal, or in which processes are on it, since the previous scan is
//!   activity now. A keystroke wakes the reader (one context switch), so
//!   nothing typed is missed, to within one scan interval. But any work
//!   counts, so a `top` or `tail -f` left running keeps a session active, and
//!   a session's idle time starts at 0 when the agent starts.

use std::collections::HashMap;
use std::time::Instant;

use sessionguard_core::{ContainerId, PodUid};

/// One session across scans: its terminal in its container, and its leader
/// (a new login on the same terminal is a new session).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub pod_uid: PodUid,
    pub container_id: ContainerId,
    pub tty_nr: u32,
    pub leader: (u32, u64),
}

/// What one scan saw of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Changes whenever the session's processes did anything
    /// ([`fingerprint`]).
    pub fingerprint: u64,
    /// The terminal's access time, seconds since the epoch, when readable.
    pub terminal_atime: Option<i64>,
}

/// Where a session's idle time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Terminal,
    Processes,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Self::Terminal => "terminal",
            Self::Processes => "processes",
        }
    }
}

#[derive(Debug, Default)]
pub struct IdleTracker {
    sessions: HashMap<SessionId, State>,
}

#[derive(Debug)]
struct State {
    fingerprint: u64,
    last_active: Instant,
    generation: u64,
    /// Set once reading the terminal's times was refused: not tried again
    /// until the next full scan (the privilege does not come and go).
    terminal_denied: bool,
}

// === impl IdleTracker ===

impl IdleTracker {
    /// Whether to try the terminal's times for this session on this scan.
    pub fn try_terminal(&self, id: &SessionId, full: bool) -> bool {
        full || self.sessions.get(id).is_none_or(|s| !s.terminal_denied)
    }

    /// Records one scan's view of a session; returns its idle seconds.
    /// `denied`: whether reading the terminal's times was refused (`None`:
    /// not tried). `now` is the monotonic clock, `wall` the wall clock in
    /// seconds (the terminal's times are wall-clock times).
    pub fn observe(
        &mut self,
        id: SessionId,
        seen: Seen,
        denied: Option<bool>,
        now: Instant,
        wall: i64,
        generation: u64,
    ) -> (u32, Source) {
        let state = self.sessions.entry(id).or_insert(State {
            fingerprint: seen.fingerprint,
            // First sight: a new login, or one the agent has not watched
            // before; either way it is taken as active now.
            last_active: now,
            generation,
            terminal_denied: false,
        });
        if state.fingerprint != seen.fingerprint {
            state.fingerprint = seen.fingerprint;
            state.last_active = now;
        }
        state.generation = generation;
        if let Some(denied) = denied {
            state.terminal_denied = denied;
        }
        match seen.terminal_atime {
            // A clock stepped back shows an access in the future: idle 0.
            Some(atime) => (seconds(wall.saturating_sub(atime)), Source::Terminal),
            None => (
                seconds(
                    i64::try_from(now.saturating_duration_since(state.last_active).as_secs())
                        .unwrap_or(i64::MAX),
                ),
                Source::Processes,
            ),
        }
    }

    /// Forgets sessions not seen by the scan of `generation`.
    pub fn retain(&mut self, generation: u64) {
        self.sessions.retain(|_, s| s.generation == generation);
    }
}

fn seconds(s: i64) -> u32 {
    u32::try_from(s.max(0)).unwrap_or(u32::MAX)
}

/// Folds each process on the terminal, `(pid, start time, CPU ticks, context
/// switches)`, into one number that changes when any of them changes or a
/// process comes or goes. Order does not matter.
pub fn fingerprint(members: impl IntoIterator<Item = (u32, u64, u64, u64)>) -> u64 {
    members
        .into_iter()
        .map(|(pid, start, cpu, switches)| {
            let mut h = mix(u64::from(pid) ^ mix(start));
            h = mix(h ^ cpu);
            mix(h ^ switches.rotate_left(32))
        })
        .fold(0u64, u64::wrapping_add)
}

/// splitmix64's finaliser: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(pid: u32) -> SessionId {
        SessionId {
            pod_uid: PodUid::parse("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").unwrap(),
            container_id: ContainerId::parse(&"a".repeat(64)).unwrap(),
            tty_nr: 34816,
            leader: (pid, 100),
        }
    }

    fn procs(fp: u64) -> Seen {
        Seen {
            fingerprint: fp,
            terminal_atime: None,
        }
    }

    #[test]
    fn processes_that_do_nothing_grow_idle_and_any_change_resets_it() {
        let mut t = IdleTracker::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            t.observe(id(1), procs(7), None, at(0), 0, 1),
            (0, Source::Processes),
            "first sight is activity"
        );
        assert_eq!(t.observe(id(1), procs(7), None, at(5), 0, 2).0, 5);
        assert_eq!(t.observe(id(1), procs(7), None, at(65), 0, 3).0, 65);
        assert_eq!(t.observe(id(1), procs(8), None, at(66), 0, 4).0, 0);
        assert_eq!(t.observe(id(1), procs(8), None, at(70), 0, 5).0, 4);
        // A new leader on the same terminal is a new session.
        assert_eq!(t.observe(id(2), procs(8), None, at(70), 0, 5).0, 0);
    }

    #[test]
    fn the_terminal_access_time_wins_where_readable() {
        let mut t = IdleTracker::default();
        let now = Instant::now();
        let wall = 1_764_000_000;
        let seen = Seen {
            fingerprint: 1,
            terminal_atime: Some(wall - 600),
        };
        assert_eq!(
            t.observe(id(1), seen, Some(false), now, wall, 1),
            (600, Source::Terminal),
            "known on the first scan"
        );
        let future = Seen {
            terminal_atime: Some(wall + 30),
            ..seen
        };
        assert_eq!(t.observe(id(1), future, Some(false), now, wall, 2).0, 0);
    }

    #[test]
    fn a_refused_terminal_is_tried_again_only_on_a_full_scan() {
        let mut t = IdleTracker::default();
        let now = Instant::now();
        assert!(t.try_terminal(&id(1), false), "never tried");
        t.observe(id(1), procs(1), Some(true), now, 0, 1);
        assert!(!t.try_terminal(&id(1), false));
        t.observe(id(1), procs(1), None, now, 0, 2);
        assert!(!t.try_terminal(&id(1), false), "not tried: still refused");
        assert!(t.try_terminal(&id(1), true));
        t.observe(id(1), procs(1), Some(false), now, 0, 3);
        assert!(t.try_terminal(&id(1), false));
    }

    #[test]
    fn sessions_not_seen_are_forgotten() {
        let mut t = IdleTracker::default();
        let t0 = Instant::now();
        t.observe(id(1), procs(1), None, t0, 0, 1);
        t.retain(2);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(t.observe(id(1), procs(1), None, later, 0, 2).0, 0);
    }

    #[test]
    fn the_fingerprint_moves_with_any_process() {
        let base = [(10, 5, 3, 150), (11, 6, 0, 2)];
        let fp = fingerprint(base);
        assert_eq!(fp, fingerprint([base[1], base[0]]), "order does not matter");
        for changed in [
            [(10, 5, 4, 150), base[1]],
            [(10, 5, 3, 151), base[1]],
            [base[0], (11, 6, 0, 3)],
            [base[0], (12, 6, 0, 2)],
        ] {
            assert_ne!(fingerprint(changed), fp, "{changed:?}");
        }
        assert_ne!(fingerprint([base[0]]), fp, "a process left");
    }
}
