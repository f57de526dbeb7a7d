//! Ticks without a listing, on fake proc trees whose `thread-self` link each
//! test moves as the kernel would move the newest pid (see `scan/cursor.rs`):
//! what such a tick reads, and when it must list after all.

use sessionguard_agent::scan::{ScanStats, Scanner};
use sessionguard_agent::testing::{FakeProc, pts};
use sessionguard_core::Session;

const POD: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const BTIME: u64 = 1_764_000_000;
/// `FakeProc` writes an uptime of 1000 s; at 100 Hz, tick 100,000 is now.
const NOW_TICKS: u64 = 100_000;

fn cid(c: char) -> String {
    c.to_string().repeat(64)
}

/// A node of 20 old processes, the newest pid 20, and a scanner that has
/// done its first scan (a listing).
fn setup() -> (tempfile::TempDir, FakeProc, Scanner) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProc::create(dir.path(), BTIME).unwrap();
    for pid in 2..=20 {
        fake.process(pid).write().unwrap();
    }
    fake.set_newest_pid(20).unwrap();
    let mut scanner = fake.scanner();
    let (_, stats) = scanner.tick().unwrap();
    assert!(stats.listed && stats.full);
    (dir, fake, scanner)
}

fn tick(scanner: &mut Scanner) -> (Vec<Session>, ScanStats) {
    let (sessions, stats) = scanner.tick().unwrap();
    assert!(!stats.full, "these tests run between resyncs");
    (sessions, stats)
}

/// A login: a shell leading its session on pts/`n`, started now.
fn login(fake: &FakeProc, pid: u32, n: u32) {
    fake.process(pid)
        .comm("bash")
        .argv(&["bash"])
        .tty(pts(n))
        .leads_session()
        .started_at_tick(NOW_TICKS)
        .in_container(POD, &cid('c'))
        .write()
        .unwrap();
}

#[test]
fn a_quiet_tick_reads_nothing_but_the_interval_and_lists_nothing() {
    let (_d, _fake, mut scanner) = setup();
    let (sessions, stats) = tick(&mut scanner);
    assert!(sessions.is_empty());
    assert!(!stats.listed, "{stats:?}");
    assert_eq!(stats.stat_reads, 0);
    assert_eq!(stats.pids, 20, "the last listing's count");
}

#[test]
fn pids_of_processes_gone_before_the_tick_are_not_churn() {
    let (_d, fake, mut scanner) = setup();
    // Five short-lived processes (or threads) took pids 21 to 25 and were
    // gone before the tick read their interval.
    fake.set_newest_pid(25).unwrap();
    let (sessions, stats) = tick(&mut scanner);
    assert!(sessions.is_empty());
    assert!(!stats.listed, "{stats:?}");
    assert_eq!(stats.stat_reads, 5, "the interval is read: {stats:?}");
    assert_eq!(stats.vanished, 0, "none exited while being read: {stats:?}");
}

#[test]
fn a_login_is_found_from_the_interval_alone() {
    let (_d, fake, mut scanner) = setup();
    login(&fake, 21, 3);
    fake.set_newest_pid(21).unwrap();
    let (sessions, stats) = tick(&mut scanner);
    assert!(!stats.listed);
    assert_eq!(stats.stat_reads, 1, "only the new pid: {stats:?}");
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    assert_eq!((sessions[0].pid, sessions[0].tty.as_str()), (21, "pts/3"));

    // While it lasts, its leader is read on every tick, still without a listing.
    fake.set_newest_pid(22).unwrap();
    let (sessions, stats) = tick(&mut scanner);
    assert!(!stats.listed);
    assert_eq!(sessions.len(), 1);
}

#[test]
fn a_logout_is_confirmed_by_a_listing() {
    let (_d, fake, mut scanner) = setup();
    login(&fake, 21, 3);
    fake.set_newest_pid(21).unwrap();
    assert_eq!(tick(&mut scanner).0.len(), 1);
    fake.kill(21).unwrap();
    let (sessions, stats) = tick(&mut scanner);
    assert!(sessions.is_empty());
    assert_eq!(stats.lost_leaders, 1);
    assert!(stats.listed, "a vanished leader is checked by a listing");
    assert_eq!(stats.vanished, 1, "the leader exited: churn");
    // And the node is quiet again.
    assert!(!tick(&mut scanner).1.listed);
}

#[test]
fn a_hidden_leader_fails_the_tick_instead_of_ending_the_session() {
    let (_d, fake, mut scanner) = setup();
    login(&fake, 21, 3);
    fake.set_newest_pid(21).unwrap();
    assert_eq!(tick(&mut scanner).0.len(), 1);
    // A filter now hides every process but pid 1: to a tick without a
    // listing, the leader simply vanished.
    for pid in 2..=21 {
        fake.kill(pid).unwrap();
    }
    fake.write_top("loadavg", "0.00 0.00 0.00 1/400 21\n")
        .unwrap();
    let err = scanner.tick().unwrap_err();
    assert!(
        matches!(err, sessionguard_agent::Error::Filtered { .. }),
        "{err}"
    );
}

