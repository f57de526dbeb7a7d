//! Watches SessionReports: validates each, refuses sessions for pods on other
//! nodes, feeds the report index and wakes the pods whose sessions changed.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use sessionguard_core::Report;

use crate::io::cache::Cache;
use crate::io::crd::{self, ReportObject, StoredReport};
use crate::io::events::{self, Kind, Recorder};
use crate::io::metrics::{KindLabels, Metrics};
use crate::io::report_index::{PathPart, Seen};
use crate::io::watches::{PodWaker, counter};

pub struct ReportWatch {
    pub client: Client,
    pub cache: Arc<Cache>,
    pub waker: PodWaker,
    pub events: Recorder,
    pub metrics: Metrics,
}

impl ReportWatch {
    pub async fn run(self) {
        let api = crd::stored_api(self.client.clone());
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let on_err = counter(self.metrics.clone(), "sessionreports");
        // (pod UID, node) pairs already announced as refused: one event each.
        let mut warned: HashSet<(String, String)> = HashSet::new();
        let grace = self.cache.agent_grace();
        // Whether the watch streams, told to the cache only when it changes
        // (not on every heartbeat): a live event after an error means the
        // watch resumed without a relist; an error means agents may be unheard.
        let mut streaming = false;
        while let Some(ev) = stream.next().await {
            let now_streaming = match &ev {
                Ok(
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
                ) => true,
                Err(_) => false,
                Ok(_) => streaming,
            };
            if now_streaming != streaming {
                streaming = now_streaming;
                self.cache.path(PathPart::ReportWatch, streaming);
            }
            match ev {
                Ok(watcher::Event::Apply(obj)) => self.apply(&obj, true, &mut warned),
                // Listed reports are old news: their age is not a latency.
                Ok(watcher::Event::InitApply(obj)) => {
                    self.index().listed(&obj.name_any());
                    self.apply(&obj, false, &mut warned);
                }
                Ok(watcher::Event::Delete(obj)) => {
                    self.cache.set_published_notices(&obj.name_any(), None);
                    let gone = self
                        .index()
                        .mark_deleted(&obj.name_any(), Timestamp::now(), grace);
                    tracing::info!(node = %obj.name_any(), ?grace, "session report deleted; its sessions count until the agent grace runs out");
                    self.waker.wake_uids(gone.iter().map(|u| u.as_str()));
                }
                Ok(watcher::Event::Init) => self.index().begin_relist(),
                Ok(watcher::Event::InitDone) => {
                    let gone = self.index().finish_relist(Timestamp::now(), grace);
                    self.waker.wake_uids(gone.iter().map(|u| u.as_str()));
                    self.cache.set_reports_synced();
                }
                Err(e) => on_err(&e),
            }
        }
    }

    fn index(&self) -> std::sync::RwLockWriteGuard<'_, crate::io::report_index::ReportIndex> {
        self.cache.index.write().expect("index lock")
    }

    fn apply(&self, obj: &StoredReport, live: bool, warned: &mut HashSet<(String, String)>) {
        let now = Timestamp::now();
        self.cache
            .set_published_notices(&obj.name_any(), Some(crd::notices(obj)));
        let report = match obj.report() {
            Ok(r) => r,
            Err(e) => {
                // The API server's schema should have refused it; if it did not
                // (older CRD, admin write), keep the node's last good snapshot and
                // let the agent grace run out rather than guessing.
                self.metrics
                    .report_errors
                    .get_or_create(&KindLabels { kind: "malformed" })
                    .inc();
                tracing::warn!(report = %obj.name_any(), error = %e, "session report refused");
                return;
            }
        };
        let latency = now.duration_since(report.generated_at).as_secs_f64();
        if live && latency >= 0.0 {
            self.metrics.report_latency.observe(latency);
        }
        let seen = if live {
            Seen::Live
        } else {
            Seen::Listed {
                written_at: written_at(obj),
            }
        };
        let report = self.refuse_cross_node(report, warned);
        let touched = self.index().apply(report, seen, now);
        self.waker.wake_uids(touched.iter().map(|u| u.as_str()));
    }

    /// Drops sessions whose pod runs on another node: a node may only speak for
    /// its own pods, however the report got written.
    fn refuse_cross_node(
        &self,
        mut report: Report,
        warned: &mut HashSet<(String, String)>,
    ) -> Report {
        report.sessions.retain(|s| {
            let Some(pod) = self.cache.pod_by_uid(s.pod_uid.as_str()) else {
                return true; // unknown pod: harmless, matched by UID and node later
            };
            let pod_node = pod.node_name.as_deref().unwrap_or("");
            if pod_node == report.node {
                return true;
            }
            self.metrics.report_errors.get_or_create(&KindLabels { kind: "cross_node" }).inc();
            tracing::warn!(
                report = %report.node, pod = %events::pod_name(&pod), pod_node,
                "refused a session reported by another node"
            );
            if warned.insert((s.pod_uid.as_str().to_string(), report.node.clone())) {
                self.events.on_pod(
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
}

/// When the API server last wrote the report: the latest managedFields time
/// (set by the server, on its clock, at every apply that changed the object).
/// Only writes of the object itself, by its agent: the controller's status
/// writes (notices) say nothing about whether the agent lives.
fn written_at(obj: &StoredReport) -> Option<Timestamp> {
    obj.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.as_deref().unwrap_or("").is_empty())
        .filter_map(|f| f.time.as_ref().map(|t| t.0))
        .max()
}
