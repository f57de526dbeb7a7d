//! The notifier's only file access: one session's terminal, opened for one
//! write, and never anything else.
//!
//! Whoever asks names a pid and `pts/N`. The terminal is reached through the
//! process's own root (`<proc>/<pid>/root`, the container's view, whose
//! `/dev/pts` is the container's devpts instance), and three checks stand
//! before anything is opened for writing:
//! 1. the process's `stat` says `pts/N` is its controlling terminal (so a pid
//!    cannot point at another session's terminal);
//! 2. `dev/pts/N` is resolved inside that root with no symlink followed
//!    (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`), and only as an
//!    `O_PATH` handle, which opens nothing;
//! 3. the handle is a character device with exactly that device number.
//!
//! Only then is the same inode opened `O_WRONLY | O_NOCTTY | O_NONBLOCK`
//! through the handle (`/proc/self/fd/<n>`), so a file swapped in between
//! cannot be the one opened. A regular file, a symlink to one, or another
//! device is never opened for writing, whatever the container puts at
//! `/dev/pts/N`.
//!
//! Following `<proc>/<pid>/root` of another user's (or a more privileged)
//! process needs CAP_SYS_PTRACE; the write needs write permission on the
//! terminal (its owner, or the `tty` group as `wall` has, which also honours
//! `mesg n`). Nothing here needs CAP_DAC_READ_SEARCH.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::{Mode, SFlag, fstat, major, minor};

use crate::proc::{parse_stat, tty::major_minor, tty_name};

/// Writes `bytes` once into `tty` (`pts/N`), the controlling terminal of
/// `pid`. The outcome, one of `wire::OUTCOMES`.
pub fn write_line(proc_root: &Path, pid: u32, tty: &str, bytes: &[u8]) -> &'static str {
    let file = match open_terminal(proc_root, pid, tty) {
        Ok(f) => f,
        Err(outcome) => return outcome,
    };
    match nix::unistd::write(&file, bytes) {
        Ok(n) if n == bytes.len() => "written",
        Ok(_) => "partial",
        Err(e) => {
            tracing::debug!(pid, tty, error = %e, "writing to the terminal");
            "write_failed"
        }
    }
}

/// The terminal, open for writing, or why not (`no_tty`: not this process's
/// terminal, or not a terminal at all; `open_failed`: refused by the kernel).
pub fn open_terminal(proc_root: &Path, pid: u32, tty: &str) -> Result<File, &'static str> {
    // Only Unix98 ptys have a name under /dev/pts; a serial line is not written to.
    let Some(n) = tty.strip_prefix("pts/").and_then(|n| n.parse::<u32>().ok()) else {
        return Err("no_tty");
    };
    if format!("pts/{n}") != tty {
        return Err("no_tty"); // "pts/007", "pts/+1": not how the kernel names one
    }
    // One handle on the process's /proc directory for both reads: if the pid
    // ends and is reused in between, the handle still names the old process
    // and every read through it fails, so the terminal checked and the root
    // followed are one process's.
    let dir = open(
        &proc_root.join(pid.to_string()),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| "no_tty")?;
    let stat = read_at(&dir, "stat").ok_or("no_tty")?;
    let tty_nr = parse_stat(&stat).map_err(|_| "no_tty")?.tty_nr;
    if tty_name(tty_nr) != tty {
        return Err("no_tty");
    }
    let root = openat(
        &dir,
        "root",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        tracing::debug!(pid, error = %e, "following the process's root");
        "open_failed"
    })?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    let handle = openat2(&root, format!("dev/pts/{n}").as_str(), how).map_err(|e| {
        tracing::debug!(pid, tty, error = %e, "resolving the terminal in the process's root");
        "no_tty"
    })?;
    let st = fstat(&handle).map_err(|_| "no_tty")?;
    let (want_major, want_minor) = major_minor(tty_nr);
    let is_char = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    let rdev = st.st_rdev;
    if !is_char || (major(rdev), minor(rdev)) != (u64::from(want_major), u64::from(want_minor)) {
        return Err("no_tty");
    }
    // The handle's inode, opened for writing with the device's own
    // permission checks: not a path that could have changed since.
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .map_err(|e| {
            tracing::debug!(pid, tty, error = %e, "opening the terminal");
            "open_failed"
        })?;
    if !nix::unistd::isatty(&file).unwrap_or(false) {
        return Err("no_tty");
    }
    Ok(file)
}

/// A small file under `dir` (a /proc/<pid> handle), read whole.
fn read_at(dir: &OwnedFd, name: &str) -> Option<Vec<u8>> {
    let fd = openat(dir, name, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).ok()?;
    let mut out = Vec::with_capacity(512);
    File::from(fd).read_to_end(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pts_name_the_kernel_would_print_is_looked_up() {
        let me = std::process::id();
        for tty in ["4:1", "pts/", "pts/x", "pts/007", "pts/+1", "pts/1/../../x"] {
            assert_eq!(
                open_terminal(Path::new("/proc"), me, tty).err(),
                Some("no_tty"),
                "{tty}"
            );
        }
    }
}
