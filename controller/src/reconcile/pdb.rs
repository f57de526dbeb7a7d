//! Our PodDisruptionBudgets: one per logged-in pod, `maxUnavailable: 0`,
//! selecting the pod by its UID label, owned by the pod (garbage-collected
//! with it) and labelled as ours. A PDB we did not create is never changed.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use sessionguard_api::CachedPod;
use sessionguard_core::keys;
use sessionguard_core::protection::pdb_name;

use super::Context;
use crate::error::{Error, Result};
use crate::io::cache::is_ours;
use crate::io::events::{self, Kind};

/// The PDB we want for `pod`.
pub fn desired(pod: &CachedPod) -> PodDisruptionBudget {
    let uid = pod.uid().unwrap_or_default();
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(pdb_name(&pod.name_any())),
            namespace: pod.namespace(),
            labels: Some(BTreeMap::from([
                (keys::MANAGED_BY.to_string(), keys::MANAGER.to_string()),
                (keys::POD_UID_LABEL.to_string(), uid.clone()),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.name_any(),
                uid: uid.clone(),
                // Not a controller reference (the pod's workload controls it),
                // and no blockOwnerDeletion (would need pods/finalizers rights).
                controller: None,
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(0)),
            // Said explicitly, because a cluster default or a future API
            // default of AlwaysAllow would let a drain evict a logged-in pod
            // the moment it fails readiness (a hung shell, a broken probe).
            // With IfHealthyBudget a single unready pod leaves the budget
            // unmet, so it stays protected.
            unhealthy_pod_eviction_policy: Some("IfHealthyBudget".into()),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(keys::POD_UID_LABEL.to_string(), uid)])),
                match_expressions: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

pub enum Ensured {
    Created,
    Present,
    /// A PDB we did not create holds the name.
    NameTaken,
}

/// Creates the PDB unless it exists. Called only when the store shows none of ours.
pub async fn ensure(ctx: &Context, pod: &CachedPod) -> Result<Ensured> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.writer.client().clone(), &ns);
    let pdb = desired(pod);
    match ctx
        .writer
        .write("create_pdb", api.create(&PostParams::default(), &pdb))
        .await
    {
        Ok(_) => Ok(Ensured::Created),
        Err(e) if e.status() == Some(409) => {
            let name = pdb_name(&pod.name_any());
            let existing = api.get_opt(&name).await.map_err(|source| Error::Kube {
                op: "get_pdb",
                source,
            })?;
            if existing.as_ref().is_some_and(|p| is_ours(p, pod)) {
                return Ok(Ensured::Present);
            }
            let first = ctx.memory.with_pod(&pod.uid().unwrap_or_default(), |m| {
                !std::mem::replace(&mut m.warned_name_taken, true)
            });
            if first {
                ctx.events.on_pod(
                    pod,
                    Kind::Warning,
                    "PDBNameTaken",
                    format!(
                        "cannot protect {}: a PodDisruptionBudget named {name} exists and was not created by sessionguard; it is left untouched. Rename it to let sessionguard protect this pod.",
                        events::pod_name(pod)
                    ),
                );
            }
            Ok(Ensured::NameTaken)
        }
        Err(e) => Err(e),
    }
}

/// Deletes our PDB, with a UID precondition so a PDB that replaced ours under
/// the same name in the meantime is never deleted. True if this call deleted
/// it: a lagging cache can show a PDB an earlier reconcile already deleted, and
/// that must not announce the release a second time.
pub async fn delete(ctx: &Context, pdb: &PodDisruptionBudget) -> Result<bool> {
    let ns = pdb.namespace().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.writer.client().clone(), &ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pdb.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match ctx
        .writer
        .write("delete_pdb", api.delete(&pdb.name_any(), &dp))
        .await
    {
        Ok(_) => Ok(true),
        // Gone already (GC or a previous attempt), or replaced by someone else's.
        Err(e) if matches!(e.status(), Some(404 | 409)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pod;

    #[test]
    fn selects_exactly_the_pod_and_is_owned_by_it() {
        let p = pod("target-sts-0").on_node("node-b").build();
        let pdb = desired(&p);
        assert_eq!(
            pdb.metadata.name.as_deref(),
            Some("sessionguard-target-sts-0")
        );
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("IfHealthyBudget"),
            "an unready logged-in pod stays protected"
        );
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap()[keys::POD_UID_LABEL],
            p.metadata.uid.clone().unwrap()
        );
        let owner = &pdb.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Pod", p.metadata.uid.as_deref().unwrap())
        );
        assert_eq!(
            pdb.metadata.labels.unwrap()[keys::MANAGED_BY],
            "sessionguard"
        );
    }
}
