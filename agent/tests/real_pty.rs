//! Real processes on this machine: a shell on a real pty, inside a cgroup
//! directory shaped like the kubelet's (systemd driver, containerd), found by
//! `scan --proc-root /proc` with the right pod UID and container ID.
//!
//! Needs root and a cgroup2 hierarchy; skips with a printed reason elsewhere,
//! except under CI where it must run.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The cgroup2 mount: `/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on hybrid ones.
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
}

fn skip_or_fail(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("real_pty test cannot run in CI: {reason}");
    }
    say(&format!("SKIP real_pty: {reason}"));
}

/// Straight to the stderr file descriptor: libtest captures `eprintln!` of
/// passing tests, and a skip (or a cleanup failure) must be seen.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// A kubelet-shaped cgroup directory chain we created, removed on drop.
struct PodCgroup {
    top: PathBuf,
    scope: PathBuf,
}

impl PodCgroup {
    fn create(root: &Path, pod_uid: &str, container_id: &str) -> Self {
        // One top per test: tests run in parallel, and a top shared with a
        // live test cannot be removed (EBUSY).
        let top = root.join(format!(
            "sessionguard-agent-test-{}-{}.slice",
            std::process::id(),
            &container_id[container_id.len() - 12..]
        ));
        let u = pod_uid.replace('-', "_");
        let scope = top
            .join("kubepods.slice/kubepods-besteffort.slice")
            .join(format!("kubepods-besteffort-pod{u}.slice"))
            .join(format!("cri-containerd-{container_id}.scope"));
        std::fs::create_dir_all(&scope).expect("create cgroup dirs");
        Self { top, scope }
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        // rmdir fails while the cgroup has members; killed processes leave it
        // once they are reaped, which the guard of the login waited for.
        // A killed background process is reaped by whoever adopted it, which
        // can take a while on a loaded host: wait for `populated 0`.
        let events = self.scope.join("cgroup.events");
        let emptied = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&events).is_ok_and(|e| !e.contains("populated 0"))
            && Instant::now() < emptied
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Deepest first; cgroup dirs are removed with rmdir, never recursively.
        // A child's removal completes asynchronously: its parent may answer
        // EBUSY for a moment.
        let mut dir = self.scope.clone();
        while dir.starts_with(&self.top) {
            let mut tries = 0;
            while let Err(e) = std::fs::remove_dir(&dir) {
                tries += 1;
                if e.raw_os_error() != Some(libc::EBUSY) || tries == 50 {
                    say(&format!("could not remove {}: {e}", dir.display()));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !dir.pop() {
                break;
            }
        }
    }
}

/// The login's process group (the shell and its `sleep`), killed and reaped
/// on drop so a failed assertion leaks no processes. Declared after the
/// `PodCgroup` so it drops first: the cgroup cannot be removed while they live.
struct Login {
    shell: Child,
    ended: bool,
}

impl Login {
    /// Closes the terminal: SIGKILL to the whole process group, then reaps the
    /// shell. Signalled before the reap, while the shell's pid (the group id)
    /// cannot have been reused by anything else.
    fn end(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        if let Err(e) = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.shell.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        ) {
            say(&format!("could not kill the login's process group: {e}"));
        }
        if let Err(e) = self.shell.wait() {
            say(&format!("could not reap the login shell: {e}"));
        }
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        self.end();
    }
}

/// The container's own process, started before any login as a runtime starts
/// it: without a terminal, in `scope`. Killed and reaped on drop.
struct Init(Child);

