//! Protection: the pod patch and the PDB (written at once), the release and its order.

use std::sync::Arc;

use kube::ResourceExt;
use sessionguard_api::CachedPod;
use sessionguard_core::keys;

use super::{MERGE_PATCH, OUR_PDB, PDBS, POD, removes};
use crate::error::Error;
use crate::fixtures::world::world;
use crate::fixtures::{foreign_pdb, our_pdb, pod, session};
use crate::reconcile::{Context, pod};

/// Runs one pod reconcile in the background, as the controller does.
fn reconcile(
    ctx: &Arc<Context>,
    pod: &CachedPod,
) -> tokio::task::JoinHandle<crate::error::Result<kube::runtime::controller::Action>> {
    tokio::spawn(pod::reconcile(Arc::new(pod.clone()), ctx.clone()))
}

#[tokio::test]
async fn a_login_on_an_opted_in_pod_labels_the_pod_and_creates_its_pdb_at_once() {
    let web = pod("web-0").protected().build();
    let uid = web.uid().unwrap();
    let (ctx, mut api) = world()
        .pod(&web)
        .agent("node-a", vec![session(&web).build()])
        .start();
    let run = reconcile(&ctx, &web);

    // Both writes are sent before either is answered: the pod is protected
    // once both exist, in whichever order they land.
    let patch = api.next().await.is("PATCH", POD);
    assert_eq!(patch.content_type, MERGE_PATCH);
    let meta = &patch.body["metadata"];
    assert_eq!(
        meta["resourceVersion"], "41",
        "the patch is conditional on the pod the decision read"
    );
    assert_eq!(meta["labels"][keys::POD_UID_LABEL], uid.as_str());
    assert_eq!(meta["labels"][keys::INTERACTED], "true");
    let annotations = &meta["annotations"];
    assert_eq!(annotations[keys::CA_SAFE_TO_EVICT], "false");
    assert_eq!(annotations[keys::KARPENTER_DO_NOT_DISRUPT], "true");
    assert!(annotations[keys::SAVED_ANNOTATIONS].is_string());
    assert_eq!(annotations[keys::INTERACTOR], "uid:1000");
    let create = api.next().await.is("POST", PDBS);
    patch.ok(&web);
    let pdb = &create.body;
    assert_eq!(pdb["metadata"]["name"], "sessionguard-web-0");
    assert_eq!(pdb["metadata"]["labels"][keys::MANAGED_BY], keys::MANAGER);
    assert_eq!(pdb["spec"]["maxUnavailable"], 0);
    let selector = pdb["spec"]["selector"]["matchLabels"].as_object().unwrap();
    assert_eq!(selector.len(), 1, "selects by the UID label only");
    assert_eq!(selector[keys::POD_UID_LABEL], uid.as_str());
    let owner = &pdb["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Pod");
    assert_eq!(owner["name"], "web-0");
    assert_eq!(owner["uid"], uid.as_str(), "garbage-collected with the pod");
    create.created();

    run.await.unwrap().expect("reconciled");
    assert_eq!(api.finish(ctx).await, ["Protected", "SessionStarted"]);
}

#[tokio::test]
async fn the_last_logout_deletes_our_pdb_before_restoring_the_annotations() {
    let web = pod("web-0").protected().was_protected().build();
    let pdb = our_pdb(&web);
    let (ctx, mut api) = world().pod(&web).pdb(&pdb).agent("node-a", vec![]).start();
    let run = reconcile(&ctx, &web);

    let delete = api.next().await.is("DELETE", OUR_PDB);
    assert_eq!(
        delete.body["preconditions"]["uid"],
        pdb.uid().unwrap().as_str(),
        "a PDB that replaced ours under the same name is never deleted"
    );
    delete.success();

    let patch = api.next().await.is("PATCH", POD);
    assert_eq!(patch.content_type, MERGE_PATCH);
    let annotations = &patch.body["metadata"]["annotations"];
    for key in [
        keys::CA_SAFE_TO_EVICT,
        keys::KARPENTER_DO_NOT_DISRUPT,
        keys::SAVED_ANNOTATIONS,
        keys::PROTECTED_SINCE,
    ] {
        assert!(removes(annotations, key), "{key} in {annotations}");
    }
    patch.ok(&web);

    run.await.unwrap().expect("reconciled");
    assert_eq!(api.finish(ctx).await, ["Released"]);
}

