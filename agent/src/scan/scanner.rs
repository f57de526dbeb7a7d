//! Incremental scanning. A full scan reads `stat` of every pid; a steady-state
//! tick only reads pids it has not seen or whose directory inode changed, the
//! few processes that hold a terminal and the few that are young enough to be
//! about to take one, so a quiet node costs little more than one readdir. A
//! periodic full resync bounds how long any other missed change can live.
//! Where the pid cursor works (see `cursor.rs`), a quiet tick does not even
//! list: it reads the pids created since the last tick and the few above.
//!
//! A process's identity is its pid and start time. The inode of `/proc/<pid>`
//! is only a hint to skip reads: a reused pid gets a new directory, but so can
//! a live process whose dentry the kernel evicted and rebuilt.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sessionguard_core::Session;

use super::clock::Clock;
use super::command::{capped_argv, command_name};
use super::cursor::Cursor;
use super::fetch::{Fetched, fetch, fetch_at_most, read_at_most};
use super::first::{Seen, older_in_order};
use super::group::{Candidate, Group, group_by_terminal};
use super::idle::{self, IdleTracker, SessionId};
use super::procfs::{ProcFs, Terminal as TerminalTime};
use super::stats::ScanStats;
use crate::Error;
use crate::proc::cmdline::CMDLINE_READ_MAX;
use crate::proc::status::parse_tgid;
use crate::proc::{Parsers, SystemInfo, start_time, tty_name};

/// The kernel's overflow uid (`/proc/sys/kernel/overflowuid`), which it shows
/// for a uid it cannot map; used when a leader's uid cannot be read at all.
const UNKNOWN_UID: u32 = 65534;

#[derive(Clone, Debug)]
pub struct ScannerConfig {
    /// Every n-th tick re-reads every pid (1 = always full).
    pub resync_every: u32,
    /// A process younger than this has its `stat` re-read on every tick.
    /// `runc exec`, sshd and `script` fork, then call setsid and TIOCSCTTY,
    /// then exec: a first read in that window sees no terminal yet, and
    /// without a re-read the session would stay hidden until the next resync.
    pub young_for: Duration,
    /// ...and for at least this many ticks after the last read that found it
    /// young, which covers intervals longer than `young_for` and proc trees
    /// without a usable `/proc/uptime`.
    pub young_ticks: u32,
    /// `CLK_TCK`, the unit of start times in `stat`. Passed in rather than
    /// read by the scanner, so a fake tree can be dated on any clock.
    pub ticks_per_second: u64,
    /// Take idle time from the terminal's access time where the agent may
    /// read it (see `scan/idle.rs`); else only from the processes.
    pub terminal_idle: bool,
    /// Skip the listing on ticks where the pid cursor tells which pids are
    /// new (see `cursor.rs`); off: every tick lists the proc root.
    pub pid_cursor: bool,
    pub parsers: Parsers,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        Self {
            resync_every: 30,
            young_for: Duration::from_secs(5),
            young_ticks: 3,
            ticks_per_second: nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .ok()
                .flatten()
                .map_or(100, |hz| hz.max(1) as u64),
            terminal_idle: true,
            pid_cursor: true,
            parsers: Parsers::default(),
        }
    }
}

pub struct Scanner {
    fs: ProcFs,
    config: ScannerConfig,
    clock: Clock,
    known: HashMap<u32, Known>,
    leaders: HashMap<(u32, u64), Leader>,
    idle: IdleTracker,
    /// Whether each leader is its container's first process (see
    /// [`super::first`]), by (pid, start time), with the generation it was
    /// last seen in: asked once per leader, kept across resyncs.
    firsts: HashMap<(u32, u64), (bool, u64)>,
    generation: u64,
    cursor: Cursor,
    /// Pids in the last listing.
    listed: usize,
    pids: Vec<(u32, u64)>,
    buf: Vec<u8>,
}

/// Whether a pass over pids saw all of them (a listing) or only those the
/// cursor and the known terminals named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// `after`: the probe's reading taken after the readdir.
    Listing {
        after: Option<u32>,
    },
    Named,
}

