//! Scan cost on this machine with a few thousand real processes, against
//! `ps -e -o pid,tty,cgroup` in the same run, plus the daemon's CPU and RSS
//! at 1 s and 0.5 s intervals, with and without the pid cursor. Prints
//! ratios; the machine is noisy, so only ratios measured side by side mean
//! anything.
//!
//! `cargo bench -p sessionguard-agent --bench real_procs`
//! Env: SG_BENCH_PROCS (default 3000 extra processes), SG_BENCH_ROUNDS (15),
//! SG_BENCH_DAEMON_SECS (95: three resyncs at 1 s).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sessionguard_agent::scan::{ProcFs, Scanner, ScannerConfig};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

fn median<T: PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v.swap_remove(v.len() / 2)
}

fn time<T>(f: impl FnOnce() -> T) -> Duration {
    let t = Instant::now();
    std::hint::black_box(f());
    t.elapsed()
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo test --benches` runs bench targets with no `--bench`; do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let extra = env_or("SG_BENCH_PROCS", 3000);
    let rounds = env_or("SG_BENCH_ROUNDS", 15) as usize;
    let daemon_secs = env_or("SG_BENCH_DAEMON_SECS", 95);

    let mut sleepers = Sleepers(Vec::new());
    for _ in 0..extra {
        let c = Command::new("sleep")
            .arg("3600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        sleepers.0.push(c);
    }
    let spawned = Instant::now();
    let total = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
        })
        .count();
    println!("processes on the host: {total} ({extra} spawned by this bench)");

    let agent = env!("CARGO_BIN_EXE_sessionguard-agent");
    let mut full = Scanner::new(
        ProcFs::open("/proc".as_ref()).unwrap(),
        ScannerConfig::default(),
    )
    .unwrap();
    // The same full scan with procfs-core's stat parser (see the parsers bench).
    let mut core_stat = Scanner::new(
        ProcFs::open("/proc".as_ref()).unwrap(),
        ScannerConfig {
            parsers: common::with_procfs_core_stat(),
            ..ScannerConfig::default()
        },
    )
    .unwrap();
    let mut inc = Scanner::new(
        ProcFs::open("/proc".as_ref()).unwrap(),
        ScannerConfig::default(),
    )
    .unwrap();
    inc.scan(true).unwrap();
    // The same ticks with a listing each (`--pid-cursor=false`): the baseline.
    let mut listing = Scanner::new(
        ProcFs::open("/proc".as_ref()).unwrap(),
        ScannerConfig {
            pid_cursor: false,
            ..ScannerConfig::default()
        },
    )
    .unwrap();
    listing.scan(true).unwrap();
    // The sleepers were just spawned, and the scanner re-reads young processes
    // (they may be about to take a terminal): measure the steady state, once
    // they are older than `young_for` and its extra ticks have passed. Pacing,
    // not synchronisation: on a busy host other processes are always young.
    let young = ScannerConfig::default();
    while spawned.elapsed() < young.young_for + Duration::from_secs(1) {
        inc.scan(false).unwrap();
        listing.scan(false).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..young.young_ticks {
        inc.scan(false).unwrap();
        listing.scan(false).unwrap();
    }
    println!(
        "young processes still re-read per tick (others on this host): {}",
        inc.scan(false).unwrap().1.young
    );
    let mut fs = ProcFs::open("/proc".as_ref()).unwrap();
    let (mut pids, mut buf) = (Vec::new(), Vec::new());

    let names = [
        "ps -e -o pid,tty,cgroup",
        "agent scan (binary, JSON)",
        "full scan (in-process)",
        "  with procfs-core stat",
        "procfs crate scan",
        "stat of every pid",
        "incremental tick (pid cursor)",
        "  listing every tick",
        "readdir only",
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        samples[0].push(time(|| {
            Command::new("ps")
                .args(["-e", "-o", "pid,tty,cgroup"])
                .stdout(Stdio::null())
                .status()
                .unwrap()
        }));
        samples[1].push(time(|| {
            Command::new(agent)
                .args(["scan", "-o", "json"])
                .stdout(Stdio::null())
                .status()
                .unwrap()
        }));
        samples[2].push(time(|| full.scan(true).unwrap()));
        samples[3].push(time(|| core_stat.scan(true).unwrap()));
        samples[4].push(time(|| {
            procfs::process::all_processes()
                .unwrap()
                .flatten()
                .filter(|p| p.stat().is_ok_and(|s| s.tty_nr != 0) && p.cgroups().is_ok())
                .count()
        }));
        samples[5].push(time(|| {
            fs.pids(&mut pids).unwrap();
            pids.iter()
                .filter(|(pid, _)| fs.read(*pid, "stat", &mut buf).unwrap_or(false))
                .count()
        }));
        samples[6].push(time(|| inc.scan(false).unwrap()));
        samples[7].push(time(|| listing.scan(false).unwrap()));
        samples[8].push(time(|| fs.pids(&mut pids).unwrap()));
    }
    let base = median(samples[0].clone());
    println!(
        "\n{:<30} {:>12} {:>10} {:>12}",
        "what (median of rounds)", "time", "× ps", "× full scan"
    );
    for (name, s) in names.iter().zip(&samples) {
        let m = median(s.clone());
        // Median of per-round ratios: the scans of one round ran back to back.
        let vs_full = median(
            s.iter()
                .zip(&samples[2])
                .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
                .collect(),
        );
        println!(
            "{name:<30} {:>10.2?} {:>10.3} {:>12.3}",
            m,
            m.as_secs_f64() / base.as_secs_f64(),
            vs_full
        );
    }

    // The daemon: CPU share of one core and memory, at its defaults, with a
    // listing on every tick (the baseline), and at half the interval; the
    // three side by side over the same window, which should span a few
    // resyncs (every 30th tick re-reads every pid). At 0.5 s, every 60th
    // keeps the resync's 30 s period: it is most of a cursor tick's cost.
    let configs = [
        ("1s", "false", "30"),
        ("1s", "true", "30"),
        ("500ms", "true", "60"),
    ];
    let mut daemons: Vec<Daemon> = configs
        .iter()
        .map(|&(interval, cursor, resync)| Daemon::start(agent, interval, cursor, resync))
        .collect();
    // Let start-up and the first full scan pass before measuring the steady state.
    std::thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    let c0: Vec<u64> = daemons.iter().map(|d| cpu_ticks(d.0.id())).collect();
    std::thread::sleep(Duration::from_secs(daemon_secs));
    let secs = t0.elapsed().as_secs_f64();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as f64;
    println!();
    for ((d, c0), (interval, cursor, resync)) in daemons.iter_mut().zip(c0).zip(configs) {
        let pid = d.0.id();
        println!(
            "daemon at {interval} interval, --pid-cursor={cursor}, --resync-every={resync}, over {secs:.0}s: CPU {:.3}% of one core; VmRSS {} KiB, VmHWM {} KiB",
            (cpu_ticks(pid) - c0) as f64 / hz / secs * 100.0,
            status_kib(pid, "VmRSS:"),
            status_kib(pid, "VmHWM:")
        );
    }
}

/// An agent daemon, killed and reaped on drop.
struct Daemon(Child);

impl Daemon {
    fn start(agent: &str, interval: &str, cursor: &str, resync: &str) -> Self {
        let child = Command::new(agent)
            .args([
                "run",
                "--report=false",
                "--node-name",
                "bench",
                "--listen-addr",
                "127.0.0.1:0",
                "--interval",
                interval,
                "--pid-cursor",
                cursor,
                "--resync-every",
                resync,
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
