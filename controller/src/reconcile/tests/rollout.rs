//! OnDelete StatefulSet rollouts: one eviction at a time, never a logged-in
//! pod, and the status fix-up at the end.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use sessionguard_api::CachedPod;

use super::MERGE_PATCH;
use crate::fixtures::world::{World, world};
use crate::fixtures::{pod, session, statefulset};
use crate::reconcile::rollout;

/// `web`, protected, with its three pods at the given revisions, all Ready.
fn web_at(revisions: [&str; 3]) -> (StatefulSet, Vec<CachedPod>) {
    let updated = revisions.iter().filter(|r| **r == "web-new").count() as i32;
    let sts = statefulset("web")
        .protected()
        .updated_replicas(updated)
        .build();
    let pods = revisions
        .iter()
        .enumerate()
        .map(|(i, rev)| pod(&format!("web-{i}")).of(&sts, rev).ready().build())
        .collect();
    (sts, pods)
}

fn with(sts: &StatefulSet, pods: &[CachedPod]) -> World {
    pods.iter().fold(world().statefulset(sts), |w, p| w.pod(p))
}

#[tokio::test]
async fn an_outdated_pod_is_evicted_highest_ordinal_first_and_only_once() {
    let (sts, pods) = web_at(["web-new", "web-old", "web-old"]);
    let (ctx, mut api) = with(&sts, &pods).agent("node-a", vec![]).start();
    let sts = Arc::new(sts);
    let run = tokio::spawn(rollout::reconcile(sts.clone(), ctx.clone()));

    let eviction = api
        .next()
        .await
        .is("POST", "/api/v1/namespaces/ops/pods/web-2/eviction");
    assert_eq!(
        eviction.body["deleteOptions"]["preconditions"]["uid"],
        pods[2].uid().unwrap().as_str(),
        "{}",
        eviction.body
    );
    eviction.success();
    assert_eq!(
        run.await.unwrap().expect("evicted"),
        Action::requeue(Duration::from_secs(1))
    );

    // The cache has not caught up (web-2 still shows running): the next
    // reconcile waits for it instead of evicting web-1 or web-2 again.
    let action = rollout::reconcile(sts, ctx.clone()).await.expect("waits");
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    assert_eq!(api.finish(ctx).await, ["RolloutReplaced"]);
}

#[tokio::test]
async fn once_every_pod_is_updated_the_current_revision_is_marked() {
    let (sts, pods) = web_at(["web-new", "web-new", "web-new"]);
    let (ctx, mut api) = with(&sts, &pods).agent("node-a", vec![]).start();
    let run = tokio::spawn(rollout::reconcile(Arc::new(sts.clone()), ctx.clone()));

    let patch = api.next().await.is(
        "PATCH",
        "/apis/apps/v1/namespaces/ops/statefulsets/web/status",
    );
    assert_eq!(patch.content_type, MERGE_PATCH);
    assert_eq!(patch.body["status"]["currentRevision"], "web-new");
    assert_eq!(patch.body["status"]["currentReplicas"], 3);
    patch.ok(&sts);

    assert_eq!(
        run.await.unwrap().expect("marked"),
        Action::requeue(Duration::from_secs(60))
    );
    assert_eq!(api.finish(ctx).await, ["RolloutComplete"]);
}

#[tokio::test]
async fn a_logged_in_pod_holds_the_rollout_without_a_request() {
    let (sts, pods) = web_at(["web-new", "web-new", "web-old"]);
    let (ctx, api) = with(&sts, &pods)
        .agent("node-a", vec![session(&pods[2]).build()])
        .start();

    let action = rollout::reconcile(Arc::new(sts), ctx.clone())
        .await
        .expect("held");

    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    let events = api.finish(ctx).await;
    assert!(events.is_empty(), "{events:?}");
}
