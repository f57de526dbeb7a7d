//! Watches SessionReports: validates each, refuses sessions for pods on other
//! nodes, updates the index and wakes the pods whose sessions changed.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use sessionguard_core::Report;
use tokio::sync::mpsc::UnboundedSender;

use crate::events::{self, Kind};
use crate::metrics::KindLabels;
use crate::reports::crd::{self, ReportObject, StoredReport};
use crate::reports::index::Seen;
use crate::state::State;

pub async fn run(state: Arc<State>, pods: UnboundedSender<ObjectRef<Pod>>) {
    let api = crd::stored_api(state.client.clone());
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // Names listed in the current (re)list, to forget nodes whose report was
    // deleted while the watch was down.
    let mut listing: HashSet<String> = HashSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(obj)) => {
                listing.insert(obj.name_any());
                apply(&state, &obj, &pods, true);
            }
            // Listed reports are old news: their age is not a latency.
            Ok(watcher::Event::InitApply(obj)) => {
                listing.insert(obj.name_any());
                apply(&state, &obj, &pods, false);
            }
            Ok(watcher::Event::Delete(obj)) => {
                let gone = state.index.write().expect("index lock").mark_deleted(
                    &obj.name_any(),
                    Timestamp::now(),
                    state.config.agent_grace,
                );
                tracing::info!(node = %obj.name_any(), grace = ?state.config.agent_grace, "session report deleted; its sessions count until the agent grace runs out");
                wake(&state, &pods, gone.iter().map(|u| u.as_str()));
            }
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitDone) => {
                let stale: Vec<String> = state
                    .index
                    .read()
                    .expect("index lock")
                    .nodes()
                    .map(|n| n.report.node.clone())
                    .filter(|n| !listing.contains(n))
                    .collect();
                for node in stale {
                    let gone = state.index.write().expect("index lock").mark_deleted(
                        &node,
                        Timestamp::now(),
                        state.config.agent_grace,
                    );
                    wake(&state, &pods, gone.iter().map(|u| u.as_str()));
                }
                state.set_reports_synced();
            }
            Err(e) => {
                state
                    .metrics
                    .watcher_errors
                    .get_or_create(&KindLabels {
                        kind: "sessionreports",
                    })
                    .inc();
                tracing::warn!(error = %e, "sessionreports watch failed; retrying with backoff");
            }
        }
    }
}

fn apply(
    state: &Arc<State>,
    obj: &StoredReport,
    pods: &UnboundedSender<ObjectRef<Pod>>,
    live: bool,
) {
    let now = Timestamp::now();
    let report = match obj.report() {
        Ok(r) => r,
        Err(e) => {
            // The API server's schema should have refused it; if it did not
            // (older CRD, admin write), keep the node's last good snapshot and
            // let the agent grace run out rather than guessing.
            state
                .metrics
                .report_errors
                .get_or_create(&KindLabels { kind: "malformed" })
                .inc();
            tracing::warn!(report = %obj.name_any(), error = %e, "session report refused");
            return;
        }
    };
    let latency = now.duration_since(report.generated_at).as_secs_f64();
    if live && latency >= 0.0 {
        state.metrics.report_latency.observe(latency);
    }
    let seen = if live {
        Seen::Live
    } else {
        Seen::Listed {
            written_at: written_at(obj),
        }
    };
    let report = refuse_cross_node(state, report);
    let touched = state
        .index
        .write()
        .expect("index lock")
        .apply(report, seen, now);
    wake(state, pods, touched.iter().map(|u| u.as_str()));
}

/// When the API server last wrote the report: the latest managedFields time
/// (set by the server, on its clock, at every apply that changed the object).
fn written_at(obj: &StoredReport) -> Option<Timestamp> {
    obj.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.time.as_ref().map(|t| t.0))
        .max()
}

/// Drops sessions whose pod runs on another node: a node may only speak for
/// its own pods, however the report got written.
fn refuse_cross_node(state: &Arc<State>, mut report: Report) -> Report {
    report.sessions.retain(|s| {
        let Some(pod) = state.pod_by_uid(s.pod_uid.as_str()) else {
            return true; // unknown pod: harmless, matched by UID and node later
        };
        let pod_node = pod.spec.as_ref().and_then(|p| p.node_name.as_deref()).unwrap_or("");
        if pod_node == report.node {
            return true;
        }
        state.metrics.report_errors.get_or_create(&KindLabels { kind: "cross_node" }).inc();
        let first = state.with_memory(s.pod_uid.as_str(), |m| m.warned_cross_node.insert(report.node.clone()));
        tracing::warn!(
            report = %report.node, pod = %events::pod_name(&pod), pod_node,
            "refused a session reported by another node"
        );
        if first {
            events::on_pod(
                state,
                &pod,
                Kind::Warning,
                "CrossNodeReportRefused",
                format!(
                    "the report of node {} claimed a session in this pod, which runs on node {pod_node}; refused (a node may only report its own pods)",
                    report.node
                ),
            );
        }
        false
    });
    report
}

fn wake<'a>(
    state: &State,
    pods: &UnboundedSender<ObjectRef<Pod>>,
    uids: impl Iterator<Item = &'a str>,
) {
    let index = state.pods_by_uid.read().expect("uid index lock");
    for uid in uids {
        if let Some(r) = index.get(uid) {
            let _ = pods.send(r.clone());
        }
    }
}
