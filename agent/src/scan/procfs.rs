//! A thin layer over a proc root: list pids, read one small file of a pid into
//! a reused buffer. A pid that vanished between readdir and read is normal
//! churn and comes back as `Ok(false)`, never as an error.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

use crate::Error;
use crate::proc::visibility::{self, Pid1, ProcMount, View};

pub struct ProcFs {
    root: PathBuf,
    /// `root` as mountinfo names it, to find its mount options.
    mount_point: PathBuf,
    // Kept open so every tick reuses one directory stream and opens pid files
    // relative to it (openat) instead of walking the path from `/` again.
    dir: Dir,
    path: String,
}

impl ProcFs {
    pub fn open(root: &Path) -> Result<Self, Error> {
        let dir = Dir::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::ProcRoot {
            path: root.to_path_buf(),
            reason: e.desc().to_string(),
        })?;
        if !root.join("stat").is_file() {
            return Err(Error::ProcRoot {
                path: root.to_path_buf(),
                reason: "it has no stat file".into(),
            });
        }
        Ok(Self {
            root: root.to_path_buf(),
            mount_point: root.canonicalize().unwrap_or_else(|_| root.to_path_buf()),
            dir,
            path: String::with_capacity(32),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Fills `out` with `(pid, inode)` for every numeric entry. The inode of a
    /// `/proc/<pid>` directory changes when the pid is reused, which lets the
    /// scanner skip re-reading pids it has seen without missing a new process.
    pub fn pids(&mut self, out: &mut Vec<(u32, u64)>) -> Result<(), Error> {
        out.clear();
        for entry in self.dir.iter() {
            let entry = entry.map_err(|e| Error::Io {
                path: self.root.clone(),
                source: e.into(),
            })?;
            let name = entry.file_name().to_bytes();
            if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
                continue;
            }
            // Cannot overflow meaningfully: pid_max is at most 2^22; longer names are skipped.
            if let Some(pid) = std::str::from_utf8(name)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
            {
                out.push((pid, entry.ino()));
            }
        }
        Ok(())
    }

    /// The newest pid in the proc root's namespace (see `scan/cursor.rs`):
    /// a thread started for the purpose reads the tid `thread-self` names.
    /// `None` where the root has no `thread-self` (a fake tree, an old
    /// kernel) or the thread cannot start.
    pub fn newest_pid(&self) -> Option<u32> {
        let link = self.root.join("thread-self");
        let probe = std::thread::Builder::new()
            .name("pid-probe".into())
            .stack_size(64 * 1024)
            .spawn(move || std::fs::read_link(link))
            .ok()?;
        let target = probe.join().ok()?.ok()?;
        super::cursor::parse_thread_self(target.as_os_str().as_encoded_bytes())
    }

    /// `sys/kernel/pid_max`, where the pid cycle wraps; `None` if unreadable.
    pub fn pid_max(&self) -> Option<u32> {
        let mut buf = Vec::with_capacity(16);
        self.read_top("sys/kernel/pid_max", &mut buf).ok()?;
        std::str::from_utf8(&buf).ok()?.trim().parse().ok()
    }

    /// Reads `<root>/<pid>/<file>` into `buf`. `Ok(false)` when the pid is gone.
    pub fn read(&mut self, pid: u32, file: &str, buf: &mut Vec<u8>) -> Result<bool, Error> {
        self.read_at_most(pid, file, usize::MAX, buf)
    }

    /// [`ProcFs::read`], stopping after `max` bytes.
    pub fn read_at_most(
        &mut self,
        pid: u32,
        file: &str,
        max: usize,
        buf: &mut Vec<u8>,
    ) -> Result<bool, Error> {
        use std::fmt::Write;
        self.path.clear();
        let _ = write!(self.path, "{pid}/{file}");
        buf.clear();
        let fd = match openat(
            self.dir.as_fd(),
            self.path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ESRCH) => return Ok(false),
            Err(e) => return Err(self.io_error(io::Error::from(e))),
        };
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        match std::fs::File::from(fd).take(max).read_to_end(buf) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error().is_some_and(gone) => Ok(false),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// The owner of `<root>/<pid>`: procfs gives a pid directory the
    /// process's effective uid (root for non-dumpable processes). A metadata
    /// lookup, no file read; the fallback when `status` cannot be read.
    /// `Ok(None)` when the pid is gone.
    pub fn owner(&mut self, pid: u32) -> Result<Option<u32>, Error> {
        use std::fmt::Write;
        self.path.clear();
        let _ = write!(self.path, "{pid}");
        match nix::sys::stat::fstatat(
            self.dir.as_fd(),
            self.path.as_str(),
            nix::fcntl::AtFlags::empty(),
        ) {
            Ok(st) => Ok(Some(st.st_uid)),
            Err(Errno::ENOENT | Errno::ESRCH) => Ok(None),
            Err(e) => Err(self.io_error(io::Error::from(e))),
        }
    }

    /// The access time of `pid`'s controlling terminal (`tty_nr`), through
    /// its fd 0, 1 or 2, whichever is that terminal. Following those links
    /// needs ptrace read access to the process (see `scan/idle.rs`).
    pub fn terminal_atime(&mut self, pid: u32, tty_nr: u32) -> Terminal {
        use std::fmt::Write;
        let want = crate::proc::tty::major_minor(tty_nr);
        for fd in 0..3 {
            self.path.clear();
            let _ = write!(self.path, "{pid}/fd/{fd}");
            match nix::sys::stat::fstatat(
                self.dir.as_fd(),
                self.path.as_str(),
                nix::fcntl::AtFlags::empty(),
            ) {
                Ok(st) => {
                    use nix::sys::stat::SFlag;
                    let is_char = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFCHR.bits();
                    let dev = (
                        nix::sys::stat::major(st.st_rdev) as u32,
                        nix::sys::stat::minor(st.st_rdev) as u32,
                    );
                    if is_char && dev == want {
                        return Terminal::Atime(st.st_atime);
                    }
                }
                Err(Errno::EACCES | Errno::EPERM) => return Terminal::Denied,
                // Closed, redirected or gone: the next fd, or the processes.
                Err(_) => {}
            }
        }
        Terminal::Unknown
    }

    /// Reads a top-level file such as `stat` or `uptime` into `buf`.
    pub fn read_top(&self, file: &str, buf: &mut Vec<u8>) -> Result<(), Error> {
        let path = self.root.join(file);
        buf.clear();
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(buf))
            .map(drop)
            .map_err(|source| Error::Io { path, source })
    }

