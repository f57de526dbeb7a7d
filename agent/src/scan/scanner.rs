//! Incremental scanning. A full scan reads `stat` of every pid; a steady-state
//! tick only reads pids it has not seen (new inode) plus the few processes
//! that hold a terminal, so a quiet node costs little more than one readdir.
//! A periodic full resync bounds how long any missed change can live.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sessionguard_core::Session;

use super::group::{Candidate, group_by_terminal};
use super::procfs::ProcFs;
use crate::Error;
use crate::proc::{Stat, Status, parse_btime, parse_cgroup, parse_cmdline, parse_uptime, tty_name};

#[derive(Clone, Debug)]
pub struct ScannerConfig {
    /// Every n-th tick re-reads every pid (1 = always full).
    pub resync_every: u32,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        Self { resync_every: 30 }
    }
}

/// What one scan did, for metrics and logs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanStats {
    pub full: bool,
    pub pids: usize,
    pub stat_reads: usize,
    pub terminal_processes: usize,
    /// Pids that vanished while being read: churn, not errors.
    pub vanished: usize,
    pub errors: BTreeMap<&'static str, u64>,
    pub duration: Duration,
}

pub struct Scanner {
    fs: ProcFs,
    config: ScannerConfig,
    boot_ns: i128,
    tick_ns: i128,
    known: HashMap<u32, Known>,
    leaders: HashMap<(u32, u64), Leader>,
    generation: u32,
    pids: Vec<(u32, u64)>,
    buf: Vec<u8>,
}

struct Known {
    ino: u64,
    tty_nr: u32,
    generation: u32,
}

/// Slow-changing facts about a session leader, cached by (pid, starttime) so
/// a reused pid can never inherit them.
struct Leader {
    uid: u32,
    namespace_init: bool,
    argv: Vec<String>,
    generation: u32,
}

