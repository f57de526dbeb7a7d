//! The scanner on fake proc trees that hide processes the way a filtered
//! proc does: it refuses to scan, names the cause, and leaves its state as it
//! was, so the first good scan afterwards is still a full one.

use sessionguard_agent::Error;
use sessionguard_agent::proc::Reason;
use sessionguard_agent::scan::Scanner;
use sessionguard_agent::testing::FakeProc;

const BTIME: u64 = 1_764_000_000;

fn tree(pids: u32) -> (tempfile::TempDir, FakeProc) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProc::create(dir.path(), BTIME).unwrap();
    for pid in 2..=pids {
        fake.process(pid).write().unwrap();
    }
    (dir, fake)
}

fn reason(scanner: &mut Scanner) -> (Reason, String) {
    let e = scanner.tick().expect_err("a filtered proc must not scan");
    match &e {
        Error::Filtered { filtered, .. } => (filtered.reason, e.to_string()),
        other => panic!("not filtered: {other}"),
    }
}

#[test]
fn no_pid_1_is_filtered_until_it_is_back_and_the_next_scan_is_still_full() {
    let (_d, fake) = tree(20);
    fake.kill(1).unwrap();
    let mut scanner = fake.scanner();
    let (r, text) = reason(&mut scanner);
    assert_eq!(r, Reason::NoPid1);
    assert!(text.contains("visible processes: 19"), "{text}");
    assert_eq!(reason(&mut scanner).0, Reason::NoPid1);

    fake.process(1).write().unwrap();
    let (_, stats) = scanner.tick().unwrap();
    assert!(
        stats.full,
        "refused scans must not use up the first, full one"
    );
    assert_eq!(stats.stat_reads, 20);
}

#[test]
fn far_fewer_processes_than_threads_is_filtered() {
    let (_d, fake) = tree(10);
    // 64 threads per process is still believable; 65 is not.
    fake.write_top("loadavg", "0.50 0.40 0.30 2/640 4242\n")
        .unwrap();
    let mut scanner = fake.scanner();
    scanner.tick().unwrap();
    fake.write_top("loadavg", "0.50 0.40 0.30 2/641 4242\n")
        .unwrap();
    let (r, text) = reason(&mut scanner);
    assert_eq!(r, Reason::FewPids);
    assert!(text.contains("threads on the machine: 641"), "{text}");
    // A malformed loadavg leaves the thread check out rather than failing scans.
    fake.write_top("loadavg", "garbage\n").unwrap();
    scanner.tick().unwrap();
}

#[test]
fn the_proc_mounts_hidepid_is_named_as_the_cause() {
    let (_d, fake) = tree(5);
    let root = fake.root().canonicalize().unwrap();
    fake.write_top(
        "self/mountinfo",
        &format!(
            "22 1 253:1 / / rw - ext4 /dev/vda1 rw\n\
             23 22 0:21 / /proc rw - proc proc rw\n\
             88 22 0:30 / {} rw,nosuid - proc proc rw,hidepid=ptraceable,gid=1234\n",
            root.display()
        ),
    )
    .unwrap();
    let mut scanner = fake.scanner();
    scanner.tick().unwrap();
    fake.kill(1).unwrap();
    let (r, text) = reason(&mut scanner);
    assert_eq!(r, Reason::Hidepid);
    for part in [
        "hidepid=ptraceable",
        "gid=1234",
        &root.display().to_string(),
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
}