    /// Fails with [`Error::Filtered`] when a scan that listed `pids` would
    /// not see every process.
    pub fn check_visible(&mut self, pids: &[(u32, u64)], buf: &mut Vec<u8>) -> Result<(), Error> {
        let view = self.view(pids, buf);
        if view.is_complete() {
            return Ok(());
        }
        // Read only now: on a large node mountinfo is long, and it only names the cause.
        let mount = self.mount(buf);
        match view.assess(mount) {
            None => Ok(()),
            Some(filtered) => Err(Error::Filtered {
                path: self.root.clone(),
                filtered,
            }),
        }
    }

    /// What a scan that listed `pids` can see (see [`crate::proc::visibility`]).
    /// Without a readable `loadavg` (a fake tree) the thread check is left out.
    fn view(&mut self, pids: &[(u32, u64)], buf: &mut Vec<u8>) -> View {
        let pid1 = if !pids.iter().any(|&(pid, _)| pid == 1) {
            Pid1::Missing
        } else {
            match self.read(1, "stat", buf) {
                Ok(true) => Pid1::Readable,
                Ok(false) => Pid1::Missing,
                // EACCES, EPERM (hidepid=noaccess), or anything else that
                // keeps the agent from a file every reader may read.
                Err(_) => Pid1::Denied,
            }
        };
        let threads = self.read_top("loadavg", buf).ok().and_then(|()| {
            visibility::parse_loadavg_threads(buf)
                .inspect_err(|e| tracing::debug!(error = %e, "thread count unknown"))
                .ok()
        });
        View {
            pid1,
            pids: pids.len(),
            threads,
        }
    }

    /// The options the proc root is mounted with, if it is a mount point.
    fn mount(&self, buf: &mut Vec<u8>) -> Option<ProcMount> {
        self.read_top("self/mountinfo", buf).ok()?;
        visibility::proc_mount(buf, &self.mount_point)
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            path: self.root.join(&self.path),
            source,
        }
    }
}

/// What [`ProcFs::terminal_atime`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminal {
    /// Seconds since the epoch.
    Atime(i64),
    /// The agent may not look at the process's files.
    Denied,
    /// No fd 0-2 is the terminal (or the process is gone).
    Unknown,
}

/// ENOENT when the pid left before open, ESRCH when it left before read.
fn gone(errno: i32) -> bool {
    errno == Errno::ENOENT as i32 || errno == Errno::ESRCH as i32
}
