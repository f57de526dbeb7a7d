//! Awaiting Kubernetes objects instead of sleeping.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde::de::DeserializeOwned;

use crate::{Result, wait};

/// Default patience for things a healthy cluster does in a few seconds.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until object `name` exists and satisfies `pred`; returns it.
pub async fn object<K>(api: &Api<K>, name: &str, what: &str, pred: impl Fn(&K) -> bool) -> Result<K>
where
    K: Clone + DeserializeOwned + Debug,
{
    wait::until(&format!("{name}: {what}"), TIMEOUT, || async {
        Ok(api.get_opt(name).await?.filter(|o| pred(o)))
    })
    .await
}

/// Waits until `name` is gone (or replaced by an object with another UID).
pub async fn gone<K>(api: &Api<K>, name: &str, uid: &str) -> Result<()>
where
    K: Clone + DeserializeOwned + Debug + kube::Resource,
{
    wait::until(
        &format!("{name} (uid {uid}) to be deleted"),
        TIMEOUT,
        || async {
            Ok(match api.get_opt(name).await? {
                Some(o) if o.meta().uid.as_deref() == Some(uid) => None,
                _ => Some(()),
            })
        },
    )
    .await
}

/// Running with the Ready condition True.
pub fn is_running_ready(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
        && pod.metadata.deletion_timestamp.is_none()
}

/// Waits until pod `name` is Running and Ready; returns it.
pub async fn pod_ready(api: &Api<Pod>, name: &str) -> Result<Pod> {
    object(api, name, "Running and Ready", is_running_ready).await
}

/// Waits until pod `name` is Running and Ready with a UID other than `old_uid`.
pub async fn pod_replaced(api: &Api<Pod>, name: &str, old_uid: &str) -> Result<Pod> {
    object(
        api,
        name,
        "recreated with a new UID, Running and Ready",
        |p| p.metadata.uid.as_deref() != Some(old_uid) && is_running_ready(p),
    )
    .await
}
