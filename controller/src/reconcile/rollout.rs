//! OnDelete StatefulSet rollouts for protected sets: replace outdated pods one
//! at a time through the eviction API (so PDBs, including ours, are honoured),
//! never a logged-in pod, and fix up `status.currentRevision` at the end.
//!
//! Gather ([`Rollout::gather`]) → decide (`sessionguard_core::rollout`) →
//! act ([`act`]).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use sessionguard_api::CachedPod;
use sessionguard_core::keys;
use sessionguard_core::protection::OptIn;
use sessionguard_core::rollout::{self as decide, Member, Step, next_step, ordinal};
use sessionguard_core::rollout_stall::{self as stall, Blocked, Say};

use super::{Context, evict_pod};
use crate::error::{Error, Result};
use crate::io::events::{self, Kind};

/// Does sessionguard drive this set's updates?
pub fn manages(sts: &StatefulSet, opt: &OptIn) -> bool {
    let strategy = sts
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref());
    decide::manages(strategy, opt)
}

pub async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.timer("statefulset");
    ctx.cache.ready().await;
    let in_scope = ctx
        .cache
        .namespaces()
        .contains(sts.metadata.namespace.as_deref().unwrap_or_default());
    if !ctx.settings.rollout || !in_scope || !manages(&sts, &ctx.cache.set_opt_in(&sts)) {
        ctx.memory
            .rollout_stall(&sts.uid().unwrap_or_default(), |_| (None, ()));
        return Ok(Action::await_change());
    }
    let Some(rollout) = Rollout::gather(&ctx, &sts) else {
        return Ok(Action::await_change());
    };
    let step = next_step(
        &rollout.members,
        rollout.replicas,
        &rollout.current,
        &rollout.update,
    );
    let (action, blocked) = act(&ctx, &sts, &rollout, step).await?;
    keep_stall(&ctx, &sts, &rollout.update, blocked);
    Ok(action)
}

/// Keeps the set's stall and says when it becomes stuck or moves again
/// (decision: `sessionguard_core::rollout_stall`; the gauge is read at scrape).
fn keep_stall(ctx: &Context, sts: &StatefulSet, update: &str, blocked: Option<Blocked>) {
    let now = Timestamp::now();
    let after = ctx.settings.rollout_stuck_after;
    let say = ctx
        .memory
        .rollout_stall(&sts.uid().unwrap_or_default(), |prev| {
            stall::track(prev, blocked, now, after)
        });
    match say {
        Say::Nothing => {}
        Say::Stuck(text) => {
            tracing::warn!(statefulset = %sts.name_any(), %text, "rollout stuck");
            ctx.events.emit(
                events::object_ref(sts),
                Kind::Warning,
                "RolloutStuck",
                format!("{text} (revision {update})"),
            );
        }
        Say::Resumed(text) => {
            tracing::info!(statefulset = %sts.name_any(), %text, "rollout resumed");
            ctx.events.emit(
                events::object_ref(sts),
                Kind::Normal,
                "RolloutResumed",
                text,
            );
        }
    }
}

pub fn error_policy(sts: Arc<StatefulSet>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(statefulset = %sts.name_any(), error = %err, "rollout reconcile failed; retrying");
    ctx.failed("statefulset", err.kind(), Duration::from_secs(5))
}

/// What a rollout decision is made from.
struct Rollout {
    current: String,
    update: String,
    replicas: u32,
    updated_replicas: Option<i32>,
    pods: Vec<Arc<CachedPod>>,
    members: Vec<Member>,
}

impl Rollout {
    /// `None` while the set has no revisions to compare.
    fn gather(ctx: &Context, sts: &StatefulSet) -> Option<Self> {
        let status = sts.status.as_ref()?;
        let update = status.update_revision.clone()?;
        let current = status.current_revision.clone()?;
        let replicas = sts
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as u32;
        let name = sts.name_any();
        let now = Timestamp::now();
        let pods = ctx.cache.pods_of(sts);
        // Forgotten once the cache shows the evicted pod terminating or gone.
        let in_flight = ctx
            .memory
            .rollout_in_flight(&sts.uid().unwrap_or_default(), |uid| {
                pods.iter().any(|p| {
                    p.uid().as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none()
                })
            });
        let members = pods
            .iter()
            .filter_map(|p| {
                Some(Member {
                    name: p.name_any(),
                    ordinal: ordinal(&name, &p.name_any())?,
                    revision: p
                        .labels()
                        .get(keys::REVISION_HASH)
                        .cloned()
                        .unwrap_or_default(),
                    ready: p.ready,
                    terminating: p.metadata.deletion_timestamp.is_some()
                        || (in_flight.is_some() && p.uid() == in_flight),
                    logged_in: ctx.cache.logged_in(p, now, ctx.settings.plan.idle_release)
                        && !ctx.cache.opt_in(p).no_pdb,
                })
            })
            .collect();
        Some(Self {
            current,
            update,
            replicas,
            updated_replicas: status.updated_replicas,
            pods,
            members,
        })
    }
}

