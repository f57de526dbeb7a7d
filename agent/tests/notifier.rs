//! The notifier (`sessionguard-agent notifier`) as its own process, on a real
//! Unix socket, asked as the agent asks it (`notify::tell`):
//! - a real session (a process whose controlling terminal is a real pty) gets
//!   the line, made printable by the notifier itself;
//! - whatever a container puts at `/dev/pts/N` instead of its terminal (a
//!   regular file, a symlink out of its root, a symlinked `/dev`), a pid that
//!   does not hold the named terminal, and a request that is not one, are
//!   refused, and no file is opened for writing or changed;
//! - a caller of another uid than `--client-uid` is refused by the kernel's
//!   word for it (SO_PEERCRED).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sessionguard_agent::notify::{tell, wire::Request};
use sessionguard_agent::proc::parse_stat;
use sessionguard_agent::testing::{FakeProc, pts};

struct Notifier {
    child: Child,
    socket: PathBuf,
}

impl Notifier {
    fn start(dir: &Path, proc_root: &Path, client_uid: Option<u32>) -> Self {
        let socket = dir.join("notify.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessionguard-agent"));
        cmd.args(["notifier", "--proc-root"])
            .arg(proc_root)
            .arg("--socket")
            .arg(&socket)
            .env("SESSIONGUARD_LOG", "debug")
            .stdout(Stdio::null());
        if let Some(uid) = client_uid {
            cmd.args(["--client-uid", &uid.to_string()]);
        }
        let child = cmd.spawn().expect("start the notifier");
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the notifier never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, socket }
    }

    fn ask(&self, pid: u32, tty: &str, line: &str) -> &'static str {
        tell(
            &self.socket,
            &Request {
                pid,
                tty: tty.into(),
                line: line.into(),
            },
        )
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fake proc tree where pid 4242's stat names pts/5 its terminal, and its
/// root's `dev/pts/5` is whatever `plant` puts there.
fn planted(dir: &Path, plant: impl FnOnce(&Path)) -> PathBuf {
    let proc_root = dir.join("proc");
    let fake = FakeProc::create(&proc_root, 1_700_000_000).unwrap();
    fake.process(4242)
        .comm("sh")
        .tty(pts(5))
        .leads_session()
        .write()
        .unwrap();
    let root = proc_root.join("4242/root");
    std::fs::create_dir_all(&root).unwrap();
    plant(&root);
    proc_root
}

/// What a case puts into the process's root.
type Plant = Box<dyn FnOnce(&Path)>;