struct Known {
    ino: u64,
    ppid: u32,
    starttime: u64,
    tty_nr: u32,
    /// A session leader (pid = session id) with a terminal.
    leads: bool,
    generation: u64,
    /// Re-read `stat` on every tick up to and including this generation.
    recheck_until: u64,
}

/// Slow-changing facts about a session leader, cached by (pid, starttime) so
/// a reused pid can never inherit them, and read again on every full resync.
/// A fallback for an unreadable `status` is cached the same way: re-reading
/// it would cost `status`, an fstat, `cmdline` and a counted error per tick.
struct Leader {
    uid: u32,
    argv: Vec<String>,
    generation: u64,
}

/// What every pid of one pass is read against.
struct PassContext {
    generation: u64,
    full: bool,
    first: bool,
    pass: Pass,
    /// Clock ticks since boot now, if uptime could be read.
    now_ticks: Option<u64>,
    /// Below this age (in ticks) a process is young: re-read on every tick.
    young_age: u64,
}

/// A process with a controlling terminal: (pid, session id, tty_nr, start
/// time in ticks, CPU ticks, comm).
type Terminal = (u32, u32, u32, u64, u64, String);

// === impl Scanner ===

impl Scanner {
    pub fn new(fs: ProcFs, config: ScannerConfig) -> Result<Self, Error> {
        let mut buf = Vec::with_capacity(4096);
        let clock = Clock::read(&fs, &config.parsers, &mut buf)?;
        let pid_cursor = config.pid_cursor;
        Ok(Self {
            fs,
            config,
            clock,
            known: HashMap::new(),
            leaders: HashMap::new(),
            idle: IdleTracker::default(),
            firsts: HashMap::new(),
            generation: 0,
            cursor: Cursor::new(pid_cursor),
            listed: 0,
            pids: Vec::new(),
            buf,
        })
    }

    pub fn proc_root(&self) -> &std::path::Path {
        self.fs.root()
    }

    /// One scan; full on the first call and every `resync_every` ticks.
    pub fn tick(&mut self) -> Result<(Vec<Session>, ScanStats), Error> {
        let full = self
            .generation
            .is_multiple_of(u64::from(self.config.resync_every.max(1)));
        self.scan(full)
    }

    /// Fails with [`Error::Filtered`] when the proc root hides processes:
    /// the sessions of a partial view must never be reported.
    pub fn scan(&mut self, full: bool) -> Result<(Vec<Session>, ScanStats), Error> {
        self.scan_at(full, Instant::now(), jiff::Timestamp::now())
    }

    /// [`Scanner::scan`] as if at `now` (monotonic) and `wall`: the clocks
    /// idle time is measured on, so a test can let time pass without waiting.
    pub fn scan_at(
        &mut self,
        full: bool,
        now: Instant,
        wall: jiff::Timestamp,
    ) -> Result<(Vec<Session>, ScanStats), Error> {
        let started = Instant::now();
        let first = self.generation == 0;
        let probe = self
            .cursor
            .enabled()
            .then(|| self.fs.newest_pid())
            .flatten();
        let probed_at = self.clock.uptime_ticks(self.config.ticks_per_second.max(1));
        let mut stats = ScanStats {
            full,
            ..ScanStats::default()
        };
        if !full && !first && self.named_pids(probe) {
            self.generation += 1;
            stats.pids = self.listed;
            let candidates = self.terminal_processes(false, false, Pass::Named, &mut stats);
            if stats.lost_leaders == 0 {
                self.cursor.advance(probe, probed_at);
                return Ok(self.finish(candidates, false, (now, wall), stats, started));
            }
            // A logout, or a filter that now hides the leader: only a listing
            // tells which. What this pass read stays true; it only cost reads.
            tracing::debug!(
                lost = stats.lost_leaders,
                "session leader gone; listing to check"
            );
        }
        // Before any state changes on a tick that lists (but for a named pass
        // just redone), so a filtered scan leaves the scanner as it was (the
        // next good scan is still the first, or still full).
        self.fs.pids(&mut self.pids)?;
        self.fs.check_visible(&self.pids, &mut self.buf)?;
        let after = probe.and_then(|_| self.fs.newest_pid());
        self.generation += 1;
        stats.listed = true;
        // `new` has just read the clock for the first scan.
        if full && !first {
            match Clock::read(&self.fs, &self.config.parsers, &mut self.buf) {
                Ok(clock) => self.clock.resync(clock),
                // Keep the last good reading.
                Err(e) => *stats.errors.entry(e.kind()).or_default() += 1,
            }
        }
        stats.pids = self.pids.len();
        self.listed = stats.pids;
        let candidates = self.terminal_processes(full, first, Pass::Listing { after }, &mut stats);
        if stats.cursor_misses > 0 {
            tracing::warn!(
                missed = stats.cursor_misses,
                "the pid cursor missed new processes; listing on every tick from now on"
            );
            self.cursor.distrust();
        }
        self.cursor.advance(probe, probed_at);
        Ok(self.finish(candidates, full, (now, wall), stats, started))
    }