/// The step done, and what the rollout is blocked on, if anything (waiting
/// for logouts is not being blocked).
async fn act(
    ctx: &Context,
    sts: &StatefulSet,
    r: &Rollout,
    step: Step,
) -> Result<(Action, Option<Blocked>)> {
    let name = sts.name_any();
    match step {
        Step::Idle => Ok((Action::requeue(Duration::from_secs(60)), None)),
        Step::Wait(why) => {
            tracing::debug!(statefulset = %name, %why, "rollout waiting");
            let blocked = Blocked {
                on: why.clone(),
                why,
            };
            Ok((Action::requeue(Duration::from_secs(2)), Some(blocked)))
        }
        Step::Held(pods) => {
            tracing::debug!(statefulset = %name, ?pods, "rollout held by logged-in pods");
            Ok((Action::requeue(Duration::from_secs(10)), None))
        }
        Step::Replace(pod_name) => {
            let pod = r
                .pods
                .iter()
                .find(|p| p.name_any() == pod_name)
                .expect("the step names a member");
            replace(ctx, sts, pod, &r.update).await
        }
        Step::MarkCurrent => Ok((mark_current(ctx, sts, r).await?, None)),
    }
}

/// Evicts one outdated pod; its controller recreates it at the new revision.
/// A 429 means a PDB that is not ours (ours exist only for logged-in pods,
/// which are never chosen) refuses it: the rollout is blocked on that pod.
async fn replace(
    ctx: &Context,
    sts: &StatefulSet,
    pod: &CachedPod,
    update: &str,
) -> Result<(Action, Option<Blocked>)> {
    match evict_pod(ctx, pod).await {
        Ok(()) => {
            if let Some(uid) = pod.uid() {
                ctx.memory
                    .rollout_evicted(&sts.uid().unwrap_or_default(), uid);
            }
            ctx.metrics.eviction("rollout", "evicted");
            ctx.events.on_pod(
                pod,
                Kind::Normal,
                "RolloutReplaced",
                format!(
                    "evicted to roll out StatefulSet {} revision {update} (OnDelete, replaced by sessionguard one pod at a time)",
                    sts.name_any()
                ),
            );
            Ok((Action::requeue(Duration::from_secs(1)), None))
        }
        Err(e) if e.status() == Some(429) => {
            ctx.metrics.eviction("rollout", "blocked");
            let blocked = Blocked {
                on: format!("the eviction of {}", pod.name_any()),
                why: format!("refused with 429: {e}"),
            };
            Ok((Action::requeue(Duration::from_secs(5)), Some(blocked)))
        }
        Err(e) if matches!(e.status(), Some(404 | 409)) => {
            Ok((Action::requeue(Duration::from_secs(1)), None))
        }
        Err(e) => {
            ctx.metrics.eviction("rollout", "failed");
            Err(e)
        }
    }
}

/// Every pod runs the new revision: say so in the set's status, as the
/// StatefulSet controller would for RollingUpdate.
async fn mark_current(ctx: &Context, sts: &StatefulSet, r: &Rollout) -> Result<Action> {
    let name = sts.name_any();
    let api: Api<StatefulSet> = Api::namespaced(
        ctx.writer.client().clone(),
        &sts.namespace().unwrap_or_default(),
    );
    let patch = serde_json::json!({
        "status": {
            "currentRevision": r.update,
            "currentReplicas": r.updated_replicas.unwrap_or(r.replicas as i32),
        }
    });
    ctx.writer
        .write(
            "patch_statefulset_status",
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
    ctx.events.emit(
        events::object_ref(sts),
        Kind::Normal,
        "RolloutComplete",
        format!(
            "all {} pods run revision {}; status.currentRevision updated",
            r.replicas, r.update
        ),
    );
    Ok(Action::requeue(Duration::from_secs(60)))
}
