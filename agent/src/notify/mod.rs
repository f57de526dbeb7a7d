//! `--notify-terminal`: writes the controller's notices (a drain waiting on a
//! session, protection nearing its cap) into the sessions' terminals, one
//! plain line like `wall`.
//!
//! The notices come from the status of this node's SessionReport, as the
//! answer to the agent's own report write returns it (the writer hands them
//! over); the agent reads nothing else for this. A line is written only to a
//! session the latest scan still sees with the same pod, terminal and leader,
//! at most once per session per `--notify-interval` (`core::notice::RateLimit`),
//! by the notifier (`sessionguard-agent notifier`, `server`), a separate
//! process the agent asks over a Unix socket. The agent itself opens no
//! terminal and needs no privilege for this: the notifier holds the rights a
//! terminal write needs (CAP_SYS_PTRACE and the `tty` group) and nothing
//! else, and checks every request against /proc itself (`terminal`).
//!
//! A notifier that is down or slow costs one failed line
//! (`notifier_unavailable`, `notifier_error`), never a blocked agent: each
//! request has its own connection with a two-second timeout, off the runtime.

pub mod server;
pub mod terminal;
pub mod wire;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sessionguard_core::Session;
use sessionguard_core::notice::{Notice, RateLimit};
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
    socket: PathBuf,
    limit: RateLimit<Told>,
    metrics: Metrics,
}

impl Notifier {
    /// Lines go to the notifier listening on `socket`.
    pub fn new(socket: &Path, interval: Duration, metrics: Metrics) -> Self {
        Self {
            socket: socket.to_path_buf(),
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
                    due.push(wire::Request {
                        pid: s.pid,
                        tty: s.tty.clone(),
                        line: n.line.clone(),
                    });
                }
            }
            if due.is_empty() {
                continue;
            }
            let socket = self.socket.clone();
            // Blocking socket I/O with timeouts: off the runtime.
            let outcomes = tokio::task::spawn_blocking(move || {
                due.into_iter()
                    .map(|req| {
                        let outcome = tell(&socket, &req);
                        if outcome == "written" {
                            tracing::info!(pid = req.pid, tty = %req.tty, "told the session in its terminal");
                        } else {
                            tracing::warn!(pid = req.pid, tty = %req.tty, outcome, "could not write the notice into the session's terminal");
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

/// Asks the notifier at `socket` to write one line; its answer, or why there
/// was none.
pub fn tell(socket: &Path, req: &wire::Request) -> &'static str {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return "notifier_unavailable";
    };
    let timeout = Some(Duration::from_secs(2));
    if s.set_read_timeout(timeout).is_err() || s.set_write_timeout(timeout).is_err() {
        return "notifier_error";
    }
    // A notifier that refuses the caller answers before reading, and the
    // write may then fail: its answer is still there to read.
    let _ = s.write_all(&req.encode());
    // The answer is one line; a notifier that refused us closes with our
    // request unread, and the kernel reports that (ECONNRESET) after the
    // answer's bytes: what arrived before the error counts.
    let mut answer = Vec::with_capacity(32);
    let _ = s.take(64).read_to_end(&mut answer);
    if answer.ends_with(b"\n") {
        wire::outcome(&answer)
    } else {
        "notifier_error"
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
}