impl Init {
    fn start(scope: &Path) -> Self {
        let procs = scope.join("cgroup.procs");
        let child = Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn init");
        std::fs::write(&procs, child.id().to_string()).expect("move init into the scope");
        // Start times count in clock ticks (10 ms): a login in the same tick
        // would not be younger. Await the next ticks on the kernel's clock.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let start: u64 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        await_some(
            "the init's start tick to pass",
            Duration::from_secs(5),
            || {
                let up = std::fs::read_to_string("/proc/uptime").unwrap();
                let secs: f64 = up.split_whitespace().next().unwrap().parse().unwrap();
                ((secs * 100.0) as u64 > start + 1).then_some(())
            },
        );
        Self(child)
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sh -c 'sleep 600 & wait'` as a session leader on a fresh pty, moved into `scope`.
fn spawn_login(scope: &Path) -> (Child, String, nix::pty::OpenptyResult) {
    spawn_on_pty(scope, &["-c", "sleep 600 & wait"])
}

/// `sh args...` as a session leader on a fresh pty (its stdio), moved into `scope`.
fn spawn_on_pty(scope: &Path, args: &[&str]) -> (Child, String, nix::pty::OpenptyResult) {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let tty = nix::unistd::ttyname(&pty.slave).expect("ttyname");
    let slave = pty.slave.as_raw_fd();
    let procs = std::ffi::CString::new(
        scope
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(args);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 0..3 {
                libc::dup2(slave, fd);
            }
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn shell on pty");
    let name = tty
        .to_string_lossy()
        .trim_start_matches("/dev/")
        .to_string();
    (child, name, pty)
}

fn scan_for(pod_uid: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_sessionguard-agent"))
        .args(["scan", "--proc-root", "/proc", "--output", "json"])
        .output()
        .expect("run agent");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pod_uid"] == pod_uid)
        .cloned()
        .collect()
}

/// Polls `f` until it returns Some, or fails after `timeout`.
fn await_some<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cgroup2 root and this binary's turn, or `None` after printing (or,
/// under CI, failing) why this test cannot run here.
///
/// One test at a time: every scanner here reads the whole host's /proc, so
/// one test's logout is a lost leader in another's scanner, which then lists
/// (and the cursor test can no longer tell which tick found its login).
fn runnable() -> Option<(PathBuf, std::sync::MutexGuard<'static, ()>)> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if !nix::unistd::Uid::effective().is_root() {
        skip_or_fail("needs root to create cgroup directories and move processes");
        return None;
    }
    let Some(root) = cgroup2_root() else {
        skip_or_fail("no cgroup2 hierarchy mounted at /sys/fs/cgroup or /sys/fs/cgroup/unified");
        return None;
    };
    // A failed test poisons the lock; the next one still runs.
    let turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Some((root, turn))
}

/// A pod UID and container ID no other test run uses.
fn fresh_ids(salt: u16) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let pod_uid = format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        std::process::id(),
        salt,
        nanos as u64 & 0xffff_ffff_ffff
    );
    (pod_uid, format!("{:064x}", nanos ^ u128::from(salt)))
}

#[test]
fn finds_a_real_pty_session_in_a_kubelet_shaped_cgroup() {
    let Some((root, _turn)) = runnable() else {
        return;
    };
    let (pod_uid, container_id) = fresh_ids(1);
    let cg = PodCgroup::create(&root, &pod_uid, &container_id);
    let init = Init::start(&cg.scope);
    let (shell, tty, _pty) = spawn_login(&cg.scope);
    let mut login = Login {
        shell,
        ended: false,
    };
    let pid = login.shell.id();

    let found = await_some(
        "the shell and its sleep on the pty",
        Duration::from_secs(10),
        || {
            let s = scan_for(&pod_uid);
            (s.len() == 1 && s[0]["processes"] == 2).then_some(s)
        },
    );
    let s = &found[0];
    assert_eq!(s["container_id"], container_id.as_str());
    assert_eq!(s["pid"], pid);
    assert_eq!(s["tty"], tty.as_str());
    assert_eq!(s["command"], "sh");
    assert_eq!(s["uid"], 0);
    // The container's init is older: the login is not its first process.
    assert_eq!((&s["init"], &s["console"]), (&false.into(), &false.into()));
    let started: jiff::Timestamp = s["started_at"].as_str().unwrap().parse().unwrap();
    let age = jiff::Timestamp::now().duration_since(started);
    assert!(
        age.as_secs() < 60 && age.as_secs() > -2,
        "start time {started} is not now"
    );

    // Closing the terminal ends the session.
    login.end();
    await_some("the session to end", Duration::from_secs(10), || {
        scan_for(&pod_uid).is_empty().then_some(())
    });
    drop(init);
    await_some("the cgroup to empty", Duration::from_secs(10), || {
        std::fs::read_to_string(cg.scope.join("cgroup.procs"))
            .unwrap()
            .trim()
            .is_empty()
            .then_some(())
    });
}

/// Types into the pty's master side and waits until the shell has run it:
/// `echo MARK$((n+1))` prints `MARKn+1` only once executed (the terminal's
/// own echo of the input shows the unexpanded text).
fn type_and_await(master: &std::fs::File, seen: &mut Vec<u8>, n: u32) {
    use std::io::Read;
    let mut w = master;
    writeln!(w, "echo MARK$(({n}+1))").expect("type into the pty");
    let want = format!("MARK{}", n + 1);
    await_some(
        &format!("the shell to print {want}"),
        Duration::from_secs(10),
        || {
            let mut buf = [0u8; 4096];
            let mut r = master;
            match r.read(&mut buf) {
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("reading the pty: {e}"),
            }
            String::from_utf8_lossy(seen).contains(&want).then_some(())
        },
    );
}

#[test]
fn idle_time_of_a_real_shell_resets_when_someone_types() {
    use sessionguard_agent::scan::{ProcFs, Scanner, ScannerConfig};
    let Some((root, _turn)) = runnable() else {
        return;
    };
    let (pod_uid, container_id) = fresh_ids(2);
    let cg = PodCgroup::create(&root, &pod_uid, &container_id);
    // An interactive shell: stdin is the terminal, so it waits in read().
    let (shell, tty, pty) = spawn_on_pty(&cg.scope, &[]);
    let _login = Login {
        shell,
        ended: false,
    };
    let master = std::fs::File::from(pty.master);
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut out = Vec::new();
    type_and_await(&master, &mut out, 0);

    // Without privilege: from the shell's CPU time and context switches.
    let config = |terminal_idle| ScannerConfig {
        terminal_idle,
        ..ScannerConfig::default()
    };
    let mut scanner =
        Scanner::new(ProcFs::open(Path::new("/proc")).unwrap(), config(false)).unwrap();
    let (t0, w0) = (Instant::now(), jiff::Timestamp::now());
    let idle_at = |scanner: &mut Scanner, secs: u64| {
        let (now, wall) = (
            t0 + Duration::from_secs(secs),
            w0 + jiff::SignedDuration::from_secs(secs as i64),
        );
        let (s, stats) = scanner.scan_at(secs == 0, now, wall).unwrap();
        let s: Vec<_> = s
            .into_iter()
            .filter(|s| s.pod_uid.as_str() == pod_uid)
            .collect();
        assert_eq!(s.len(), 1, "{s:#?}");
        assert_eq!(s[0].tty, tty);
        (s[0].idle_seconds, stats.idle_from_terminal)
    };
    assert_eq!(idle_at(&mut scanner, 0), (0, 0), "first sight is activity");
    // A shell blocked in read() does nothing: 100 s later it is 100 s more
    // idle (retried, in case the shell was still finishing the last line).
    let mut t = 0;
    await_some("the shell to sit idle", Duration::from_secs(10), || {
        t += 100;
        let before = idle_at(&mut scanner, t).0;
        t += 100;
        (idle_at(&mut scanner, t).0 == before + 100).then_some(())
    });
    type_and_await(&master, &mut out, 1);
    assert_eq!(idle_at(&mut scanner, t + 10).0, 0, "typing is activity");
    assert_eq!(idle_at(&mut scanner, t + 25).0, 15);

    // As root: from the terminal's access time, as `w` shows it. Dated an
    // hour back, then moved by the kernel when the shell reads a keystroke.
    let mut scanner =
        Scanner::new(ProcFs::open(Path::new("/proc")).unwrap(), config(true)).unwrap();
    let hour_ago = nix::sys::time::TimeSpec::new(jiff::Timestamp::now().as_second() - 3600, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        Path::new("/dev").join(&tty).as_path(),
        &hour_ago,
        &hour_ago,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )
    .unwrap();
    let scan_now = |scanner: &mut Scanner| {
        let (s, stats) = scanner.scan(true).unwrap();
        let s: Vec<_> = s
            .into_iter()
            .filter(|s| s.pod_uid.as_str() == pod_uid)
            .collect();
        // (Other tests' sessions on this host may count too.)
        assert!(stats.idle_from_terminal >= 1, "{s:#?}");
        s[0].idle_seconds
    };
    let idle = scan_now(&mut scanner);
    assert!((3599..3610).contains(&idle), "{idle}");
    type_and_await(&master, &mut out, 2);
    let idle = scan_now(&mut scanner);
    assert!(idle < 10, "the shell read input: {idle}");
}

/// The pid cursor on the real /proc (see `scan/cursor.rs`): a login started
/// after the first scan is found on a tick that lists nothing, the threads of
/// a multi-threaded process on its terminal are not counted as processes
/// (the cursor names their tids, which a listing never shows), and the
/// logout is confirmed by a listing.
#[test]
fn the_pid_cursor_finds_a_real_login_without_listing_proc() {
    use sessionguard_agent::scan::{ProcFs, ScanStats, Scanner, ScannerConfig};
    let Some((root, _turn)) = runnable() else {
        return;
    };
    let (pod_uid, container_id) = fresh_ids(3);
    let cg = PodCgroup::create(&root, &pod_uid, &container_id);
    let _init = Init::start(&cg.scope);
    let mut scanner = Scanner::new(
        ProcFs::open(Path::new("/proc")).unwrap(),
        ScannerConfig {
            resync_every: 100_000,
            ..ScannerConfig::default()
        },
    )
    .unwrap();
    let mine = |scanner: &mut Scanner| -> (Vec<sessionguard_core::Session>, ScanStats) {
        let (s, stats) = scanner.tick().unwrap();
        let s = s
            .into_iter()
            .filter(|s| s.pod_uid.as_str() == pod_uid)
            .collect();
        (s, stats)
    };
    let (none, first) = mine(&mut scanner);
    assert!(first.listed && none.is_empty());

    // python3 with three more threads, in the background of the login shell.
    let script = "import threading, time\n\
                  for _ in range(3): threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n\
                  time.sleep(600)";
    let line = format!("python3 -c '{script}' & wait");
    let (shell, tty, _pty) = spawn_on_pty(&cg.scope, &["-c", &line]);
    let mut login = Login {
        shell,
        ended: false,
    };
    let shell_pid = login.shell.id();
    let threads_of_python = || -> Option<usize> {
        let children =
            std::fs::read_to_string(format!("/proc/{shell_pid}/task/{shell_pid}/children")).ok()?;
        let python: u32 = children.split_whitespace().next()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{python}/comm")).ok()?;
        if comm.trim() != "python3" {
            return None;
        }
        Some(
            std::fs::read_dir(format!("/proc/{python}/task"))
                .ok()?
                .count(),
        )
    };
    let mut sightings = Vec::new();
    await_some("python's three threads", Duration::from_secs(20), || {
        let (s, stats) = mine(&mut scanner);
        if let [s] = s.as_slice() {
            sightings.push((stats.listed, s.processes, stats.lost_leaders));
        }
        (threads_of_python() == Some(4)).then_some(())
    });
    // Ticks after the threads started: the cursor named their tids.
    let after: Vec<(bool, u32)> = (0..3)
        .map(|_| {
            let (s, stats) = mine(&mut scanner);
            assert_eq!(s.len(), 1, "{s:#?}");
            assert_eq!(s[0].tty, tty);
            (stats.listed, s[0].processes)
        })
        .collect();
    assert_eq!(
        after,
        vec![(false, 2); 3],
        "the shell and python, not its threads; sighted before: {sightings:?}"
    );
    assert_eq!(
        sightings.first().map(|&(listed, _, _)| listed),
        Some(false),
        "the login was first seen on a tick without a listing (listed, processes, lost leaders): {sightings:?}"
    );

    login.end();
    let (s, stats) = await_some("the logout", Duration::from_secs(10), || {
        let (s, stats) = mine(&mut scanner);
        s.is_empty().then_some((s, stats))
    });
    assert!(s.is_empty());
    assert!(
        stats.listed && stats.lost_leaders >= 1,
        "a vanished leader is checked by a listing: {stats:?}"
    );
}