#[test]
fn a_tick_lists_when_pid_1_is_unreadable() {
    let (_d, fake, mut scanner) = setup();
    fake.kill(1).unwrap();
    let err = scanner.tick().unwrap_err();
    assert!(
        matches!(err, sessionguard_agent::Error::Filtered { .. }),
        "{err}"
    );
}

#[test]
fn a_thread_on_a_terminal_is_not_a_process_of_its_session() {
    let (_d, fake, mut scanner) = setup();
    login(&fake, 21, 3);
    // Pid 22, a process of the session; tid 23, a thread of it. Only the
    // cursor names a tid (a real listing does not show it).
    fake.process(22)
        .tty(pts(3))
        .session(21)
        .started_at_tick(NOW_TICKS)
        .in_container(POD, &cid('c'))
        .write()
        .unwrap();
    fake.process(23)
        .tty(pts(3))
        .session(21)
        .started_at_tick(NOW_TICKS)
        .in_container(POD, &cid('c'))
        .thread_of(22)
        .write()
        .unwrap();
    fake.set_newest_pid(23).unwrap();
    let (sessions, stats) = tick(&mut scanner);
    assert!(!stats.listed);
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    assert_eq!(
        sessions[0].processes, 2,
        "the shell and pid 22, not the thread"
    );
}

#[test]
fn a_busy_interval_lists_instead() {
    let (_d, fake, mut scanner) = setup();
    login(&fake, 30_000, 3);
    fake.set_newest_pid(30_000).unwrap();
    let (sessions, stats) = tick(&mut scanner);
    assert!(stats.listed, "29,980 new pids: cheaper to list");
    assert_eq!(sessions.len(), 1);
}

#[test]
fn a_wrapped_interval_reads_the_top_and_the_bottom_of_the_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProc::create(dir.path(), BTIME).unwrap();
    fake.write_top("sys/kernel/pid_max", "32768\n").unwrap();
    fake.process(32_760).write().unwrap();
    fake.set_newest_pid(32_760).unwrap();
    let mut scanner = fake.scanner();
    assert!(scanner.tick().unwrap().1.listed);
    login(&fake, 32_767, 3);
    login(&fake, 301, 4);
    fake.set_newest_pid(301).unwrap();
    let (sessions, stats) = tick(&mut scanner);
    assert!(!stats.listed, "{stats:?}");
    let mut ttys: Vec<_> = sessions.iter().map(|s| s.tty.as_str()).collect();
    ttys.sort();
    assert_eq!(ttys, ["pts/3", "pts/4"]);
}

#[test]
fn a_process_the_cursor_did_not_name_turns_it_off_at_the_next_listing() {
    let (_d, fake, mut scanner) = setup();
    // A new login whose pid is outside what the probe says was handed out:
    // what a proc root of another pid namespace would look like.
    fake.process(7_000)
        .tty(pts(3))
        .leads_session()
        // Long after the probe, by the tree's clock.
        .started_at_tick(NOW_TICKS * 2)
        .in_container(POD, &cid('c'))
        .write()
        .unwrap();
    let (sessions, stats) = tick(&mut scanner);
    assert!(!stats.listed && sessions.is_empty(), "not named, not read");
    // The resync's listing finds it, young and unnamed: a miss.
    let (sessions, stats) = scanner.scan(true).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(stats.cursor_misses, 1);
    // From now on every tick lists.
    let (_, stats) = tick(&mut scanner);
    assert!(stats.listed);
}

#[test]
fn an_old_process_a_listing_finds_unknown_is_no_miss() {
    let (_d, fake, mut scanner) = setup();
    // Started long before the last probe; unknown because (say) its `stat`
    // was unreadable then. Not created since: the cursor stays on.
    fake.process(7_000).started_at_tick(5_000).write().unwrap();
    let (_, stats) = scanner.scan(true).unwrap();
    assert_eq!(stats.cursor_misses, 0);
    assert!(!tick(&mut scanner).1.listed);
}

#[test]
fn a_tree_without_thread_self_lists_on_every_tick() {
    let (_d, fake, mut scanner) = setup();
    std::fs::remove_file(fake.root().join("thread-self")).unwrap();
    assert!(tick(&mut scanner).1.listed);
}

#[test]
fn a_leader_that_cannot_be_read_is_checked_by_a_listing() {
    let (_d, fake, mut scanner) = setup();
    login(&fake, 21, 3);
    fake.set_newest_pid(21).unwrap();
    assert_eq!(tick(&mut scanner).0.len(), 1);
    // Its `stat` now fails to read (a directory in its place: EISDIR), as
    // an LSM denial would.
    let stat = fake.root().join("21/stat");
    std::fs::remove_file(&stat).unwrap();
    std::fs::create_dir(&stat).unwrap();
    let (_, stats) = tick(&mut scanner);
    assert_eq!(stats.lost_leaders, 1);
    assert!(stats.listed, "{stats:?}");
}