#[test]
fn anything_but_the_sessions_own_terminal_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let cases: Vec<(&str, Plant)> = vec![
        (
            "a regular file at dev/pts/5",
            Box::new(|root: &Path| {
                std::fs::create_dir_all(root.join("dev/pts")).unwrap();
                std::fs::write(root.join("dev/pts/5"), "precious\n").unwrap();
            }),
        ),
        (
            "dev/pts/5 a symlink out of the root",
            Box::new({
                let victim = victim.clone();
                move |root: &Path| {
                    std::fs::create_dir_all(root.join("dev/pts")).unwrap();
                    std::os::unix::fs::symlink(&victim, root.join("dev/pts/5")).unwrap();
                }
            }),
        ),
        (
            "dev a symlink to a directory holding pts/5",
            Box::new({
                let elsewhere = dir.path().join("elsewhere");
                move |root: &Path| {
                    std::fs::create_dir_all(elsewhere.join("pts")).unwrap();
                    std::fs::write(elsewhere.join("pts/5"), "precious\n").unwrap();
                    std::os::unix::fs::symlink(&elsewhere, root.join("dev")).unwrap();
                }
            }),
        ),
        (
            "another character device at dev/pts/5 (1:3, /dev/null's)",
            Box::new(|root: &Path| {
                use nix::sys::stat::{Mode, SFlag, makedev, mknod};
                std::fs::create_dir_all(root.join("dev/pts")).unwrap();
                // Making a device node needs CAP_MKNOD (root): said, not hidden.
                if let Err(e) = mknod(
                    &root.join("dev/pts/5"),
                    SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o666),
                    makedev(1, 3),
                ) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "SKIP the device-number case: mknod: {e} (needs root)"
                    );
                }
            }),
        ),
    ];
    for (i, (what, plant)) in cases.into_iter().enumerate() {
        let case = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&case).unwrap();
        let proc_root = planted(&case, plant);
        let notifier = Notifier::start(&case, &proc_root, None);
        assert_eq!(notifier.ask(4242, "pts/5", "hello"), "no_tty", "{what}");
        // The stat names pts/5, not pts/6: a pid cannot be used for another terminal.
        assert_eq!(notifier.ask(4242, "pts/6", "hello"), "no_tty", "{what}");
        // No such pid.
        assert_eq!(notifier.ask(4243, "pts/5", "hello"), "no_tty", "{what}");
        let planted = proc_root.join("4242/root/dev/pts/5");
        let regular = std::fs::symlink_metadata(&planted).is_ok_and(|m| m.is_file());
        if regular {
            let text = std::fs::read_to_string(&planted).unwrap();
            assert_eq!(text, "precious\n", "{what}: the planted file changed");
        }
        let elsewhere = dir.path().join("elsewhere/pts/5");
        if let Ok(text) = std::fs::read_to_string(&elsewhere) {
            assert_eq!(text, "precious\n", "{what}: the file behind /dev changed");
        }
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn requests_that_are_not_one_and_callers_that_are_not_the_agent_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let proc_root = planted(dir.path(), |_| {});
    let notifier = Notifier::start(dir.path(), &proc_root, None);
    let raw = |bytes: &[u8]| {
        let mut s = UnixStream::connect(&notifier.socket).unwrap();
        // The notifier may answer (and close) before all of an oversized
        // request is written: a failed write is part of the refusal.
        let _ = s.write_all(bytes);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    };
    assert_eq!(raw(b"{\"pid\":4242}\n"), "bad_request\n");
    assert_eq!(raw(&[b'x'; 10_000]), "bad_request\n");
    // A caller that connects and says nothing costs the notifier its one
    // second of read timeout, and then it answers the next.
    let silent = UnixStream::connect(&notifier.socket).unwrap();
    assert_eq!(notifier.ask(4242, "pts/5", "x"), "no_tty");
    drop(silent);

    // Only --client-uid may ask; the kernel says who connected (we are not 4321).
    let other = tempfile::tempdir().unwrap();
    let strict = Notifier::start(other.path(), &proc_root, Some(4321));
    assert_eq!(strict.ask(4242, "pts/5", "x"), "bad_request");
    // And the agent's outcome when no notifier listens.
    drop(strict);
    let gone = tell(
        &other.path().join("notify.sock"),
        &Request {
            pid: 1,
            tty: "pts/0".into(),
            line: "x".into(),
        },
    );
    assert_eq!(gone, "notifier_unavailable");
}

#[test]
fn a_real_sessions_terminal_gets_one_printable_line() {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = pty.slave.as_raw_fd();
    let tty = std::fs::read_link(format!("/proc/self/fd/{slave}")).unwrap();
    let tty = tty.strip_prefix("/dev").unwrap().display().to_string();
    // A session leader whose controlling terminal is the pty, as a shell in
    // a container has.
    let mut cmd = Command::new("sleep");
    cmd.arg("30")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut sleeper = cmd.spawn().expect("start the session");
    let pid = sleeper.id();
    // Until the child has called TIOCSCTTY its stat names no terminal.
    let deadline = Instant::now() + Duration::from_secs(10);
    let has_tty = || {
        std::fs::read(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| parse_stat(&s).is_ok_and(|st| st.comm == b"sleep" && st.tty_nr != 0))
    };
    while !has_tty() {
        assert!(
            Instant::now() < deadline,
            "the session never got its terminal"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = tempfile::tempdir().unwrap();
    let notifier = Notifier::start(dir.path(), Path::new("/proc"), None);
    let outcome = notifier.ask(
        pid,
        &tty,
        "sessionguard: node n is being drained\x1b]0;owned\x07",
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(outcome, "written");
    nix::fcntl::fcntl(
        &pty.master,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = nix::unistd::read(&pty.master, &mut buf).expect("the line on the master side");
    let seen = String::from_utf8_lossy(&buf[..n]);
    assert!(
        seen.contains("sessionguard: node n is being drained"),
        "{seen:?}"
    );
    assert!(
        !seen.contains('\x1b') && !seen.contains('\x07'),
        "escapes written: {seen:?}"
    );
}
