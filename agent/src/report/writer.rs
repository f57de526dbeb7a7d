//! Writes the node's `SessionReport`: at once when the sessions change, and
//! as a heartbeat every report interval so the controller can tell a quiet
//! node from a dead agent. Each write replaces the whole snapshot
//! (level-triggered), so a lost write heals with the next.
//!
//! Every report is first cut to the schema's bounds ([`Report::bounded`]): a
//! tenant's long argv must not make the node's whole report invalid. A write
//! the API server still refuses as invalid is a bug (our bounds and the
//! installed CRD disagree); it is counted and logged with the server's reason,
//! and the same scan is written again stripped to the fields that protect a
//! pod, so the node is never silenced by retrying a body that cannot pass.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use sessionguard_api::SessionReport;
use sessionguard_core::backoff::Backoff;
use sessionguard_core::bounds::{self, Cuts};
use sessionguard_core::idle;
use sessionguard_core::{Report, ReportLimits, Session};
use tokio::time::Instant;

use super::FIELD_MANAGER;
use crate::Error;
use crate::metrics::{CodeLabel, KindLabel, Metrics, OutcomeLabel};
use crate::notify::NoticesTx;
use crate::snapshot::{Snapshot, SnapshotRx};

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed write: 1s, 2s, 4s, 8s, then every 10s: a third of the 30s
/// heartbeat, so an API server that comes back is written to well before the
/// controller's agent grace (2m) runs out.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));

/// A stripped report's command: the kernel's own `comm` is at most 15 bytes.
const STRIPPED_COMMAND_MAX: usize = 15;

pub struct ReportWriter {
    api: Api<SessionReport>,
    heartbeat: Duration,
    /// Idle times are reported in steps of this and its doublings
    /// (`sessionguard_core::idle`), so they change the report rarely.
    idle_resolution: Duration,
    metrics: Metrics,
    /// The cuts last logged, so a session that stays long is logged once.
    logged_cuts: Cuts,
    /// With `--notify-terminal`: where the notices in the written object's
    /// status go (the answer to the write holds the whole object).
    notices: Option<NoticesTx>,
    /// `--report-argv`: command lines hold secrets (`mysql -pSECRET`, an
    /// `Authorization:` header), and whoever reads SessionReports would see
    /// them; nothing but people reads argv, so by default a report carries
    /// the command name and the session's facts only.
    argv: bool,
}