    /// Passes 2 and 3 over a tick's terminal processes.
    fn finish(
        &mut self,
        candidates: Vec<Terminal>,
        full: bool,
        (now, wall): (Instant, jiff::Timestamp),
        mut stats: ScanStats,
        started: Instant,
    ) -> (Vec<Session>, ScanStats) {
        stats.terminal_processes = candidates.len();
        let in_pods = self.in_pods(candidates, &mut stats);
        let sessions = self.sessions(in_pods, full, (now, wall.as_second()), &mut stats);
        stats.duration = started.elapsed();
        (sessions, stats)
    }

    /// Fills `self.pids` for a tick without a listing: every pid the cursor
    /// says was created since the last tick (inode 0, so it is read even
    /// where a process of that number is known), every known terminal
    /// process and every known young one. False when this tick must list:
    /// no cursor, an interval too long, or pid 1 unreadable (`hidepid` on a
    /// remount; a filter that spares pid 1 is caught by the next listing, or
    /// by the first leader it hides).
    fn named_pids(&mut self, probe: Option<u32>) -> bool {
        let fs = &self.fs;
        let Some(new) = self.cursor.plan(probe, || fs.pid_max()) else {
            return false;
        };
        if !matches!(self.fs.read(1, "stat", &mut self.buf), Ok(true)) {
            return false;
        }
        let next = self.generation + 1;
        self.pids.clear();
        self.pids.extend(new.map(|pid| (pid, 0)));
        self.pids.extend(
            self.known
                .iter()
                .filter(|(_, k)| k.tty_nr != 0 || k.recheck_until >= next)
                .map(|(&pid, k)| (pid, k.ino)),
        );
        // A new pid's inode 0 sorts first and wins over a known one's.
        self.pids.sort_unstable();
        self.pids.dedup_by_key(|&mut (pid, _)| pid);
        true
    }

    /// Pass 1: `stat` of every pid that is new, young, or has a terminal;
    /// returns the processes with a controlling terminal.
    fn terminal_processes(
        &mut self,
        full: bool,
        first: bool,
        pass: Pass,
        stats: &mut ScanStats,
    ) -> Vec<Terminal> {
        let hz = self.config.ticks_per_second.max(1);
        let ctx = PassContext {
            generation: self.generation,
            full,
            first,
            pass,
            now_ticks: self.clock.uptime_ticks(hz),
            young_age: (self.config.young_for.as_secs_f64() * hz as f64) as u64,
        };
        let mut candidates = Vec::new();
        let pids = std::mem::take(&mut self.pids);
        for &(pid, ino) in &pids {
            candidates.extend(self.read_pid(pid, ino, &ctx, stats));
        }
        self.pids = pids;
        // A named pass saw only some pids; the next listing drops the rest.
        if pass != Pass::Named {
            self.known.retain(|_, k| k.generation == ctx.generation);
        }
        candidates
    }

