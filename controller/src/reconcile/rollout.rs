//! OnDelete StatefulSet rollouts for protected sets: replace outdated pods one
//! at a time through the eviction API (so PDBs, including ours, are honoured),
//! never a logged-in pod, and fix up `status.currentRevision` at the end.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use sessionguard_core::keys;
use sessionguard_core::protection::OptIn;
use sessionguard_core::rollout::{self as decide, Member, Step, next_step, ordinal};

use super::{Context, evict};
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

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.timer("statefulset");
    ctx.cache.ready().await;
    let ns = sts.namespace().unwrap_or_default();
    if !ctx.settings.rollout || !manages(&sts, &ctx.cache.set_opt_in(&sts)) {
        return Ok(Action::await_change());
    }
    let Some(status) = sts.status.as_ref() else {
        return Ok(Action::await_change());
    };
    let (Some(update), Some(current)) = (
        status.update_revision.as_deref(),
        status.current_revision.as_deref(),
    ) else {
        return Ok(Action::await_change());
    };
    let replicas = sts
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as u32;
    let name = sts.name_any();
    let now = Timestamp::now();
    let pods = ctx.cache.pods_of(&sts);
    let sts_uid = sts.uid().unwrap_or_default();
    // Forgotten once the cache shows the evicted pod terminating or gone.
    let in_flight = ctx.memory.rollout_in_flight(&sts_uid, |uid| {
        pods.iter()
            .any(|p| p.uid().as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none())
    });
    let members: Vec<Member> = pods
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
                ready: ready(p),
                terminating: p.metadata.deletion_timestamp.is_some()
                    || (in_flight.is_some() && p.uid() == in_flight),
                logged_in: ctx.cache.logged_in(p, now) && !ctx.cache.opt_in(p).no_pdb,
            })
        })
        .collect();

    match next_step(&members, replicas, current, update) {
        Step::Idle => Ok(Action::requeue(Duration::from_secs(60))),
        Step::Wait(why) => {
            tracing::debug!(statefulset = %name, %why, "rollout waiting");
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        Step::Held(pods) => {
            tracing::debug!(statefulset = %name, ?pods, "rollout held by logged-in pods");
            Ok(Action::requeue(Duration::from_secs(10)))
        }
        Step::Replace(pod_name) => {
            let pod = pods
                .iter()
                .find(|p| p.name_any() == pod_name)
                .expect("member");
            let api: Api<Pod> = Api::namespaced(ctx.writer.client().clone(), &ns);
            match ctx
                .writer
                .write("evict_pod", evict::evict_by_uid(&api, pod))
                .await
            {
                Ok(_) => {
                    if let Some(uid) = pod.uid() {
                        ctx.memory.rollout_evicted(&sts_uid, uid);
                    }
                    ctx.metrics.eviction("rollout", "evicted");
                    ctx.events.on_pod(
                        pod,
                        Kind::Normal,
                        "RolloutReplaced",
                        format!(
                            "evicted to roll out StatefulSet {name} revision {update} (OnDelete, replaced by sessionguard one pod at a time)"
                        ),
                    );
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
                Err(e) if e.status() == Some(429) => {
                    ctx.metrics.eviction("rollout", "blocked");
                    Ok(Action::requeue(Duration::from_secs(5)))
                }
                Err(e) if matches!(e.status(), Some(404 | 409)) => {
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
                Err(e) => {
                    ctx.metrics.eviction("rollout", "failed");
                    Err(e)
                }
            }
        }
        Step::MarkCurrent => {
            let api: Api<StatefulSet> = Api::namespaced(ctx.writer.client().clone(), &ns);
            let patch = serde_json::json!({
                "status": {
                    "currentRevision": update,
                    "currentReplicas": status.updated_replicas.unwrap_or(replicas as i32),
                }
            });
            ctx.writer
                .write(
                    "patch_statefulset_status",
                    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await?;
            ctx.events.emit(
                events::object_ref(&*sts),
                Kind::Normal,
                "RolloutComplete",
                format!(
                    "all {replicas} pods run revision {update}; status.currentRevision updated"
                ),
            );
            Ok(Action::requeue(Duration::from_secs(60)))
        }
    }
}

pub fn error_policy(sts: Arc<StatefulSet>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(statefulset = %sts.name_any(), error = %err, "rollout reconcile failed; retrying");
    ctx.failed("statefulset", err.kind(), Duration::from_secs(5))
}