impl ReportWriter {
    pub fn new(
        client: Client,
        heartbeat: Duration,
        idle_resolution: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            api: Api::all(client),
            heartbeat,
            idle_resolution,
            metrics,
            logged_cuts: Cuts::default(),
            notices: None,
            argv: false,
        }
    }

    /// Reports each session's argv too (off by default: see the field).
    pub fn with_argv(mut self, argv: bool) -> Self {
        self.argv = argv;
        self
    }

    /// Hands the notices of every written report to the notifier.
    pub fn with_notices(mut self, tx: NoticesTx) -> Self {
        self.notices = Some(tx);
        self
    }

    /// Runs until the snapshot channel closes.
    pub async fn run(mut self, mut rx: SnapshotRx) {
        let mut last: Option<Vec<Key>> = None;
        let mut next_heartbeat = Instant::now();
        let mut failures = 0;
        loop {
            let snap = rx.borrow_and_update().clone();
            if !snap.trusted() {
                // No heartbeat either: while the proc root hides processes the
                // controller must see this node fall silent (its last report
                // keeps protecting until the agent grace), never an empty one.
                if rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let keys: Vec<Key> = snap
                .sessions
                .iter()
                .map(|s| Key::of(s, self.idle_resolution))
                .collect();
            if last.as_ref() != Some(&keys) || Instant::now() >= next_heartbeat {
                match self.write_snapshot(&snap).await {
                    Ok(()) => {
                        last = Some(keys);
                        next_heartbeat = Instant::now() + self.heartbeat;
                        failures = 0;
                    }
                    Err(e) => {
                        failures += 1;
                        let retry_in = RETRY.delay(failures);
                        tracing::warn!(error = %e, ?retry_in, "could not write session report");
                        tokio::time::sleep(retry_in).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(next_heartbeat) => {}
            }
        }
    }

    /// The snapshot, bounded; stripped if the API server refuses that.
    async fn write_snapshot(&mut self, snap: &Snapshot) -> Result<(), Error> {
        let (report, cuts) = self.coarse(snap.report()).bounded(ReportLimits::default());
        self.count_cuts(&cuts);
        match self.write(report).await {
            Err(Error::Refused { code, reason }) => {
                self.refused(code, &reason);
                tracing::warn!(
                    sessions = snap.sessions.len(),
                    "writing this scan again stripped to the fields that protect a pod"
                );
                let (report, _) = stripped(self.coarse(snap.report()));
                let res = self.write(report).await;
                if let Err(Error::Refused { code, reason }) = &res {
                    self.refused(*code, reason);
                }
                res
            }
            res => res,
        }
    }

    fn coarse(&self, mut report: Report) -> Report {
        idle::coarsen(&mut report.sessions, self.idle_resolution);
        if !self.argv {
            without_argv(&mut report);
        }
        report
    }

    fn count_cuts(&mut self, cuts: &Cuts) {
        for (kind, n) in cuts.iter() {
            self.metrics
                .report_cuts
                .get_or_create(&KindLabel { kind: kind.into() })
                .inc_by(n);
        }
        if !cuts.is_empty() && *cuts != self.logged_cuts {
            tracing::info!(?cuts, "cut the session report to the schema's bounds");
        }
        self.logged_cuts = cuts.clone();
    }

    fn refused(&self, code: u16, reason: &str) {
        self.metrics
            .reports_refused
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
        tracing::warn!(
            code,
            reason,
            "BUG: the API server refused the session report as invalid; the agent's bounds \
             and the installed SessionReport CRD disagree"
        );
    }

    async fn write(&self, report: Report) -> Result<(), Error> {
        let (node, sessions) = (report.node.clone(), report.sessions.len());
        let body = SessionReport::of(report);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let res = tokio::time::timeout(
            WRITE_TIMEOUT,
            self.api.patch(&node, &params, &Patch::Apply(&body)),
        )
        .await;
        let (outcome, res) = match res {
            Ok(Ok(written)) => {
                if let Some(tx) = &self.notices {
                    tx.send_replace(written.notices().to_vec());
                }
                ("success", Ok(()))
            }
            Ok(Err(kube::Error::Api(s))) if is_refusal(s.code) => (
                "refused",
                Err(Error::Refused {
                    code: s.code,
                    reason: s.message.clone(),
                }),
            ),
            Ok(Err(e)) => ("failure", Err(Error::Kube(e.to_string()))),
            Err(_) => (
                "timeout",
                Err(Error::Kube(format!(
                    "write did not finish within {WRITE_TIMEOUT:?}"
                ))),
            ),
        };
        self.metrics
            .reports
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        if res.is_ok() {
            tracing::debug!(%node, sessions, "report written");
        }
        res
    }
}

/// Answers that mean "this body will never pass", unlike a timeout or a 5xx:
/// bad request, too large, invalid against the schema.
/// The report without any session's argv.
fn without_argv(report: &mut Report) {
    for s in &mut report.sessions {
        s.argv.clear();
    }
}

fn is_refusal(code: u16) -> bool {
    matches!(code, 400 | 413 | 422)
}

/// What is written after a refusal: every session with only the fields the
/// controller needs to protect its pod (no argv, no names, a short command),
/// within a quarter of the size bound, so whatever the refused field was, the
/// node's logins are still reported.
fn stripped(mut report: Report) -> (Report, Cuts) {
    for s in &mut report.sessions {
        s.argv.clear();
        s.namespace = None;
        s.pod_name = None;
        s.container_name = None;
        bounds::cut(&mut s.command, STRIPPED_COMMAND_MAX);
    }
    let limits = ReportLimits::default();
    report.bounded(ReportLimits {
        max_bytes: limits.max_bytes / 4,
        ..limits
    })
}

/// What makes a report worth writing early. The process count changes with
/// every command a user runs, so it only travels with the heartbeat; idle
/// time counts in its coarse steps only.
#[derive(PartialEq, Eq)]
struct Key {
    pod_uid: String,
    container_id: String,
    tty: String,
    pid: u32,
    uid: u32,
    console: bool,
    init: bool,
    command: String,
    container_name: Option<String>,
    idle_step: u32,
}

impl Key {
    fn of(s: &Session, idle_resolution: Duration) -> Self {
        Self {
            pod_uid: s.pod_uid.to_string(),
            container_id: s.container_id.to_string(),
            tty: s.tty.clone(),
            pid: s.pid,
            uid: s.uid,
            console: s.console,
            init: s.init,
            command: s.command.clone(),
            container_name: s.container_name.clone(),
            idle_step: idle::coarse(s.idle_seconds, idle_resolution),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_leaves_the_report_unless_asked_for() {
        let mut r = Report {
            node: "n1".into(),
            generated_at: jiff::Timestamp::UNIX_EPOCH,
            sequence: 1,
            sessions: vec![Session {
                command: "mysql".into(),
                argv: vec!["mysql".into(), "-pSECRET".into()],
                ..crate::testing::session()
            }],
        };
        without_argv(&mut r);
        assert!(r.sessions[0].argv.is_empty());
        assert_eq!(r.sessions[0].command, "mysql", "the command name stays");
        assert!(!serde_json::to_string(&r).unwrap().contains("SECRET"));
    }

    #[test]
    fn a_stripped_report_keeps_every_session_with_its_protecting_fields() {
        let long = Session {
            command: "a-very-long-command-name".into(),
            argv: vec!["x".repeat(5000); 300],
            namespace: Some("ops".into()),
            pod_name: Some("bastion-0".into()),
            container_name: Some("main".into()),
            ..crate::testing::session()
        };
        let report = Report {
            node: "node-a".into(),
            generated_at: jiff::Timestamp::from_second(1_764_000_000).unwrap(),
            sequence: 3,
            sessions: vec![long.clone(), Session { pid: 2, ..long }],
        };
        let (r, cuts) = stripped(report.clone());
        assert_eq!(r.sessions.len(), 2);
        assert_eq!(cuts.get("session"), 0);
        for (s, was) in r.sessions.iter().zip(&report.sessions) {
            assert!(s.argv.is_empty() && s.namespace.is_none() && s.container_name.is_none());
            assert_eq!(s.command, "a-very-long-…");
            assert_eq!(
                (&s.pod_uid, &s.container_id, &s.tty, s.pid),
                (&was.pod_uid, &was.container_id, &was.tty, was.pid)
            );
        }
        r.validate(ReportLimits::default()).unwrap();
    }

    #[test]
    fn idle_time_makes_a_report_worth_writing_only_when_its_step_changes() {
        let key = |idle| {
            let s = Session {
                idle_seconds: idle,
                ..crate::testing::session()
            };
            Key::of(&s, Duration::from_secs(60))
        };
        assert!(key(0) == key(59), "typing with short pauses writes nothing");
        assert!(key(60) == key(119));
        assert!(key(59) != key(60));
        assert!(key(119) != key(120));
        assert!(key(500) != key(0), "activity after an idle episode");
    }

    #[test]
    fn only_answers_about_the_body_are_refusals() {
        for code in [400, 413, 422] {
            assert!(is_refusal(code), "{code}");
        }
        for code in [401, 403, 404, 409, 429, 500, 503] {
            assert!(!is_refusal(code), "{code}");
        }
    }
}