#[tokio::test]
async fn a_pdb_name_held_by_someone_else_is_left_alone_and_reported_once() {
    let web = pod("web-0").protected().build();
    let theirs = foreign_pdb(&web);
    let (ctx, mut api) = world()
        .pod(&web)
        .pdb(&theirs)
        .agent("node-a", vec![session(&web).build()])
        .start();

    for _ in 0..2 {
        let run = reconcile(&ctx, &web);
        api.next().await.is("PATCH", POD).ok(&web);
        api.next()
            .await
            .is("POST", PDBS)
            .refuse(409, "AlreadyExists");
        api.next().await.is("GET", OUR_PDB).ok(&theirs);
        run.await.unwrap().expect("a taken name is not an error");
    }

    // No delete, no update of their PDB (finish fails on any other request),
    // and one warning, not one per reconcile.
    assert_eq!(api.finish(ctx).await, ["PDBNameTaken", "SessionStarted"]);
}

#[tokio::test]
async fn a_pod_deleted_under_a_logout_is_not_an_error_and_announces_nothing() {
    let web = pod("web-0").protected().was_protected().build();
    let (ctx, mut api) = world()
        .pod(&web)
        .pdb(&our_pdb(&web))
        .agent("node-a", vec![])
        .start();
    let run = reconcile(&ctx, &web);

    // The garbage collector took the PDB with the pod.
    api.next()
        .await
        .is("DELETE", OUR_PDB)
        .refuse(404, "NotFound");
    api.next().await.is("PATCH", POD).refuse(404, "NotFound");

    run.await
        .unwrap()
        .expect("a 404 on the pod patch is not an error");
    let events = api.finish(ctx).await;
    assert!(events.is_empty(), "this call released nothing: {events:?}");
}

#[tokio::test]
async fn a_stale_pod_still_gets_its_pdb_and_the_conflict_is_retried() {
    let web = pod("web-0").protected().build();
    let (ctx, mut api) = world()
        .pod(&web)
        .agent("node-a", vec![session(&web).build()])
        .start();
    let run = reconcile(&ctx, &web);

    // The label's patch meets a newer pod (the webhook wrote a record); the
    // PDB needs nothing from that pod's copy, so it is made all the same.
    api.next().await.is("PATCH", POD).refuse(409, "Conflict");
    api.next().await.is("POST", PDBS).created();

    let err = run.await.unwrap().expect_err("a conflict is retried");
    assert_eq!(err.status(), Some(409), "{err}");
    assert_eq!(api.finish(ctx).await, ["Protected", "SessionStarted"]);
}

#[tokio::test]
async fn a_replica_without_the_lease_writes_nothing() {
    let web = pod("web-0").protected().build();
    let (ctx, api) = world()
        .pod(&web)
        .agent("node-a", vec![session(&web).build()])
        .not_leader()
        .start();

    let err = reconcile(&ctx, &web).await.unwrap().expect_err("refused");
    assert!(matches!(err, Error::NotLeader { op: "patch_pod" }), "{err}");
    let events = api.finish(ctx).await;
    assert!(events.is_empty(), "not even an event: {events:?}");
}

#[tokio::test]
async fn a_login_outside_the_chosen_namespaces_is_neither_looked_at_nor_written() {
    let web = pod("web-0").protected().build();
    let (ctx, api) = world()
        .pod(&web)
        .agent("node-a", vec![session(&web).build()])
        .only_in(&["db", "bastions"])
        .start();
    assert!(!ctx.cache.has_business(&web), "no wake-up for it");
    reconcile(&ctx, &web).await.unwrap().expect("nothing to do");
    let events = api.finish(ctx).await;
    assert!(events.is_empty(), "no write, not even an event: {events:?}");

    // The same login where the operator chose: protected (the control).
    let (ctx, mut api) = world()
        .pod(&web)
        .agent("node-a", vec![session(&web).build()])
        .only_in(&["ops"])
        .start();
    assert!(ctx.cache.has_business(&web));
    let run = reconcile(&ctx, &web);
    let patch = api.next().await.is("PATCH", POD);
    let create = api.next().await.is("POST", PDBS);
    patch.ok(&web);
    create.created();
    run.await.unwrap().expect("reconciled");
    assert_eq!(api.finish(ctx).await, ["Protected", "SessionStarted"]);
}
