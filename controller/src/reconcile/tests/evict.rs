//! Drift eviction, driven by the pod reconcile once evict-at has passed.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use sessionguard_core::keys;

use super::POD;
use crate::fixtures::world::world;
use crate::fixtures::{our_pdb, pod, session};
use crate::reconcile::pod;

const EVICTION: &str = "/api/v1/namespaces/ops/pods/web-0/eviction";
const TTL: Duration = Duration::from_secs(600);
/// Long past (the fixtures' clock is the real one).
const LOGIN: &str = "2026-11-24T00:59:30Z";
/// The pod reconcile's resync, when nothing else is pending.
const RESYNC: Duration = Duration::from_secs(300);

#[tokio::test]
async fn an_interacted_pod_past_its_evict_at_is_evicted_by_uid() {
    let web = pod("web-0").interacted(LOGIN, 1000, TTL).build();
    let (ctx, mut api) = world()
        .pod(&web)
        .agent("node-a", vec![])
        .evicting_interacted_pods()
        .start();
    let run = tokio::spawn(pod::reconcile(Arc::new(web.clone()), ctx.clone()));

    let eviction = api.next().await.is("POST", EVICTION);
    assert_eq!(eviction.body["kind"], "Eviction");
    assert_eq!(eviction.body["metadata"]["name"], "web-0");
    assert_eq!(
        eviction.body["deleteOptions"]["preconditions"]["uid"],
        web.uid().unwrap().as_str(),
        "a newer pod that took the name is never evicted: {}",
        eviction.body
    );
    eviction.success();

    assert_eq!(
        run.await.unwrap().expect("evicted"),
        Action::requeue(RESYNC)
    );
    assert_eq!(api.finish(ctx).await, ["Evicted"]);
}

#[tokio::test]
async fn an_eviction_a_pdb_refuses_is_retried_with_a_growing_backoff() {
    let web = pod("web-0").interacted(LOGIN, 1000, TTL).build();
    let (ctx, mut api) = world()
        .pod(&web)
        .agent("node-a", vec![])
        .evicting_interacted_pods()
        .start();

    for retry in [2, 4] {
        let run = tokio::spawn(pod::reconcile(Arc::new(web.clone()), ctx.clone()));
        api.next()
            .await
            .is("POST", EVICTION)
            .refuse(429, "TooManyRequests");
        assert_eq!(
            run.await
                .unwrap()
                .expect("a refused eviction is not an error"),
            Action::requeue(Duration::from_secs(retry))
        );
    }
    assert_eq!(api.finish(ctx).await, ["EvictionFailed", "EvictionFailed"]);
}

#[tokio::test]
async fn a_live_login_on_a_protected_pod_postpones_the_eviction() {
    // Protected and recorded by earlier reconciles: nothing left to patch.
    let web = pod("web-0")
        .protected()
        .was_protected()
        .interacted(LOGIN, 1000, TTL)
        .build();
    let (ctx, api) = world()
        .pod(&web)
        .pdb(&our_pdb(&web))
        .agent("node-a", vec![session(&web).at(LOGIN).build()])
        .evicting_interacted_pods()
        .start();

    let action = pod::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("postponed");

    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    assert_eq!(api.finish(ctx).await, ["EvictionPostponed"]);
}

#[tokio::test]
async fn with_eviction_off_a_login_writes_no_evict_at_but_the_reason() {
    // The default: --evict-interacted false.
    let web = pod("web-0").build();
    let (ctx, mut api) = world()
        .pod(&web)
        .agent("node-a", vec![session(&web).at(LOGIN).build()])
        .start();
    let run = tokio::spawn(pod::reconcile(Arc::new(web.clone()), ctx.clone()));

    let patch = api.next().await.is("PATCH", POD);
    let annotations = &patch.body["metadata"]["annotations"];
    assert_eq!(annotations[keys::FIRST_INTERACTION], LOGIN);
    assert!(
        annotations.get(keys::EVICT_AT).is_none(),
        "no eviction time where eviction does not apply: {annotations}"
    );
    assert_eq!(
        annotations[keys::EVICTION],
        "off: --evict-interacted is false"
    );
    patch.ok(&web);

    run.await.unwrap().expect("recorded");
    assert_eq!(api.finish(ctx).await, ["SessionStarted"]);
}

#[tokio::test]
async fn a_hand_edited_evict_at_is_recomputed_not_obeyed() {
    let web = pod("web-0")
        .interacted(LOGIN, 1000, TTL)
        .annotated(keys::EVICT_AT, "2099-01-01T00:00:00Z")
        .build();
    let (ctx, mut api) = world()
        .pod(&web)
        .agent("node-a", vec![])
        .evicting_interacted_pods()
        .start();
    let run = tokio::spawn(pod::reconcile(Arc::new(web.clone()), ctx.clone()));

    let patch = api.next().await.is("PATCH", POD);
    assert_eq!(
        patch.body["metadata"]["annotations"][keys::EVICT_AT],
        "2026-11-24T01:09:30Z",
        "first + ttl, whatever the annotation said"
    );
    patch.ok(&web);
    api.next().await.is("POST", EVICTION).success();

    run.await.unwrap().expect("evicted");
    assert_eq!(api.finish(ctx).await, ["Evicted"]);
}
