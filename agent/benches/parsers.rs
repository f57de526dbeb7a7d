//! Why `stat` keeps its hand-written parser: the full scan of a fake node
//! with the agent's parsers, and with procfs-core's stat parser swapped in.
//! Variants are interleaved round by round (each round starts at a different
//! one), so drift on a noisy machine hits them alike; the figure that counts
//! is the median over rounds of each variant's ratio to the baseline measured
//! in the same round. Per-parse times of the two stat parsers follow,
//! measured the same way. (Commit a0533c0 of this bench swapped every file's
//! parser; see `agent/README.md`.)
//!
//! `cargo bench -p sessionguard-agent --bench parsers`
//! Env: SG_BENCH_PROCS (20000), SG_BENCH_ROUNDS (41).
//! Under `cargo test --benches` it scans a small tree once and checks that
//! every variant finds the same sessions without errors.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use sessionguard_agent::proc::{self, Parsers};
use sessionguard_agent::scan::{ProcFs, Scanner, ScannerConfig};
use sessionguard_agent::testing::{FakeProc, populate_node};

const BTIME: u64 = 1_764_000_000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn variants() -> Vec<(&'static str, Parsers)> {
    vec![
        ("agent's parsers (baseline)", Parsers::default()),
        ("procfs-core stat", common::with_procfs_core_stat()),
    ]
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// One timed piece of work.
type Run<'a> = Box<dyn FnMut() + 'a>;

/// Runs `n` closures `rounds` times, interleaved, rotating which goes first.
fn interleaved(rounds: usize, fs: &mut [Run<'_>]) -> Vec<Vec<Duration>> {
    let n = fs.len();
    let mut samples = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let t = Instant::now();
            fs[i]();
            samples[i].push(t.elapsed());
        }
    }
    samples
}

/// One row per variant: its median, and the median of its per-round ratio
/// to row 0 with the interquartile range of that ratio.
fn print_rows(names: &[&str], samples: &[Vec<Duration>], unit: &str, per: f64) {
    println!(
        "{:<30} {:>12} {:>9} {:>17}",
        "variant", unit, "× base", "ratio IQR"
    );
    for (name, s) in names.iter().zip(samples) {
        let mut ratios: Vec<f64> = s
            .iter()
            .zip(&samples[0])
            .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
            .collect();
        ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q = |f: f64| ratios[((ratios.len() - 1) as f64 * f) as usize];
        let m = median(s.clone()).as_secs_f64() / per;
        let shown = if unit == "ms" { m * 1e3 } else { m * 1e9 };
        println!(
            "{name:<30} {shown:>12.2} {:>9.3} {:>8.3}–{:<8.3}",
            q(0.5),
            q(0.25),
            q(0.75)
        );
    }
}

fn full_scans(root: &Path, processes: usize, rounds: usize, bench: bool) {
    let variants = variants();
    let mut scanners: Vec<Scanner> = variants
        .iter()
        .map(|(_, parsers)| {
            let config = ScannerConfig {
                parsers: *parsers,
                ..ScannerConfig::default()
            };
            Scanner::new(ProcFs::open(root).unwrap(), config).unwrap()
        })
        .collect();
    // Every variant must do the same work, or the timing compares nothing.
    let (want, stats) = scanners[0].scan(true).unwrap();
    assert_eq!(want.len(), processes / 500, "{stats:?}");
    for ((name, _), s) in variants.iter().zip(&mut scanners) {
        let (got, stats) = s.scan(true).unwrap();
        assert_eq!(got, want, "{name}");
        assert!(stats.errors.is_empty(), "{name}: {:?}", stats.errors);
    }
    if !bench {
        return;
    }
    let mut runs: Vec<Run<'_>> = scanners
        .iter_mut()
        .map(|s| {
            Box::new(move || {
                black_box(s.scan(true).unwrap());
            }) as Run<'_>
        })
        .collect();
    let samples = interleaved(rounds, &mut runs);
    let names: Vec<&str> = variants.iter().map(|(n, _)| *n).collect();
    println!("\nfull scan, {processes} fake processes, median of {rounds} rounds");
    print_rows(&names, &samples, "ms", 1.0);
}

/// The two stat parsers on one line, `reps` parses a sample.
fn parse_times(root: &Path, rounds: usize, reps: usize) {
    let line = std::fs::read(root.join("500/stat")).unwrap();
    let mut runs: Vec<Run<'_>> = [proc::parse_stat, common::stat]
        .into_iter()
        .map(|parse| {
            let line = &line;
            Box::new(move || {
                for _ in 0..reps {
                    black_box(parse(black_box(line)).unwrap());
                }
            }) as Run<'_>
        })
        .collect();
    let samples = interleaved(rounds, &mut runs);
    println!("\nstat parse, median of {rounds} rounds of {reps}");
    print_rows(&["agent", "procfs-core"], &samples, "ns", reps as f64);
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (processes, rounds) = if bench {
        (
            env_or("SG_BENCH_PROCS", 20_000),
            env_or("SG_BENCH_ROUNDS", 41),
        )
    } else {
        (1_000, 1)
    };
    // tmpfs keeps the fake tree's I/O close to procfs's (no disk).
    let dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let fake = FakeProc::create(dir.path(), BTIME).unwrap();
    populate_node(&fake, processes as u32).unwrap();
    full_scans(fake.root(), processes, rounds, bench);
    if bench {
        parse_times(fake.root(), rounds, 2_000);
    }
}
