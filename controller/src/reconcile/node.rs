//! Cordoned nodes that hold protected pods: one Warning event on the Node
//! per cordon (`core::drain::cordon_step`), so whoever cordoned it sees in
//! `kubectl describe node` (and `kubectl get events`) who the drain will
//! wait for, before it starts waiting.
//!
//! One task on the leader, woken with node names by the node watch (cordon
//! changed) and by every pod reconcile (a pod's protection may have changed).
//! What was announced is kept in memory: a new leader announces a node that
//! is still cordoned once more.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use sessionguard_api::CachedPod;
use sessionguard_core::drain::{CordonStep, cordon_step};
use sessionguard_core::interaction::{login_user, rfc3339};
use tokio::sync::mpsc::UnboundedReceiver;

use super::Context;
use crate::io::events::{Kind, object_ref, pod_name};
use crate::io::report_index::Liveness;

pub const REASON: &str = "CordonedWithLogins";
/// Pods named in one event; the rest are counted.
const NAMED_MAX: usize = 5;

/// Runs until the channel closes (the controllers stop).
pub async fn run(ctx: Arc<Context>, mut woken: UnboundedReceiver<String>) {
    let mut announced: HashSet<String> = HashSet::new();
    while let Some(node) = woken.recv().await {
        let cordoned = ctx.cache.cordoned(&node);
        // Counting scans the pod cache: only where the answer can matter.
        if !cordoned && !announced.contains(&node) {
            continue;
        }
        let pods = if cordoned {
            ctx.cache.protected_on(&node)
        } else {
            vec![]
        };
        match cordon_step(announced.contains(&node), cordoned, pods.len()) {
            CordonStep::Announce => {
                let Some(n) = ctx.cache.stores.nodes.get(&ObjectRef::new(&node)) else {
                    continue;
                };
                announced.insert(node.clone());
                let note = note(&ctx, &node, &pods, Timestamp::now());
                ctx.events
                    .emit(object_ref(&*n), Kind::Warning, REASON, note);
            }
            CordonStep::Forget => {
                announced.remove(&node);
            }
            CordonStep::Nothing => {}
        }
    }
}

fn note(ctx: &Context, node: &str, pods: &[Arc<CachedPod>], now: Timestamp) -> String {
    let named: Vec<String> = pods
        .iter()
        .take(NAMED_MAX)
        .map(|p| {
            let logins: Vec<String> = match ctx.cache.liveness(p, now) {
                Liveness::Fresh { sessions, .. } => sessions
                    .iter()
                    .filter(|s| s.is_login())
                    .map(|s| {
                        format!(
                            "{} on {} since {}",
                            login_user(s.uid),
                            s.tty,
                            rfc3339(s.started_at)
                        )
                    })
                    .collect(),
                _ => vec![],
            };
            let who = p
                .annotations()
                .get(sessionguard_core::keys::LAST_INTERACTOR)
                .map(|u| format!("last interaction by {u}; "))
                .unwrap_or_default();
            if logins.is_empty() {
                format!("{} ({who}protection held)", pod_name(p))
            } else {
                format!("{} ({who}{})", pod_name(p), logins.join(", "))
            }
        })
        .collect();
    let more = pods.len().saturating_sub(NAMED_MAX);
    format!(
        "node {node} is cordoned and {} pod(s) on it are protected by sessionguard while logged in: {}{}; a drain of this node waits until they log out (kubectl sessions nodes)",
        pods.len(),
        named.join("; "),
        if more > 0 {
            format!("; {more} more")
        } else {
            String::new()
        }
    )
}