impl Scanner {
    pub fn new(fs: ProcFs, config: ScannerConfig) -> Result<Self, Error> {
        let boot_secs = match fs.read_top("stat").and_then(|s| parse_btime(&s)) {
            Ok(b) => b as f64,
            // Without btime, boot time is now minus uptime.
            Err(_) => {
                let up = parse_uptime(&fs.read_top("uptime")?)?;
                jiff::Timestamp::now().as_nanosecond() as f64 / 1e9 - up
            }
        };
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100);
        Ok(Self {
            fs,
            config,
            boot_ns: (boot_secs * 1e9) as i128,
            tick_ns: 1_000_000_000 / hz.max(1) as i128,
            known: HashMap::new(),
            leaders: HashMap::new(),
            generation: 0,
            pids: Vec::new(),
            buf: Vec::with_capacity(4096),
        })
    }

    pub fn proc_root(&self) -> &std::path::Path {
        self.fs.root()
    }

    /// One scan; full on the first call and every `resync_every` ticks.
    pub fn tick(&mut self) -> Result<(Vec<Session>, ScanStats), Error> {
        let full = self
            .generation
            .is_multiple_of(self.config.resync_every.max(1));
        self.scan(full)
    }

    pub fn scan(&mut self, full: bool) -> Result<(Vec<Session>, ScanStats), Error> {
        let started = Instant::now();
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let mut stats = ScanStats {
            full,
            ..ScanStats::default()
        };

        self.fs.pids(&mut self.pids)?;
        stats.pids = self.pids.len();
        let mut candidates = Vec::new();
        let pids = std::mem::take(&mut self.pids);
        for &(pid, ino) in &pids {
            let need = match self.known.get_mut(&pid) {
                Some(k) if !full && k.ino == ino && k.tty_nr == 0 => {
                    k.generation = generation;
                    false
                }
                _ => true,
            };
            if !need {
                continue;
            }
            stats.stat_reads += 1;
            if !fetch(&mut self.fs, pid, "stat", &mut self.buf, &mut stats) {
                continue;
            }
            let stat = match Stat::parse(&self.buf) {
                Ok(s) => s,
                // An empty file is a pid caught mid-exit.
                Err(_) if self.buf.is_empty() => {
                    stats.vanished += 1;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(pid, error = %e, "skipping pid");
                    *stats.errors.entry(e.kind()).or_default() += 1;
                    continue;
                }
            };
            let tty_nr = if stat.is_gone() { 0 } else { stat.tty_nr };
            self.known.insert(
                pid,
                Known {
                    ino,
                    tty_nr,
                    generation,
                },
            );
            if tty_nr != 0 {
                candidates.push((pid, stat.session, tty_nr, stat.starttime, stat.comm_lossy()));
            }
        }
        self.pids = pids;
        self.known.retain(|_, k| k.generation == generation);
        stats.terminal_processes = candidates.len();

        let mut in_pods = Vec::new();
        for (pid, session, tty_nr, starttime, comm) in candidates {
            if !fetch(&mut self.fs, pid, "cgroup", &mut self.buf, &mut stats) {
                continue;
            }
            if let Some(at) = parse_cgroup(&String::from_utf8_lossy(&self.buf)) {
                in_pods.push(Candidate {
                    pid,
                    session,
                    tty_nr,
                    starttime,
                    comm,
                    at,
                });
            }
        }

        let mut sessions = Vec::new();
        for group in group_by_terminal(in_pods) {
            let l = &group.leader;
            let key = (l.pid, l.starttime);
            if full || !self.leaders.contains_key(&key) {
                match self.read_leader(l.pid, &mut stats) {
                    Some(leader) => {
                        self.leaders.insert(key, leader);
                    }
                    None => continue,
                }
            }
            let leader = self.leaders.get_mut(&key).expect("inserted above");
            leader.generation = generation;
            let started_ns = self.boot_ns + l.starttime as i128 * self.tick_ns;
            sessions.push(Session {
                pod_uid: group.at.pod_uid.clone(),
                container_id: group.at.container_id.clone(),
                tty: tty_name(group.tty_nr),
                pid: l.pid,
                command: leader
                    .argv
                    .first()
                    .map_or_else(|| l.comm.clone(), |a| basename(a).to_string()),
                argv: leader.argv.clone(),
                uid: leader.uid,
                started_at: jiff::Timestamp::from_nanosecond(started_ns).unwrap_or_default(),
                processes: group.processes,
                console: leader.namespace_init,
                namespace: None,
                pod_name: None,
                container_name: None,
            });
        }
        self.leaders.retain(|_, l| l.generation == generation);
        stats.duration = started.elapsed();
        Ok((sessions, stats))
    }

    fn read_leader(&mut self, pid: u32, stats: &mut ScanStats) -> Option<Leader> {
        let mut read =
            |file: &'static str, buf: &mut Vec<u8>| fetch(&mut self.fs, pid, file, buf, stats);
        let mut buf = std::mem::take(&mut self.buf);
        let status =
            read("status", &mut buf).then(|| Status::parse(&String::from_utf8_lossy(&buf)));
        let leader = match status {
            Some(Ok(status)) => {
                // cmdline is optional: an unreadable one leaves the command name from stat.
                let argv = if read("cmdline", &mut buf) {
                    parse_cmdline(&buf)
                } else {
                    Vec::new()
                };
                Some(Leader {
                    uid: status.uid,
                    namespace_init: status.is_namespace_init(),
                    argv,
                    generation: 0,
                })
            }
            Some(Err(e)) => {
                *stats.errors.entry(e.kind()).or_default() += 1;
                None
            }
            None => None,
        };
        self.buf = buf;
        leader
    }
}

/// Reads one pid file; a vanished pid is counted as churn, any other failure
/// by kind. False means "skip this pid".
fn fetch(
    fs: &mut ProcFs,
    pid: u32,
    file: &'static str,
    buf: &mut Vec<u8>,
    stats: &mut ScanStats,
) -> bool {
    match fs.read(pid, file, buf) {
        Ok(true) => true,
        Ok(false) => {
            stats.vanished += 1;
            false
        }
        Err(e) => {
            *stats.errors.entry(e.kind()).or_default() += 1;
            false
        }
    }
}

fn basename(arg0: &str) -> &str {
    arg0.rsplit('/').next().unwrap_or(arg0)
}