    /// One pid of a pass: a known, quiet one is skipped; otherwise its `stat`
    /// is read and its record kept. Some if it holds a terminal.
    fn read_pid(
        &mut self,
        pid: u32,
        ino: u64,
        ctx: &PassContext,
        stats: &mut ScanStats,
    ) -> Option<Terminal> {
        let (generation, pass) = (ctx.generation, ctx.pass);
        // (start time, recheck_until, leads) of the process last read under this pid.
        let seen = match self.known.get_mut(&pid) {
            Some(k) => {
                // Same directory: skipped unless it has a terminal or is young.
                // A new inode is read; its start time tells whether it is
                // a new process.
                if k.ino == ino && !ctx.full && k.tty_nr == 0 {
                    if generation > k.recheck_until {
                        k.generation = generation;
                        return None;
                    }
                    stats.young += 1;
                }
                Some((k.starttime, k.recheck_until, k.leads))
            }
            None => None,
        };
        let lost = |stats: &mut ScanStats| {
            if pass == Pass::Named && seen.is_some_and(|(_, _, leads)| leads) {
                stats.lost_leaders += 1;
            }
        };
        stats.stat_reads += 1;
        match read_at_most(&mut self.fs, pid, "stat", usize::MAX, &mut self.buf, stats) {
            Fetched::Read => {}
            // A pid the cursor named that we never saw belonged to a
            // process (or thread) that came and went between two ticks,
            // or to none: not an exit met mid-read, so not churn.
            Fetched::Gone if pass == Pass::Named && seen.is_none() => return None,
            // A leader that cannot be read (an LSM now denying it) is as
            // lost to a named pass as one that is gone.
            Fetched::Gone => {
                stats.vanished += 1;
                lost(stats);
                return None;
            }
            Fetched::Failed => {
                lost(stats);
                return None;
            }
        }
        let stat = match (self.config.parsers.stat)(&self.buf) {
            Ok(s) => s,
            // An empty file is a pid caught mid-exit.
            Err(_) if self.buf.is_empty() => {
                stats.vanished += 1;
                lost(stats);
                return None;
            }
            Err(e) => {
                tracing::debug!(pid, error = %e, "skipping pid");
                *stats.errors.entry(e.kind()).or_default() += 1;
                return None;
            }
        };
        let mut tty_nr = if stat.is_gone() { 0 } else { stat.tty_nr };
        if seen.is_none()
            && let Pass::Listing { after } = pass
            && self.cursor.missed(pid, stat.starttime, after)
        {
            tracing::debug!(pid, "a new process outside the cursor's interval");
            stats.cursor_misses += 1;
        }
        // A process we have not read before (new pid, or a reused one: a new
        // start time) that shows up after the first scan started at most
        // one interval ago, whatever the clock says. The same process under
        // a new inode keeps its youth, and its cached leader below.
        let new = seen.is_none_or(|(start, _, _)| start != stat.starttime);
        let young = (new && !ctx.first)
            || ctx
                .now_ticks
                .is_some_and(|now| now.saturating_sub(stat.starttime) < ctx.young_age);
        let recheck_until = match (young, seen) {
            (true, _) => generation + u64::from(self.config.young_ticks),
            (false, Some((start, until, _))) if start == stat.starttime => until,
            (false, _) => 0,
        };
        // Only a pid the cursor named can be a thread: a listing shows
        // processes, but any tid has a directory. A thread of a terminal
        // process shares its terminal and session; it is not one more.
        if ino == 0 && tty_nr != 0 && !is_process(&mut self.fs, pid) {
            tty_nr = 0;
        }
        let leads = tty_nr != 0 && stat.session == pid;
        self.known.insert(
            pid,
            Known {
                ino,
                ppid: stat.ppid,
                starttime: stat.starttime,
                tty_nr,
                leads,
                generation,
                recheck_until,
            },
        );
        (tty_nr != 0).then(|| {
            (
                pid,
                stat.session,
                tty_nr,
                stat.starttime,
                stat.utime.saturating_add(stat.stime),
                stat.comm_lossy(),
            )
        })
    }

