//! Scan cost on a fake proc tree of 20,000 processes (a large node), with a
//! straightforward procfs-crate scan as the baseline in the same run.
//!
//! `cargo bench -p sessionguard-agent --bench scan`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use sessionguard_agent::proc::{parse_cgroup, parse_stat};
use sessionguard_agent::scan::{ProcFs, Scanner, ScannerConfig};
use sessionguard_agent::testing::{FakeProc, populate_node};

const PROCESSES: u32 = 20_000;

fn build_tree(root: &Path) -> FakeProc {
    let fake = FakeProc::create(root, 1_764_000_000).unwrap();
    populate_node(&fake, PROCESSES).unwrap();
    fake
}

/// What a straightforward agent would do with the procfs crate: every
/// process's stat, then the cgroup of those with a terminal.
fn procfs_baseline(root: &Path) -> usize {
    let mut found = 0;
    for p in procfs::process::all_processes_with_root(root)
        .unwrap()
        .flatten()
    {
        if p.stat().is_ok_and(|s| s.tty_nr != 0) && p.cgroups().is_ok() {
            found += 1;
        }
    }
    found
}

fn benches(c: &mut Criterion) {
    // tmpfs keeps the fake tree's I/O close to procfs's (no disk).
    let base = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let fake = build_tree(base.path());
    let root = fake.root().to_path_buf();

    let mut g = c.benchmark_group("scan_20k_fake");
    g.sample_size(20);
    g.bench_function("procfs_crate_baseline", |b| {
        b.iter(|| black_box(procfs_baseline(&root)))
    });
    let mut full = Scanner::new(ProcFs::open(&root).unwrap(), ScannerConfig::default()).unwrap();
    g.bench_function("full_scan", |b| {
        b.iter(|| black_box(full.scan(true).unwrap().0.len()))
    });
    let mut inc = Scanner::new(ProcFs::open(&root).unwrap(), ScannerConfig::default()).unwrap();
    inc.scan(true).unwrap();
    g.bench_function("incremental_tick", |b| {
        b.iter(|| black_box(inc.scan(false).unwrap().0.len()))
    });
    let mut fs = ProcFs::open(&root).unwrap();
    let mut pids = Vec::new();
    g.bench_function("readdir_floor", |b| {
        b.iter(|| {
            fs.pids(&mut pids).unwrap();
            black_box(pids.len())
        })
    });
    g.finish();

    let line = b"4242 (bash) S 4241 4242 4242 34816 4300 4194560 1234 0 0 0 3 1 0 0 20 0 1 0 987654 8900608 1200 18446744073709551615 1 1 0 0 0 0 65536 3670020 1266777851 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    c.bench_function("parse_stat", |b| {
        b.iter(|| black_box(parse_stat(black_box(line)).unwrap().tty_nr))
    });
    let cg = b"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c.scope\n";
    c.bench_function("parse_cgroup", |b| {
        b.iter(|| black_box(parse_cgroup(black_box(cg)).unwrap().is_some()))
    });
}

criterion_group!(scan, benches);
criterion_main!(scan);
