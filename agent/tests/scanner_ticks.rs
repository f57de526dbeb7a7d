//! The incremental scanner across ticks, on fake proc trees rewritten between
//! ticks: what a steady-state tick re-reads, and what it must never miss.

use sessionguard_agent::scan::{ScanStats, Scanner, ScannerConfig};
use sessionguard_agent::testing::{FakeProc, kernel_stat, pts};
use sessionguard_core::Session;

const POD: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const BTIME: u64 = 1_764_000_000;
/// `FakeProc` writes an uptime of 1000 s.
const UPTIME_SECS: u64 = 1000;

fn cid(c: char) -> String {
    c.to_string().repeat(64)
}

fn hz() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64
}

/// A tree with some background processes (old, no terminal) and a scanner
/// that has done its first, full scan of it.
fn setup() -> (tempfile::TempDir, FakeProc, Scanner) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProc::create(dir.path(), BTIME).unwrap();
    for pid in 1..=20 {
        fake.process(pid).write().unwrap();
    }
    let mut scanner = fake.scanner();
    let (sessions, stats) = scanner.tick().unwrap();
    assert!(stats.full && sessions.is_empty());
    assert_eq!(stats.stat_reads, 20);
    (dir, fake, scanner)
}

fn tick(scanner: &mut Scanner) -> (Vec<Session>, ScanStats) {
    let (sessions, stats) = scanner.tick().unwrap();
    assert!(!stats.full, "these tests run between resyncs");
    (sessions, stats)
}

#[test]
fn a_terminal_taken_after_the_first_read_is_found_on_the_next_tick() {
    let (_d, fake, mut scanner) = setup();
    // Forked by runc exec / sshd, not yet through setsid + TIOCSCTTY.
    let shell = || {
        fake.process(900)
            .comm("sh")
            .argv(&["sh"])
            .in_container(POD, &cid('c'))
    };
    shell().write().unwrap();
    let (sessions, stats) = tick(&mut scanner);
    assert!(sessions.is_empty());
    assert_eq!(stats.stat_reads, 1, "only the new pid is read");

    // Same pid, same directory: it now holds a terminal.
    shell().tty(pts(4)).leads_session().write().unwrap();
    let (sessions, _) = tick(&mut scanner);
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    assert_eq!((sessions[0].pid, sessions[0].tty.as_str()), (900, "pts/4"));
}

#[test]
fn young_pids_are_reread_for_a_few_ticks_then_left_alone() {
    let (_d, fake, mut scanner) = setup();
    let young_ticks = ScannerConfig::default().young_ticks as usize;
    // Started long ago by the tree's clock, so only its novelty makes it young.
    fake.process(901).write().unwrap();
    let reads: Vec<(usize, usize)> = (0..young_ticks + 3)
        .map(|_| {
            let (_, s) = tick(&mut scanner);
            (s.stat_reads, s.young)
        })
        .collect();
    let mut want = vec![(1, 0)];
    want.extend(std::iter::repeat_n((1, 1), young_ticks));
    want.extend([(0, 0), (0, 0)]);
    assert_eq!(reads, want);
}

#[test]
fn a_process_young_by_its_start_time_is_reread_after_the_first_scan() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProc::create(dir.path(), BTIME).unwrap();
    // Half a second old by the tree's uptime, already there at the first scan.
    let young = || {
        fake.process(910)
            .comm("sh")
            .started_at_tick(UPTIME_SECS * hz() - hz() / 2)
            .in_container(POD, &cid('d'))
    };
    young().write().unwrap();
    // Old, and also without a terminal at the first scan.
    let old = || fake.process(911).comm("sh").in_container(POD, &cid('e'));
    old().write().unwrap();
    let mut scanner = fake.scanner();
    assert!(scanner.tick().unwrap().0.is_empty());

    young().tty(pts(1)).leads_session().write().unwrap();
    old().tty(pts(2)).leads_session().write().unwrap();
    let (sessions, stats) = tick(&mut scanner);
    assert_eq!(stats.stat_reads, 1, "the old pid is not re-read");
    let pids: Vec<u32> = sessions.iter().map(|s| s.pid).collect();
    assert_eq!(pids, [910]);

    // The old one waits for the resync, which bounds how long it can hide.
    let (sessions, stats) = scanner.scan(true).unwrap();
    assert_eq!(stats.stat_reads, 3, "910, 911 and the tree's init");
    let mut pids: Vec<u32> = sessions.iter().map(|s| s.pid).collect();
    pids.sort();
    assert_eq!(pids, [910, 911]);
}

