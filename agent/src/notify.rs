//! `--notify-terminal`: writes the controller's notices (a drain waiting on a
//! session, protection nearing its cap) into the sessions' terminals, one
//! plain line like `wall`.
//!
//! The notices come from the status of this node's SessionReport, as the
//! answer to the agent's own report write returns it (the writer hands them
//! over); the agent reads nothing else for this. A line is written only to a
//! session the latest scan still sees with the same pod, terminal and leader,
//! at most once per session per `--notify-interval` (`core::notice::RateLimit`),
//! through the leader's own terminal descriptor under the proc root, opened
//! `O_WRONLY | O_NOCTTY | O_NONBLOCK` and written once: a full or hung
//! terminal costs one failed write, never a blocked agent.
//!
//! Privilege: entering `/proc/<pid>/fd` of another user's process needs
//! `CAP_DAC_READ_SEARCH` (mode 0500) and following its links `CAP_SYS_PTRACE`;
//! opening the terminal needs write permission on it (the `tty` group, as
//! `wall` has, which also honours `mesg n`). The chart grants these only with
//! `notify.terminal.enabled` (measured: the chart README, Security).

use std::fs::OpenOptions;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sessionguard_core::Session;
use sessionguard_core::notice::{Notice, RateLimit, terminal_bytes};
use tokio::sync::watch;

use crate::metrics::{Metrics, OutcomeLabel};
use crate::snapshot::SnapshotRx;

/// The notices of the last successful report write.
pub type NoticesTx = watch::Sender<Vec<Notice>>;
pub type NoticesRx = watch::Receiver<Vec<Notice>>;

pub fn channel() -> (NoticesTx, NoticesRx) {
    watch::channel(Vec::new())
}

/// A session told: pod, terminal, leader.
type Told = (String, String, u32);

pub struct Notifier {
    proc_root: PathBuf,
    limit: RateLimit<Told>,
    metrics: Metrics,
}

impl Notifier {
    pub fn new(proc_root: &Path, interval: Duration, metrics: Metrics) -> Self {
        Self {
            proc_root: proc_root.to_path_buf(),
            limit: RateLimit::new(interval),
            metrics,
        }
    }

    /// Runs until the notices channel closes. Each report write sends the
    /// notices again, so a notice that stays is told again every interval.
    pub async fn run(mut self, mut notices: NoticesRx, snapshots: SnapshotRx) {
        while notices.changed().await.is_ok() {
            let list = notices.borrow_and_update().clone();
            if list.is_empty() {
                continue;
            }
            let snap = snapshots.borrow().clone();
            let mut due = Vec::new();
            for n in &list {
                let Some(s) = session_of(n, &snap.sessions) else {
                    self.count("no_session");
                    continue;
                };
                let key = (n.pod_uid.to_string(), n.tty.clone(), s.pid);
                if self.limit.admit(key, Instant::now()) {
                    due.push((s.pid, s.tty.clone(), terminal_bytes(&n.line)));
                }
            }
            if due.is_empty() {
                continue;
            }
            let root = self.proc_root.clone();
            // Reading /proc and opening a terminal are system calls that do
            // not block with O_NONBLOCK, but off the runtime all the same.
            let outcomes = tokio::task::spawn_blocking(move || {
                due.into_iter()
                    .map(|(pid, tty, bytes)| {
                        let outcome = write_line(&root, pid, &tty, &bytes);
                        if outcome == "written" {
                            tracing::info!(pid, %tty, "told the session in its terminal");
                        } else {
                            tracing::warn!(pid, %tty, outcome, "could not write the notice into the session's terminal");
                        }
                        outcome
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for o in outcomes {
                self.count(o);
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .terminal_notices
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }
}

/// The session a notice is for, if the latest scan still sees it (same pod,
/// terminal and, where the notice names one, leader).
fn session_of<'a>(n: &Notice, sessions: &'a [Session]) -> Option<&'a Session> {
    sessions
        .iter()
        .find(|s| s.pod_uid == n.pod_uid && s.tty == n.tty && n.pid.is_none_or(|p| p == s.pid))
}

/// Writes `bytes` once into the terminal `tty` (`pts/N`) that the process
/// `pid` holds open on one of its standard descriptors. The outcome label.
pub fn write_line(proc_root: &Path, pid: u32, tty: &str, bytes: &[u8]) -> &'static str {
    // Only Unix98 ptys are named as the descriptor's link shows them; a
    // `major:minor` terminal (a serial line) is not written to.
    if !tty.starts_with("pts/") {
        return "no_tty";
    }
    let want = Path::new("/dev").join(tty);
    let fds = proc_root.join(pid.to_string()).join("fd");
    let Some(fd) = (0..3)
        .map(|n| fds.join(n.to_string()))
        .find(|p| std::fs::read_link(p).is_ok_and(|t| t == want))
    else {
        return "no_tty";
    };
    // The magic link opens the process's own terminal (whatever mount
    // namespace it lives in), with the permission checks of the device.
    let file = match OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK)
        .open(&fd)
    {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(path = %fd.display(), error = %e, "opening the terminal");
            return "open_failed";
        }
    };
    // The descriptor may have been replaced between the check and the open.
    let is_tty = file
        .metadata()
        .is_ok_and(|m| m.file_type().is_char_device())
        && nix::unistd::isatty(&file).unwrap_or(false);
    if !is_tty {
        return "no_tty";
    }
    match nix::unistd::write(&file, bytes) {
        Ok(n) if n == bytes.len() => "written",
        Ok(_) => "partial",
        Err(e) => {
            tracing::debug!(path = %fd.display(), error = %e, "writing to the terminal");
            "write_failed"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_for_the_session_with_its_pod_terminal_and_leader() {
        let s = crate::testing::session();
        let n = Notice {
            pod_uid: s.pod_uid.clone(),
            tty: s.tty.clone(),
            pid: Some(s.pid),
            reason: sessionguard_core::notice::Reason::DrainWaiting,
            line: "x".into(),
            since: jiff::Timestamp::UNIX_EPOCH,
        };
        let sessions = [s.clone()];
        assert!(session_of(&n, &sessions).is_some());
        let other_leader = Notice {
            pid: Some(s.pid + 1),
            ..n.clone()
        };
        assert!(
            session_of(&other_leader, &sessions).is_none(),
            "a recycled terminal is someone else's"
        );
        let no_pid = Notice { pid: None, ..n };
        assert!(session_of(&no_pid, &sessions).is_some());
    }

    #[test]
    fn only_a_terminal_is_written_to() {
        // Our own stdin in a test run is no pty named pts/999.
        let me = std::process::id();
        assert_eq!(
            write_line(Path::new("/proc"), me, "pts/999", b"x"),
            "no_tty"
        );
        assert_eq!(write_line(Path::new("/proc"), me, "4:1", b"x"), "no_tty");
    }
}