    /// Pass 2: `cgroup` of each terminal process; keeps those inside a pod.
    fn in_pods(&mut self, candidates: Vec<Terminal>, stats: &mut ScanStats) -> Vec<Candidate> {
        let parsers = self.config.parsers;
        let mut in_pods = Vec::new();
        for (pid, session, tty_nr, starttime, cpu, comm) in candidates {
            if !fetch(&mut self.fs, pid, "cgroup", &mut self.buf, stats).is_read() {
                continue;
            }
            match (parsers.cgroup)(&self.buf) {
                Ok(Some(at)) => in_pods.push(Candidate {
                    pid,
                    session,
                    tty_nr,
                    starttime,
                    cpu,
                    comm,
                    at,
                }),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(pid, error = %e, "skipping pid");
                    *stats.errors.entry(e.kind()).or_default() += 1;
                }
            }
        }

        in_pods
    }

    /// Pass 3: one session per terminal in a container, its leader's argv
    /// and uid read once per leader (and again on a full scan).
    fn sessions(
        &mut self,
        in_pods: Vec<Candidate>,
        full: bool,
        (now, wall): (Instant, i64),
        stats: &mut ScanStats,
    ) -> Vec<Session> {
        let generation = self.generation;
        let system = SystemInfo {
            boot_ns: self.clock.boot_ns,
            ticks_per_second: self.config.ticks_per_second.max(1),
        };
        let mut sessions = Vec::new();
        for group in group_by_terminal(in_pods) {
            let l = &group.leader;
            let started_at = match start_time(l.starttime, &system) {
                Ok(at) => at,
                Err(e) => {
                    tracing::debug!(pid = l.pid, error = %e, "skipping session");
                    *stats.errors.entry(e.kind()).or_default() += 1;
                    continue;
                }
            };
            let key = (l.pid, l.starttime);
            if full || !self.leaders.contains_key(&key) {
                match self.read_leader(l.pid, stats) {
                    Some(leader) => {
                        self.leaders.insert(key, leader);
                    }
                    None => continue,
                }
            }
            let idle_seconds = self.idle_seconds(&group, full, now, wall, stats);
            let init = self.first_in_container(l, stats);
            let leader = self.leaders.get_mut(&key).expect("inserted above");
            leader.generation = generation;
            sessions.push(Session {
                pod_uid: group.at.pod_uid.clone(),
                container_id: group.at.container_id.clone(),
                tty: tty_name(group.tty_nr),
                pid: l.pid,
                command: command_name(&leader.argv, &l.comm),
                argv: leader.argv.clone(),
                uid: leader.uid,
                started_at,
                processes: group.processes,
                // The agent's view without the pod spec; the controller decides
                // with it (`tty: true`, not ephemeral) from `init`.
                console: init,
                init,
                idle_seconds,
                namespace: None,
                pod_name: None,
                container_name: None,
            });
        }
        self.leaders.retain(|_, l| l.generation == generation);
        self.idle.retain(generation);
        self.firsts.retain(|_, (_, g)| *g == generation);
        sessions
    }

    /// The session's idle time (see `scan/idle.rs`): its terminal's access
    /// time if readable, else from what its processes did since the last
    /// scan, which costs one `status` read per process on the terminal.
    fn idle_seconds(
        &mut self,
        group: &Group,
        full: bool,
        now: Instant,
        wall: i64,
        stats: &mut ScanStats,
    ) -> u32 {
        let l = &group.leader;
        let id = SessionId {
            pod_uid: group.at.pod_uid.clone(),
            container_id: group.at.container_id.clone(),
            tty_nr: group.tty_nr,
            leader: (l.pid, l.starttime),
        };
        let parsers = self.config.parsers;
        let mut members = Vec::with_capacity(group.members.len());
        for &(pid, start, cpu) in &group.members {
            // Without the counters (a process gone, a status we cannot read)
            // only CPU time tells; that costs accuracy, not the session, and
            // is not counted as an error, which it would be on every tick.
            let switches = match self.fs.read(pid, "status", &mut self.buf) {
                Ok(true) => (parsers.switches)(&self.buf).unwrap_or(0),
                _ => 0,
            };
            members.push((pid, start, cpu, switches));
        }
        let (mut atime, mut denied) = (None, None);
        if self.config.terminal_idle && self.idle.try_terminal(&id, full) {
            let t = self.fs.terminal_atime(l.pid, group.tty_nr);
            denied = Some(t == TerminalTime::Denied);
            if let TerminalTime::Atime(t) = t {
                atime = Some(t);
            }
        }
        let seen = idle::Seen {
            fingerprint: idle::fingerprint(members),
            terminal_atime: atime,
        };
        let (idle, source) = self
            .idle
            .observe(id, seen, denied, now, wall, self.generation);
        if source == idle::Source::Terminal {
            stats.idle_from_terminal += 1;
        }
        idle
    }

    /// Is no process of the leader's container older than it? An older
    /// process whose `cgroup` cannot be read is passed over: calling a login
    /// the init would only matter on a `tty: true` container, and taking the
    /// init for a login keeps a pod protected, never exposes it.
    fn first_in_container(&mut self, leader: &Candidate, stats: &mut ScanStats) -> bool {
        let key = (leader.pid, leader.starttime);
        let generation = self.generation;
        if let Some((first, seen)) = self.firsts.get_mut(&key) {
            *seen = generation;
            return *first;
        }
        let ppid = self.known.get(&leader.pid).map_or(0, |k| k.ppid);
        let me = Seen {
            pid: leader.pid,
            ppid,
            starttime: leader.starttime,
        };
        let known = self.known.iter().map(|(&pid, k)| Seen {
            pid,
            ppid: k.ppid,
            starttime: k.starttime,
        });
        let parse = self.config.parsers.cgroup;
        let mut first = true;
        for pid in older_in_order(me, known) {
            if !fetch(&mut self.fs, pid, "cgroup", &mut self.buf, stats).is_read() {
                continue;
            }
            if matches!(parse(&self.buf), Ok(Some(at)) if at == leader.at) {
                first = false;
                break;
            }
        }
        self.firsts.insert(key, (first, generation));
        first
    }

    /// `None` only when the leader is gone. An unreadable or malformed
    /// `status` is counted and costs accuracy, not the session: the uid falls
    /// back to the owner of the pid's directory (its effective uid).
    fn read_leader(&mut self, pid: u32, stats: &mut ScanStats) -> Option<Leader> {
        let parsers = self.config.parsers;
        let status = match fetch(&mut self.fs, pid, "status", &mut self.buf, stats) {
            Fetched::Read => match (parsers.status)(&self.buf) {
                Ok(status) => Some(status),
                Err(e) => {
                    tracing::debug!(pid, error = %e, "session leader status unusable");
                    *stats.errors.entry(e.kind()).or_default() += 1;
                    None
                }
            },
            Fetched::Gone => return None,
            Fetched::Failed => None,
        };
        let uid = match status {
            Some(s) => s.uid,
            None => match self.fs.owner(pid) {
                Ok(Some(uid)) => uid,
                Ok(None) => {
                    stats.vanished += 1;
                    return None;
                }
                Err(e) => {
                    *stats.errors.entry(e.kind()).or_default() += 1;
                    UNKNOWN_UID
                }
            },
        };
        // cmdline is optional: an unreadable one leaves the command name from stat.
        let argv = match fetch_at_most(
            &mut self.fs,
            pid,
            "cmdline",
            CMDLINE_READ_MAX,
            &mut self.buf,
            stats,
        ) {
            Fetched::Read => capped_argv(parsers, &self.buf).unwrap_or_else(|e| {
                *stats.errors.entry(e.kind()).or_default() += 1;
                Vec::new()
            }),
            Fetched::Gone | Fetched::Failed => Vec::new(),
        };
        Some(Leader {
            uid,
            argv,
            generation: 0,
        })
    }
}

/// Whether `pid` is a process, not a thread of one (its tgid is itself).
/// Its own buffer: the caller's `stat` still borrows the scanner's.
fn is_process(fs: &mut ProcFs, pid: u32) -> bool {
    let mut status = Vec::new();
    fs.read(pid, "status", &mut status)
        .is_ok_and(|read| read && parse_tgid(&status).is_ok_and(|tgid| tgid == pid))
}