#[test]
fn a_reused_pid_does_not_inherit_the_leader() {
    let (_d, fake, mut scanner) = setup();
    let login = |uid: u32, argv: &str, start: u64| {
        fake.process(920)
            .comm(argv)
            .argv(&[argv])
            .uid(uid)
            .started_at_tick(start)
            .tty(pts(1))
            .leads_session()
            .in_container(POD, &cid('a'))
    };
    login(1000, "bash", 5000).write().unwrap();
    let (s, _) = tick(&mut scanner);
    assert_eq!((s[0].uid, s[0].command.as_str()), (1000, "bash"));
    let first_start = s[0].started_at;

    // The pid exits and is reused: a new /proc/<pid> directory.
    login(2000, "zsh", 6000).write_replacing().unwrap();
    let (s, _) = tick(&mut scanner);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].uid, s[0].command.as_str()), (2000, "zsh"));
    assert!(s[0].started_at > first_start);

    // Reused with the same directory inode: only the start time tells.
    login(3000, "fish", 7000).write().unwrap();
    let (s, _) = tick(&mut scanner);
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].uid, s[0].command.as_str(), s[0].argv.as_slice()),
        (3000, "fish", &["fish".to_string()][..])
    );
}

#[test]
fn a_reused_pid_without_a_terminal_yet_is_young_again() {
    let (_d, fake, mut scanner) = setup();
    // An old background process, soon skipped by steady-state ticks...
    fake.process(930).started_at_tick(100).write().unwrap();
    for _ in 0..=ScannerConfig::default().young_ticks {
        tick(&mut scanner);
    }
    assert_eq!(tick(&mut scanner).1.stat_reads, 0);
    // ...exits, and its pid goes to a login that takes a terminal a moment
    // later. Its start time is old by the tree's clock, so only the new
    // directory makes it young.
    fake.process(930)
        .started_at_tick(200)
        .in_container(POD, &cid('b'))
        .write_replacing()
        .unwrap();
    assert!(tick(&mut scanner).0.is_empty());
    fake.process(930)
        .started_at_tick(200)
        .tty(pts(6))
        .leads_session()
        .in_container(POD, &cid('b'))
        .write()
        .unwrap();
    let (s, _) = tick(&mut scanner);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0].tty, "pts/6");
}

#[test]
fn a_new_directory_inode_with_the_same_start_time_is_the_same_process() {
    let (_d, fake, mut scanner) = setup();
    // An old background process, past its young ticks...
    fake.process(935).started_at_tick(100).write().unwrap();
    // ...and a login, whose leader is cached.
    let login = |uid: u32| {
        fake.process(936)
            .comm("bash")
            .argv(&["bash"])
            .uid(uid)
            .started_at_tick(300)
            .tty(pts(7))
            .leads_session()
            .in_container(POD, &cid('c'))
    };
    login(1000).write().unwrap();
    for _ in 0..=ScannerConfig::default().young_ticks {
        tick(&mut scanner);
    }
    let (s, stats) = tick(&mut scanner);
    assert_eq!(stats.stat_reads, 1, "only the terminal is re-read");
    assert_eq!(s[0].uid, 1000);

    // The kernel evicted and rebuilt both dentries: new inodes, same
    // processes. The new status would only show if the leader were re-read.
    fake.process(935)
        .started_at_tick(100)
        .write_replacing()
        .unwrap();
    login(2000).write_replacing().unwrap();
    let (s, stats) = tick(&mut scanner);
    assert_eq!((stats.stat_reads, stats.young), (2, 0), "{stats:?}");
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0].uid, 1000, "the leader cache is kept");
    let (s, stats) = tick(&mut scanner);
    assert_eq!(
        (stats.stat_reads, stats.young),
        (1, 0),
        "not young again: {stats:?}"
    );
    assert_eq!(s[0].uid, 1000);
}

