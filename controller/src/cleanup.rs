//! `sessionguard-controller cleanup`: the uninstall path (the chart's
//! pre-delete hook; `deploy/sessionguard-cleanup.yaml` for plain manifests).
//!
//! 1. Take the controller's Lease over (a running leader renews it for ever,
//!    so waiting for it to expire would never end), then wait out the previous
//!    holder's Lease duration: its writes stop at its renew deadline, shorter
//!    than that, so after the wait nobody else writes. Renewed in the
//!    background with the same fence as the controller's writer, so if this
//!    process dies the controller takes over again within a Lease duration and
//!    protects what is still logged in.
//! 2. Delete every PDB labelled as ours, in every namespace, each with a UID
//!    precondition; then undo our labels and annotations on every pod and put
//!    the autoscaler annotations back (`sessionguard_core::uninstall`). PDBs
//!    first, as the controller releases: a pod is never left unprotected
//!    while an autoscaler annotation says it may go.
//! 3. Again, until a pass finds nothing: a write an old leader had in flight
//!    at its fence may land late.
//! 4. Keep the Lease for `--hold-lease-for`, so no replica leads (and writes)
//!    again before Helm deletes the Deployment, and make the controller's
//!    ServiceAccount its owner, so the garbage collector removes it with the
//!    release and a reinstall does not wait for it.
//!
//! Idempotent: a second run finds nothing to do. Every call is bounded by
//! `--write-timeout`; every failure is counted and named in the error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use sessionguard_api::CachedPod;
use sessionguard_core::keys;
use sessionguard_core::uninstall::{Changes, pod_undo};

use crate::config::{CleanupArgs, Config};
use crate::error::{Error, Result};
use crate::io::lease::Elector;
use crate::io::metrics::Metrics;
use crate::io::writer::{WriteGate, Writer, timed};

/// Passes after which writes still appearing are an error (something else
/// is writing: a controller that does not honour the Lease).
const MAX_PASSES: u32 = 3;
const PAGE: u32 = 500;

/// What one run did, for the summary line.
#[derive(Debug, Default)]
struct Counts {
    passes: u32,
    pdbs_deleted: u64,
    pods_seen: u64,
    pods_restored: u64,
    failures: Vec<String>,
}

pub async fn run(config: Config, args: CleanupArgs) -> Result<()> {
    let started = Instant::now();
    let client = crate::run::connect().await?;
    let work = cleanup(client, &config, &args);
    match tokio::time::timeout(args.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(Error::Cleanup(format!(
            "did not finish within --timeout {:?} (elapsed {:?})",
            args.timeout,
            started.elapsed()
        ))),
    }
}

async fn cleanup(client: Client, config: &Config, args: &CleanupArgs) -> Result<()> {
    let started = Instant::now();
    let metrics = Metrics::default();
    // A name of its own, so it never mistakes the controller's holding for its
    // own (`kubectl exec` into a controller pod inherits its POD_NAME).
    let identity = format!("{}-cleanup", config.identity());
    let mut elector = config.elector(client.clone(), &identity, metrics.clone());
    let attempt = Instant::now();
    let fence = elector.take_over().await?;
    let gate = Arc::new(WriteGate::new(metrics.leader.clone()));
    let renew_deadline = config.lease_duration * 2 / 3;
    gate.open_until(attempt + renew_deadline);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let renewing = tokio::spawn(renew(elector, gate.clone(), renew_deadline, stop_rx));
    if !fence.is_zero() {
        tracing::info!(
            wait_secs = fence.as_secs(),
            "waiting out the previous holder's Lease before writing"
        );
        tokio::time::sleep(fence).await;
    }
    let writer = Writer::new(client.clone(), gate, config.write_timeout, metrics.clone());

    let mut counts = Counts::default();
    let outcome = loop {
        counts.passes += 1;
        let before = (counts.pdbs_deleted, counts.pods_restored);
        if let Err(e) = pass(&writer, &metrics, &mut counts).await {
            break Err(e);
        }
        let changed = (counts.pdbs_deleted, counts.pods_restored) != before;
        if !changed || !counts.failures.is_empty() {
            break Ok(());
        }
        if counts.passes >= MAX_PASSES {
            break Err(Error::Cleanup(format!(
                "still finding our PDBs or keys after {MAX_PASSES} passes: something else writes them"
            )));
        }
    };
    let _ = stop_tx.send(true);
    let mut elector = renewing
        .await
        .map_err(|e| Error::Cleanup(format!("the Lease renewal task failed: {e}")))?;
    let outcome = outcome.and_then(|()| {
        if counts.failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Cleanup(format!(
                "{} write(s) failed: {}",
                counts.failures.len(),
                counts.failures.join("; ")
            )))
        }
    });
    let held = if outcome.is_ok() {
        hold(&mut elector, &client, config, args).await
    } else {
        // Let the controller lead again at once and protect what is left.
        elector.release().await;
        Ok(())
    };
    tracing::info!(
        passes = counts.passes,
        pdbs_deleted = counts.pdbs_deleted,
        pods_seen = counts.pods_seen,
        pods_restored = counts.pods_restored,
        failures = counts.failures.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        ok = outcome.is_ok(),
        "cleanup summary"
    );
    outcome.and(held)
}

