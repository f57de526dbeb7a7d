//! `--notify-terminal`: the notices each node's agent writes into its
//! sessions' terminals, published in the status of the node's SessionReport
//! (the agent reads them back from the answer to its own report write, so it
//! needs no read right).
//!
//! One task on the leader. Each tick it gathers the drains that have waited
//! on a pod longer than `--notify-terminal-after` (this replica's eviction
//! webhook refusals) and the pods whose protection is past its
//! `--max-protection-warn-at` (remembered by the pod reconcile), decides each
//! node's notices in core (`core::notice::for_node`), and patches a node's
//! `sessionreports/status` only where that differs from what the report
//! watch last saw: a steady state writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use sessionguard_core::drain::Refusal;
use sessionguard_core::notice::{
    self, Notice, PodNotice, Reason, ReportStatus, drain_due, drain_line, expiring_line,
};

use super::Context;
use crate::io::crd::SessionReport;
use crate::io::report_index::Liveness;

/// How often the notices are looked at: the wait is counted in minutes, and
/// a look that changes nothing costs no write.
const TICK: Duration = Duration::from_secs(1);

/// The notice task's settings (from `--notify-terminal-after`).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// A drain is told after waiting on a session this long.
    pub after: Duration,
}

/// The drains waiting now: `(namespace, pod, refusal)` of pods still
/// protected. Implemented by the eviction webhook's memory of refusals.
pub trait Waiting: Send + Sync {
    fn waiting(&self, ctx: &Context, now: Timestamp) -> Vec<(String, String, Refusal)>;
}

/// Runs for as long as the process (writes happen only while leading).
pub async fn run(ctx: Arc<Context>, waiting: Arc<dyn Waiting>, settings: Settings) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Nodes whose last write failed: told once at warn, then at debug (a
    // missing RBAC rule would otherwise log every second).
    let mut failing = BTreeSet::new();
    loop {
        tick.tick().await;
        if !ctx.writer.is_leader() {
            continue;
        }
        step(&ctx, &*waiting, settings, Timestamp::now(), &mut failing).await;
    }
}

async fn step(
    ctx: &Context,
    waiting: &dyn Waiting,
    settings: Settings,
    now: Timestamp,
    failing: &mut BTreeSet<String>,
) {
    let mut by_node: BTreeMap<String, Vec<PodNotice>> = BTreeMap::new();
    for (ns, pod, r) in waiting.waiting(ctx, now) {
        if !drain_due(r.first, settings.after, now) {
            continue;
        }
        by_node.entry(r.node.clone()).or_default().push(PodNotice {
            pod_uid: r.uid.clone(),
            reason: Reason::DrainWaiting,
            line: drain_line(&r.node, &format!("{ns}/{pod}"), &r.requested_by, r.first),
            since: r.first,
        });
    }
    for (uid, e) in ctx.memory.expiring() {
        let Some(pod) = ctx.cache.pod_by_uid(&uid) else {
            continue;
        };
        let Some(node) = pod.node_name.clone() else {
            continue;
        };
        let name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        by_node.entry(node.clone()).or_default().push(PodNotice {
            pod_uid: uid,
            reason: Reason::ProtectionExpiring,
            line: expiring_line(&node, &name, e.end, &e.cap),
            since: e.since,
        });
    }
    let nodes: BTreeSet<String> = by_node
        .keys()
        .cloned()
        .chain(ctx.cache.nodes_with_notices())
        .collect();
    for node in nodes {
        let pods = by_node.remove(&node).unwrap_or_default();
        let sessions = node_sessions(ctx, &pods, now);
        let want = notice::for_node(&pods, &sessions);
        if want == ctx.cache.published_notices(&node) {
            continue;
        }
        match publish(ctx, &node, want).await {
            Ok(()) => {
                failing.remove(&node);
            }
            Err(e) if failing.insert(node.clone()) => {
                tracing::warn!(%node, error = %e, "could not publish the node's terminal notices; retrying every second")
            }
            Err(e) => tracing::debug!(%node, error = %e, "still cannot publish terminal notices"),
        }
    }
}

/// The live logins of the pods to be told, from their node's fresh report.
fn node_sessions(
    ctx: &Context,
    pods: &[PodNotice],
    now: Timestamp,
) -> Vec<sessionguard_core::Session> {
    let uids: BTreeSet<&str> = pods.iter().map(|p| p.pod_uid.as_str()).collect();
    uids.into_iter()
        .filter_map(|uid| ctx.cache.pod_by_uid(uid))
        .flat_map(|pod| match ctx.cache.liveness(&pod, now) {
            Liveness::Fresh { sessions, .. } => sessions,
            _ => vec![],
        })
        .collect()
}

/// Replaces the node's notices (a merge patch of the status subresource: the
/// list is replaced whole). A report that does not exist yet has no agent to
/// tell: nothing to do.
async fn publish(ctx: &Context, node: &str, notices: Vec<Notice>) -> crate::error::Result<()> {
    let api: Api<SessionReport> = Api::all(ctx.writer.client().clone());
    let count = notices.len();
    let patch = serde_json::json!({ "status": ReportStatus { notices } });
    let (pp, body) = (PatchParams::default(), Patch::Merge(&patch));
    let write = api.patch_status(node, &pp, &body);
    match ctx.writer.write("patch_report_status", write).await {
        Ok(written) => {
            tracing::info!(%node, notices = count, "published terminal notices");
            // The watch will say the same; until it does, the next tick must
            // not write it again.
            ctx.cache
                .set_published_notices(node, Some(written.notices().to_vec()));
            Ok(())
        }
        Err(e) if e.status() == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}
