//! sessionguard's cluster-wide objects from the files the Helm chart ships: the
//! SessionReport CRD (awaited until Established) and the ValidatingAdmissionPolicy
//! with its binding. RBAC comes per test from [`super::identity`].

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde::de::DeserializeOwned;
use sessionguard_core::keys;

use super::await_;
use crate::{Error, Result};

pub const CRD: &str = include_str!("../../../charts/sessionguard/crds/sessionreports.yaml");
pub const POLICY: &str =
    include_str!("../../../charts/sessionguard/files/sessionreport-policy.yaml");

/// The SessionReports as the API server stores them (plain JSON: tests read and
/// write fields the typed resource would refuse or normalise).
pub fn report_api(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(keys::REPORT_GROUP, keys::REPORT_VERSION, keys::REPORT_KIND);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, keys::REPORT_PLURAL),
    )
}

/// Creates `obj`, or replaces the one of that name.
pub async fn create_or_replace<K>(api: &Api<K>, obj: K) -> Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let mut obj = obj;
            let current = api.get(&name).await?;
            obj.meta_mut().resource_version = current.meta().resource_version.clone();
            api.replace(&name, &PostParams::default(), &obj).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The CRD (waits for Established) and the admission policy and binding.
pub async fn install(client: &kube::Client) -> Result<()> {
    let crd: CustomResourceDefinition = serde_yaml::from_str(CRD)?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    create_or_replace(&crds, crd).await?;
    await_::object(
        &crds,
        "sessionreports.sessionguard.io",
        "Established",
        |c| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        },
    )
    .await?;
    let mut docs = serde_yaml::Deserializer::from_str(POLICY);
    let invalid = |what: &str| Error::Invalid(format!("{what} missing from the policy file"));
    let policy: ValidatingAdmissionPolicy =
        serde::Deserialize::deserialize(docs.next().ok_or_else(|| invalid("policy"))?)?;
    let binding: ValidatingAdmissionPolicyBinding =
        serde::Deserialize::deserialize(docs.next().ok_or_else(|| invalid("binding"))?)?;
    create_or_replace(&Api::all(client.clone()), policy).await?;
    create_or_replace(&Api::all(client.clone()), binding).await?;
    Ok(())
}
