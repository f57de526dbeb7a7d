//! Drift eviction (kube-exec-controller's job): an interacted pod is evicted
//! through the eviction API once its evict-at passes, so the workload
//! recreates it from its declared spec. Opt-in with `--evict-interacted`.
//!
//! The time comes from the pod's annotations, never from memory, so a
//! restarted or failed-over controller evicts at the same moment.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, EvictParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use sessionguard_core::interaction::{Interaction, rfc3339};
use sessionguard_core::protection::OptIn;
use sessionguard_core::{Session, duration, keys};

use crate::error::Result;
use crate::events::{self, Kind};
use crate::state::State;

const POSTPONE_RECHECK: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Is drift eviction on for this pod's namespace?
pub fn enabled_for(state: &State, pod: &Pod) -> bool {
    if !state.config.evict_interacted {
        return false;
    }
    let ns = pod.namespace().unwrap_or_default();
    if !state.config.namespace_allowed_to_evict(&ns) {
        return false;
    }
    let exempt = state
        .stores
        .namespaces
        .get(&ObjectRef::new(&ns))
        .is_some_and(|n| keys::is_true(n.labels().get(keys::EVICTION_EXEMPT).map(String::as_str)));
    !exempt
}

/// Backoff after `attempts` failed evictions: 2s, 4s, ... capped at 5m.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.clamp(1, 16))).min(MAX_BACKOFF)
}

/// Returns when to look again, if eviction is pending.
pub async fn step(
    state: &Arc<State>,
    pod: &Pod,
    logins: &[Session],
    opt: &OptIn,
    record: Option<&Interaction>,
    now: Timestamp,
) -> Result<Option<Duration>> {
    let Some(record) = record else {
        return Ok(None);
    };
    if !enabled_for(state, pod) {
        return Ok(None);
    }
    let uid = pod.uid().unwrap_or_default();
    let evict_at = record.evict_at(state.config.webhook.max_extension);
    let first = state.with_memory(&uid, |m| {
        !std::mem::replace(&mut m.scheduled_event_sent, true)
    });
    if first && now < evict_at {
        events::on_pod(
            state,
            pod,
            Kind::Warning,
            "EvictionScheduled",
            format!(
                "pod was interacted with by {} at {}; it will be evicted at {} (in about {}) to undo drift. Extend with `kubectl sessions extend`.",
                record.interactor,
                rfc3339(record.first),
                rfc3339(evict_at),
                duration::format(
                    Duration::try_from(evict_at.duration_since(now)).unwrap_or_default()
                )
            ),
        );
    }
    if now < evict_at {
        let wait = Duration::try_from(evict_at.duration_since(now)).unwrap_or_default();
        return Ok(Some(wait + Duration::from_millis(20)));
    }
    if !logins.is_empty() && opt.wants_protection() {
        let first = state.with_memory(&uid, |m| m.postponed_at.replace(now).is_none());
        if first {
            state.metrics.eviction("drift", "postponed");
            events::on_pod(
                state,
                pod,
                Kind::Normal,
                "EvictionPostponed",
                format!(
                    "eviction was due at {} but {} login session(s) are live on this protected pod; it is evicted after the last one ends",
                    rfc3339(evict_at),
                    logins.len()
                ),
            );
        }
        return Ok(Some(POSTPONE_RECHECK));
    }

    let api: Api<Pod> = Api::namespaced(state.client.clone(), &pod.namespace().unwrap_or_default());
    let ep = EvictParams {
        delete_options: Some(DeleteParams {
            // Never evict a newer pod that took this one's name.
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    match state
        .write("evict_pod", api.evict(&pod.name_any(), &ep))
        .await
    {
        Ok(_) => {
            state.metrics.eviction("drift", "evicted");
            events::on_pod(
                state,
                pod,
                Kind::Normal,
                "Evicted",
                format!(
                    "evicted at {} (due {}) because it was interacted with by {}; its controller recreates it from the declared spec",
                    rfc3339(now),
                    rfc3339(evict_at),
                    record.interactor
                ),
            );
            Ok(None)
        }
        Err(e) if matches!(e.status(), Some(404 | 409)) => Ok(None),
        Err(e) => {
            let blocked = e.status() == Some(429);
            state
                .metrics
                .eviction("drift", if blocked { "blocked" } else { "failed" });
            let attempts = state.with_memory(&uid, |m| {
                m.eviction_attempts += 1;
                m.eviction_attempts
            });
            let retry = backoff(attempts);
            events::on_pod(
                state,
                pod,
                Kind::Warning,
                "EvictionFailed",
                format!(
                    "eviction failed ({}); retrying in {}",
                    if blocked {
                        "a PodDisruptionBudget does not allow it now".to_string()
                    } else {
                        e.to_string()
                    },
                    duration::format(retry)
                ),
            );
            Ok(Some(retry))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