#[test]
fn boot_time_is_reread_on_each_resync() {
    let (_d, fake, mut scanner) = setup();
    fake.process(940)
        .tty(pts(0))
        .leads_session()
        .started_at_tick(0)
        .in_container(POD, &cid('f'))
        .write()
        .unwrap();
    let at = |s: &[Session]| s[0].started_at.as_second();
    let write_btime =
        |btime: u64| std::fs::write(fake.root().join("stat"), kernel_stat(btime)).unwrap();
    assert_eq!(at(&tick(&mut scanner).0), BTIME as i64);
    // The kernel recomputes btime on each read, a second either way: jitter,
    // not a clock step, so a resync keeps the boot time.
    write_btime(BTIME + 1);
    assert_eq!(at(&scanner.scan(true).unwrap().0), BTIME as i64);
    // The wall clock was stepped: the kernel's btime moves with it.
    write_btime(BTIME + 100);
    assert_eq!(
        at(&tick(&mut scanner).0),
        BTIME as i64,
        "cached between resyncs"
    );
    assert_eq!(at(&scanner.scan(true).unwrap().0), BTIME as i64 + 100);

    // A broken /proc/stat later on keeps the last good boot time, counted.
    std::fs::write(fake.root().join("stat"), "cpu 1\n").unwrap();
    std::fs::remove_file(fake.root().join("uptime")).unwrap();
    let (s, stats) = scanner.scan(true).unwrap();
    assert_eq!(at(&s), BTIME as i64 + 100);
    assert_eq!(stats.errors.values().sum::<u64>(), 1, "{:?}", stats.errors);
}

#[test]
fn a_start_time_past_year_9999_is_an_error_not_1970() {
    let (_d, fake, mut scanner) = setup();
    fake.process(950)
        .tty(pts(0))
        .leads_session()
        .started_at_tick(u64::MAX)
        .in_container(POD, &cid('a'))
        .write()
        .unwrap();
    fake.process(951)
        .tty(pts(1))
        .leads_session()
        .in_container(POD, &cid('a'))
        .write()
        .unwrap();
    let (s, stats) = tick(&mut scanner);
    let pids: Vec<u32> = s.iter().map(|s| s.pid).collect();
    assert_eq!(pids, [951]);
    assert_eq!(
        stats.errors.get("starttime"),
        Some(&1),
        "{:?}",
        stats.errors
    );
}

/// pid 960: bash as the container's init, holding pts/2 (a console).
fn write_console_leader(fake: &FakeProc) {
    fake.process(960)
        .comm("bash")
        .argv(&["bash"])
        .uid(1000)
        .tty(pts(2))
        .leads_session()
        .container_init()
        .in_container(POD, &cid('a'))
        .write()
        .unwrap();
}

#[test]
fn an_unreadable_leader_status_keeps_the_session() {
    let (_d, fake, mut scanner) = setup();
    write_console_leader(&fake);
    fake.write_raw(960, "status", b"Name:\tbash\nUid:\tnope\n")
        .unwrap();
    let (s, stats) = tick(&mut scanner);
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(stats.errors.get("status"), Some(&1), "{:?}", stats.errors);
    // The uid falls back to the owner of /proc/<pid> (here: whoever wrote the
    // tree); whether it is its container's first process does not need status.
    assert_eq!(s[0].uid, nix::unistd::Uid::effective().as_raw());
    assert!(s[0].init);
    assert_eq!(s[0].command, "bash");

    // The fallback is cached like any leader, not re-read (and counted) on
    // every tick; once status reads again, the next resync uses it.
    write_console_leader(&fake);
    let (s, stats) = tick(&mut scanner);
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(s[0].uid, nix::unistd::Uid::effective().as_raw());
    let (s, stats) = scanner.scan(true).unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!((s[0].uid, s[0].console), (1000, true));
}