/// Renews the Lease until told to stop (then hands the elector back); the
/// gate closes on its own at the renew deadline if renewals fail.
async fn renew(
    mut elector: Elector,
    gate: Arc<WriteGate>,
    renew_deadline: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Elector {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(elector.renew_period()) => {}
            _ = stop.wait_for(|s| *s) => return elector,
        }
        let attempt = Instant::now();
        match elector.try_acquire_or_renew().await {
            Ok(true) => gate.open_until(attempt + renew_deadline),
            Ok(false) => {
                tracing::error!("another replica took the Lease: stopping writes");
                gate.close();
            }
            Err(e) => tracing::warn!(error = %e, "Lease renewal failed"),
        }
    }
}

/// Keeps the Lease for `--hold-lease-for`, owned by our ServiceAccount.
async fn hold(
    elector: &mut Elector,
    client: &Client,
    config: &Config,
    args: &CleanupArgs,
) -> Result<()> {
    match service_account_owner(client, config, config.write_timeout).await {
        Ok(Some(owner)) => {
            if let Err(e) = elector.set_owner(owner).await {
                tracing::warn!(error = %e, "could not make the ServiceAccount the Lease's owner; delete the Lease by hand before reinstalling within --hold-lease-for");
            }
        }
        Ok(None) => tracing::warn!(
            "not running as a ServiceAccount of the Lease's namespace: the Lease is left for --hold-lease-for"
        ),
        Err(e) => tracing::warn!(error = %e, "could not read this process's identity"),
    }
    elector.set_duration(args.hold_lease_for);
    match elector.try_acquire_or_renew().await? {
        true => {
            tracing::info!(hold_secs = args.hold_lease_for.as_secs(), "Lease held");
            Ok(())
        }
        false => Err(Error::Cleanup(
            "lost the Lease before holding it: a controller may lead again".into(),
        )),
    }
}

/// Our ServiceAccount as an owner reference (from a SelfSubjectReview, which
/// every authenticated identity may make), if it lives in the Lease's namespace.
async fn service_account_owner(
    client: &Client,
    config: &Config,
    timeout: Duration,
) -> Result<Option<OwnerReference>> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = SelfSubjectReview {
        metadata: ObjectMeta::default(),
        status: None,
    };
    let answer = tokio::time::timeout(timeout, api.create(&PostParams::default(), &review))
        .await
        .map_err(|_| Error::Timeout {
            op: "self_subject_review",
            secs: timeout.as_secs(),
        })?
        .map_err(|source| Error::Kube {
            op: "self_subject_review",
            source,
        })?;
    let user = answer.status.and_then(|s| s.user_info).unwrap_or_default();
    let prefix = format!("system:serviceaccount:{}:", config.lease_namespace);
    let (Some(name), Some(uid)) = (
        user.username
            .as_deref()
            .and_then(|u| u.strip_prefix(&prefix)),
        user.uid,
    ) else {
        return Ok(None);
    };
    Ok(Some(OwnerReference {
        api_version: "v1".into(),
        kind: "ServiceAccount".into(),
        name: name.to_string(),
        uid,
        controller: None,
        block_owner_deletion: None,
    }))
}

