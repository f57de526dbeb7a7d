//! Writes the node's `SessionReport`: at once when the sessions change, and
//! as a heartbeat every report interval so the controller can tell a quiet
//! node from a dead agent. Each write replaces the whole snapshot
//! (level-triggered), so a lost write heals with the next.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use sessionguard_api::SessionReport;
use sessionguard_core::backoff::Backoff;
use sessionguard_core::{Report, Session};
use tokio::time::Instant;

use super::FIELD_MANAGER;
use crate::Error;
use crate::metrics::{Metrics, OutcomeLabel};
use crate::snapshot::SnapshotRx;

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After a failed write: 1s, 2s, 4s, 8s, then every 10s: a third of the 30s
/// heartbeat, so an API server that comes back is written to well before the
/// controller's agent grace (2m) runs out.
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));

pub struct ReportWriter {
    api: Api<SessionReport>,
    heartbeat: Duration,
    metrics: Metrics,
}

impl ReportWriter {
    pub fn new(client: Client, heartbeat: Duration, metrics: Metrics) -> Self {
        Self {
            api: Api::all(client),
            heartbeat,
            metrics,
        }
    }

    /// Runs until the snapshot channel closes.
    pub async fn run(self, mut rx: SnapshotRx) {
        let mut last: Option<Vec<Key>> = None;
        let mut next_heartbeat = Instant::now();
        let mut failures = 0;
        loop {
            let snap = rx.borrow_and_update().clone();
            let keys: Vec<Key> = snap.sessions.iter().map(Key::of).collect();
            let due =
                snap.ready && (last.as_ref() != Some(&keys) || Instant::now() >= next_heartbeat);
            if due {
                match self.write(snap.report()).await {
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

    async fn write(&self, report: Report) -> Result<(), Error> {
        let (node, sessions) = (report.node.clone(), report.sessions.len());
        let body = SessionReport::of(report);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let res = tokio::time::timeout(
            WRITE_TIMEOUT,
            self.api.patch(&node, &params, &Patch::Apply(&body)),
        )
        .await;
        let outcome = match &res {
            Ok(Ok(_)) => "success",
            Ok(Err(_)) => "failure",
            Err(_) => "timeout",
        };
        self.metrics
            .reports
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
        match res {
            Ok(Ok(_)) => {
                tracing::debug!(%node, sessions, "report written");
                Ok(())
            }
            Ok(Err(e)) => Err(Error::Kube(e.to_string())),
            Err(_) => Err(Error::Kube(format!(
                "write did not finish within {WRITE_TIMEOUT:?}"
            ))),
        }
    }
}

/// What makes a report worth writing early. The process count changes with
/// every command a user runs, so it only travels with the heartbeat.
#[derive(PartialEq, Eq)]
struct Key {
    pod_uid: String,
    container_id: String,
    tty: String,
    pid: u32,
    uid: u32,
    console: bool,
    command: String,
    container_name: Option<String>,
}

impl Key {
    fn of(s: &Session) -> Self {
        Self {
            pod_uid: s.pod_uid.to_string(),
            container_id: s.container_id.to_string(),
            tty: s.tty.clone(),
            pid: s.pid,
            uid: s.uid,
            console: s.console,
            command: s.command.clone(),
            container_name: s.container_name.clone(),
        }
    }
}
