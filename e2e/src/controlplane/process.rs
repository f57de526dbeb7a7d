//! Control-plane processes: spawned with their output in a log file, stopped with
//! SIGTERM then SIGKILL, and recorded in pidfiles that carry the process start time,
//! so `dev-down` never signals a recycled pid that belongs to someone else.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::Context;
use crate::{Error, Result};

/// How a process relates to the one that started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed (PR_SET_PDEATHSIG) when the spawning thread ends and on Drop: for test runs.
    /// Spawn from a thread that lives as long as the process (see `harness::cluster`).
    Tied,
    /// Own session, survives its parent; stopped through its pidfile: for `make dev-up`.
    Detached,
}

/// A process we started.
#[derive(Debug)]
pub struct Proc {
    name: String,
    pid: Pid,
    child: Option<Child>,
    log: PathBuf,
    lifetime: Lifetime,
}

// === impl Proc ===

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path, lifetime: Lifetime) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .ctx(|| format!("opening {}", log.display()))?;
        let err = out
            .try_clone()
            .ctx(|| format!("opening {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: only async-signal-safe calls (setsid, prctl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                match lifetime {
                    Lifetime::Detached => {
                        libc::setsid();
                    }
                    Lifetime::Tied => {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .ctx(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.to_string(),
            pid: Pid::from_raw(child.id() as i32),
            child: Some(child),
            log: log.to_path_buf(),
            lifetime,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// An error naming the log if the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(Error::Exited {
                name: self.name.clone(),
                status: status.to_string(),
                log: self.log.clone(),
            });
        }
        Ok(())
    }

    /// Records `<pid> <start time>` so another process can stop exactly this one.
    pub fn write_pidfile(&self, path: &Path) -> Result<()> {
        let start = start_time(self.pid.as_raw())
            .ok_or_else(|| Error::Invalid(format!("{} (pid {}) is gone", self.name, self.pid)))?;
        std::fs::write(path, format!("{} {start}\n", self.pid))
            .ctx(|| format!("writing {}", path.display()))
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps the child.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            let _ = kill(self.pid, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Leaves a detached process running after this handle is gone.
    pub fn release(mut self) {
        self.child.take();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.lifetime == Lifetime::Tied {
            self.stop(Duration::from_secs(5));
        }
    }
}

/// Stops the process recorded in `pidfile` if it is still the one that was recorded,
/// then removes the pidfile. Returns whether a process was signalled.
pub fn stop_pidfile(pidfile: &Path, grace: Duration) -> Result<bool> {
    let text = match std::fs::read_to_string(pidfile) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).ctx(|| format!("reading {}", pidfile.display())),
    };
    let signalled = match parse_pidfile(&text) {
        Some((pid, start)) if start_time(pid) == Some(start) => {
            stop_pid(Pid::from_raw(pid), start, grace);
            true
        }
        _ => false,
    };
    std::fs::remove_file(pidfile).ctx(|| format!("removing {}", pidfile.display()))?;
    Ok(signalled)
}

/// Whether the process recorded in `pidfile` is still running.
pub fn pidfile_alive(pidfile: &Path) -> bool {
    std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| parse_pidfile(&t))
        .is_some_and(|(pid, start)| start_time(pid) == Some(start))
}

fn stop_pid(pid: Pid, start: u64, grace: Duration) {
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    // Not our child: it is gone when /proc no longer shows it alive with that start time.
    while Instant::now() < deadline {
        if start_time(pid.as_raw()) != Some(start) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(pid, Signal::SIGKILL);
}

/// `<pid> <starttime>` as written by [`Proc::write_pidfile`].
pub fn parse_pidfile(text: &str) -> Option<(i32, u64)> {
    let mut it = text.split_whitespace();
    let pid = it.next()?.parse().ok()?;
    let start = it.next()?.parse().ok()?;
    Some((pid, start))
}

/// Start time (clock ticks since boot) of a live, non-zombie process.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_start(&stat)
}

/// Field 22 (starttime) of /proc/<pid>/stat; None for zombies. The command name may hold
/// spaces and parentheses, so fields are counted after the last ')'.
pub fn parse_stat_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state).
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (kube apiserver) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 12 0 987654 1000 200";

    #[test]
    fn stat_start_time_counts_after_the_command_name() {
        assert_eq!(parse_stat_start(STAT), Some(987654));
    }

    #[test]
    fn zombies_have_no_start_time() {
        let z = STAT.replace(") S", ") Z");
        assert_eq!(parse_stat_start(&z), None);
    }

    #[test]
    fn pidfile_round_trip() {
        assert_eq!(parse_pidfile("12 345\n"), Some((12, 345)));
        assert_eq!(parse_pidfile("12\n"), None);
        assert_eq!(parse_pidfile("x 1"), None);
    }
}