#[test]
fn rewritten_process_titles_keep_a_useful_command() {
    let (_d, fake, mut scanner) = setup();
    fake.process(970)
        .comm("sshd")
        .argv(&["sshd: ops@pts/0"])
        .tty(pts(0))
        .leads_session()
        .in_container(POD, &cid('a'))
        .write()
        .unwrap();
    let (s, _) = tick(&mut scanner);
    assert_eq!(s[0].command, "sshd");
    assert_eq!(s[0].argv, ["sshd: ops@pts/0"]);
}

#[test]
fn a_huge_cmdline_is_read_only_up_to_the_cap() {
    use sessionguard_agent::proc::cmdline::CMDLINE_READ_MAX;
    let (_d, fake, mut scanner) = setup();
    // 600 arguments of 500 bytes: 300 KB, as `bash -c '<script>' args...` can be.
    let arg = "é".repeat(250);
    let mut argv = vec!["bash", "-c"];
    argv.extend(std::iter::repeat_n(arg.as_str(), 600));
    fake.process(902)
        .comm("bash")
        .argv(&argv)
        .tty(pts(5))
        .leads_session()
        .in_container(POD, &cid('d'))
        .write()
        .unwrap();
    let (sessions, _) = tick(&mut scanner);
    let argv = &sessions[0].argv;
    let bytes: usize = argv.iter().map(|a| a.len() + 1).sum();
    // What was read, plus the marker and a replacement character where the
    // cap split an é.
    assert!(bytes <= CMDLINE_READ_MAX + 8, "{bytes} bytes read");
    assert!(argv.len() < 600, "{} items", argv.len());
    assert_eq!(argv[..3], ["bash", "-c", arg.as_str()]);
    assert!(argv.last().unwrap().ends_with('…'), "{:?}", argv.last());
}

#[test]
fn idle_time_grows_while_the_terminal_processes_do_nothing_and_resets_on_any_change() {
    let (_d, fake, mut scanner) = setup();
    let shell = || {
        fake.process(980)
            .comm("bash")
            .tty(pts(6))
            .leads_session()
            .in_container(POD, &cid('d'))
    };
    shell().write().unwrap();
    let t0 = std::time::Instant::now();
    let wall = jiff::Timestamp::now();
    let at = |secs: u64| {
        let (now, wall) = (
            t0 + std::time::Duration::from_secs(secs),
            wall + jiff::SignedDuration::from_secs(secs as i64),
        );
        move |scanner: &mut Scanner| {
            let (s, stats) = scanner.scan_at(false, now, wall).unwrap();
            assert_eq!(s.len(), 1, "{s:#?}");
            assert_eq!(stats.idle_from_terminal, 0, "a fake tree has no fds");
            assert!(stats.errors.is_empty(), "{:?}", stats.errors);
            s[0].idle_seconds
        }
    };
    assert_eq!(at(0)(&mut scanner), 0, "a new session is active");
    assert_eq!(at(90)(&mut scanner), 90);
    // A keystroke: the shell woke once.
    shell().switches(151, 3).write().unwrap();
    assert_eq!(at(100)(&mut scanner), 0);
    assert_eq!(at(130)(&mut scanner), 30);
    // CPU time moved.
    shell().switches(151, 3).cpu(1, 2).write().unwrap();
    assert_eq!(at(131)(&mut scanner), 0);
    // A command started on the terminal, then did nothing.
    fake.process(981)
        .comm("sleep")
        .tty(pts(6))
        .session(980)
        .in_container(POD, &cid('d'))
        .write()
        .unwrap();
    assert_eq!(at(140)(&mut scanner), 0);
    assert_eq!(at(150)(&mut scanner), 10);
    // ...and ended.
    fake.kill(981).unwrap();
    assert_eq!(at(160)(&mut scanner), 0);
}