/// One pass over every namespace: our PDBs, then every pod's keys.
async fn pass(writer: &Writer, metrics: &Metrics, counts: &mut Counts) -> Result<()> {
    let client = writer.client().clone();
    let pdbs: Api<PodDisruptionBudget> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{}={}", keys::MANAGED_BY, keys::MANAGER));
    let ours = timed(metrics, "list_pdbs", writer.timeout(), pdbs.list(&lp)).await?;
    for pdb in ours.items {
        let (ns, name) = (pdb.namespace().unwrap_or_default(), pdb.name_any());
        let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pdb.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match writer.write("delete_pdb", api.delete(&name, &dp)).await {
            Ok(_) => counts.pdbs_deleted += 1,
            // Gone already (the pod went, or another run), or replaced.
            Err(e) if matches!(e.status(), Some(404 | 409)) => {}
            Err(e) => counts.failures.push(format!("PDB {ns}/{name}: {e}")),
        }
    }

    let pods: Api<CachedPod> = Api::all(client.clone());
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = timed(
            metrics,
            "list_pods",
            writer.timeout(),
            pods.list_metadata(&lp),
        )
        .await?;
        for meta in &page.items {
            counts.pods_seen += 1;
            match restore_pod(writer, metrics, &meta.metadata).await {
                Ok(true) => counts.pods_restored += 1,
                Ok(false) => {}
                Err(e) => counts.failures.push(format!(
                    "pod {}/{}: {e}",
                    meta.metadata.namespace.as_deref().unwrap_or(""),
                    meta.metadata.name.as_deref().unwrap_or("")
                )),
            }
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(());
        }
    }
}

/// Undoes our keys on one pod: a merge patch carrying the resourceVersion it
/// was computed from; on a conflict, read the pod again and recompute. True
/// if something was changed.
async fn restore_pod(writer: &Writer, metrics: &Metrics, listed: &ObjectMeta) -> Result<bool> {
    let (ns, name) = (
        listed.namespace.clone().unwrap_or_default(),
        listed.name.clone().unwrap_or_default(),
    );
    let api: Api<CachedPod> = Api::namespaced(writer.client().clone(), &ns);
    let mut meta = listed.clone();
    for _ in 0..3 {
        let empty = BTreeMap::new();
        let undo = pod_undo(
            meta.labels.as_ref().unwrap_or(&empty),
            meta.annotations.as_ref().unwrap_or(&empty),
        );
        if undo.is_empty() {
            return Ok(false);
        }
        let patch = merge_patch(
            &undo.labels,
            &undo.annotations,
            meta.resource_version.as_deref(),
        );
        match writer
            .write(
                "patch_pod",
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
        {
            Ok(_) => return Ok(true),
            Err(e) if e.status() == Some(404) => return Ok(false),
            Err(e) if e.status() == Some(409) => {
                match timed(metrics, "get_pod", writer.timeout(), api.get_opt(&name)).await? {
                    Some(pod) => meta = pod.metadata,
                    None => return Ok(false),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Cleanup(format!(
        "pod {ns}/{name} kept changing under three patches"
    )))
}

fn merge_patch(labels: &Changes, annotations: &Changes, rv: Option<&str>) -> serde_json::Value {
    let mut meta = serde_json::Map::new();
    if !labels.is_empty() {
        meta.insert("labels".into(), serde_json::json!(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), serde_json::json!(annotations));
    }
    if let Some(rv) = rv {
        meta.insert("resourceVersion".into(), rv.into());
    }
    serde_json::json!({ "metadata": meta })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_removes_with_null_and_is_guarded_by_the_version() {
        let labels = Changes::from([(keys::POD_UID_LABEL.to_string(), None)]);
        let annotations =
            Changes::from([(keys::CA_SAFE_TO_EVICT.to_string(), Some("true".into()))]);
        let p = merge_patch(&labels, &annotations, Some("42"));
        assert_eq!(
            p,
            serde_json::json!({"metadata": {
                "labels": {"sessionguard.io/pod-uid": null},
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"},
                "resourceVersion": "42"
            }})
        );
    }
}
