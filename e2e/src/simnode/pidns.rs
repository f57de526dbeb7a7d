//! Processes in PID namespaces, started as runc starts them: a container's init is
//! PID 1 of a new namespace (or joins the pod's, with `shareProcessNamespace`), and an
//! exec'd session joins its container's namespace. `unshare(CLONE_NEWPID)` and
//! `setns` only place the caller's *children*, so between fork and exec the child
//! forks once more: the grandchild is the container's process, and the child stays
//! outside the container's cgroup as its keeper (a shim), so a container's scope holds
//! exactly its own processes.
//!
//! The keeper passes on what it is sent: SIGTERM becomes SIGKILL (a namespace's
//! PID 1 ignores signals it has no handler for, so a stand-in `sleep` would never
//! stop; this plays an application that exits on TERM), unless the pod asked for
//! SIGTERM to be ignored; SIGHUP and SIGINT go on as they are. If the keeper dies
//! (SIGKILL), the kernel kills the grandchild (parent-death signal). It exits with
//! the grandchild's status. Its first act is to write the grandchild's host pid into
//! a pipe, so callers know the container's process, not the keeper.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::Context;
use crate::{Error, Result};

/// Which PID namespace the new process lives in.
#[derive(Debug)]
pub enum Ns {
    /// A new one: the process is its PID 1.
    New,
    /// The namespace of a running process (`/proc/<pid>/ns/pid`, opened).
    Join(File),
}

impl Ns {
    /// The PID namespace `pid` lives in.
    pub fn of(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/ns/pid");
        Ok(Self::Join(
            File::open(&path).ctx(|| format!("opening {path}"))?,
        ))
    }
}

/// What the grandchild does before exec.
pub struct Plan {
    pub ns: Ns,
    /// `cgroup.procs` of the container's scope.
    pub procs: CString,
    /// stdin is a terminal to take as the controlling terminal (after setsid).
    pub controlling_tty: bool,
    /// The keeper ignores SIGTERM instead of ending the process.
    pub ignore_term: bool,
}

/// The read end of the pipe the keeper writes the grandchild's pid into; it also
/// keeps the namespace's fd open until the spawn has used it.
pub struct PidPipe {
    read: File,
    write: Option<OwnedFd>,
    _ns: Ns,
}

/// The pid the keeper forwards signals to (one per keeper process: set after fork).
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    let sig = if sig == libc::SIGTERM {
        libc::SIGKILL
    } else {
        sig
    };
    // SAFETY: kill is async-signal-safe.
    unsafe {
        libc::kill(child, sig);
    }
}

// === impl Plan ===

impl Plan {
    /// The closure to hand to `pre_exec`, and the pipe to read the pid from after
    /// spawning (which holds the namespace fd the closure uses).
    pub fn pre_exec(
        self,
    ) -> Result<(
        impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
        PidPipe,
    )> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .ctx(|| "creating the pid pipe".into())?;
        let write_fd: RawFd = write.as_raw_fd();
        let ns_fd: Option<RawFd> = match &self.ns {
            Ns::New => None,
            Ns::Join(f) => Some(f.as_raw_fd()),
        };
        let procs = self.procs;
        let (tty, ignore_term) = (self.controlling_tty, self.ignore_term);
        let f = move || -> std::io::Result<()> {
            // SAFETY: only async-signal-safe calls (unshare, setns, fork, write,
            // close_range, sigaction, waitpid, kill, _exit, prctl, setsid, ioctl,
            // open/write/close) between fork and exec.
            unsafe {
                let rc = match ns_fd {
                    None => libc::unshare(libc::CLONE_NEWPID),
                    Some(fd) => libc::setns(fd, libc::CLONE_NEWPID),
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let pid = libc::fork();
                if pid < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if pid > 0 {
                    keep(pid, write_fd, ignore_term);
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            super::cgroup::enter_from_child(&procs)
        };
        Ok((
            f,
            PidPipe {
                read: File::from(read),
                write: Some(write),
                _ns: self.ns,
            },
        ))
    }
}

/// The keeper: report the pid, drop every fd (the pty's included, so its reader sees
/// EOF when the process is gone; std's exec-error pipe too, so spawn returns once the
/// grandchild has exec'd), pass signals on, and exit as the grandchild did.
///
/// # Safety
/// Only between fork and exec, in the process `fork` returned `pid` to.
unsafe fn keep(pid: libc::pid_t, write_fd: RawFd, ignore_term: bool) -> ! {
    unsafe {
        let bytes = (pid as u32).to_ne_bytes();
        libc::write(write_fd, bytes.as_ptr().cast(), bytes.len());
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        CHILD.store(pid, Ordering::Relaxed);
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = forward as *const () as usize;
        libc::sigemptyset(&mut act.sa_mask);
        for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
        if ignore_term {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
        // std blocks nothing we need, but a spawner's mask is inherited: unblock.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        let mut status = 0;
        loop {
            let r = libc::waitpid(pid, &mut status, 0);
            if r == pid {
                break;
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        libc::_exit(128 + libc::WTERMSIG(status));
    }
}

// === impl PidPipe ===

impl PidPipe {
    /// After spawn: the host pid of the process in the namespace.
    pub fn pid(mut self) -> Result<u32> {
        drop(self.write.take());
        let mut buf = [0u8; 4];
        self.read
            .read_exact(&mut buf)
            .map_err(|e| Error::Invalid(format!("the keeper reported no pid: {e}")))?;
        Ok(u32::from_ne_bytes(buf))
    }
}
