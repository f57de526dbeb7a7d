//! Drift eviction (kube-exec-controller's job): an interacted pod is evicted
//! through the eviction API once its evict-at passes, so the workload
//! recreates it from its declared spec. Opt-in with `--evict-interacted`.
//!
//! The time comes from the pod's annotations, never from memory, so a
//! restarted or failed-over controller evicts at the same moment.

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use sessionguard_api::CachedPod;
use sessionguard_core::backoff::Backoff;
use sessionguard_core::interaction::{Interaction, rfc3339};
use sessionguard_core::protection::OptIn;
use sessionguard_core::readback::Eviction;
use sessionguard_core::{Session, duration, keys};

use super::{Context, evict_pod};
use crate::error::Result;
use crate::io::events::Kind;

const POSTPONE_RECHECK: Duration = Duration::from_secs(10);
/// After failed evictions: 2s, 4s, ... capped at 5m.
const BACKOFF: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));

/// Drift eviction's flags.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Evict interacted pods once their evict-at passes.
    pub enabled: bool,
    /// Namespaces whose pods are never drift-evicted.
    pub namespace_allowlist: Vec<String>,
}

impl Settings {
    /// Is drift eviction on for a pod in `ns`, whose namespace carries
    /// `ns_labels`?
    pub fn applies(
        &self,
        ns: &str,
        ns_labels: Option<&sessionguard_core::protection::Map>,
    ) -> bool {
        self.eviction(ns, ns_labels) == Eviction::On
    }

    /// Whether drift eviction applies in `ns`, and if not, why: the reason
    /// the pod's `sessionguard.io/eviction` annotation and the plugin show.
    pub fn eviction(
        &self,
        ns: &str,
        ns_labels: Option<&sessionguard_core::protection::Map>,
    ) -> Eviction<'static> {
        let exempt = ns_labels
            .is_some_and(|l| keys::is_true(l.get(keys::EVICTION_EXEMPT).map(String::as_str)));
        if !self.enabled {
            Eviction::Off("--evict-interacted is false")
        } else if self.namespace_allowlist.iter().any(|a| a.trim() == ns) {
            Eviction::Off("namespace allowlisted")
        } else if exempt {
            Eviction::Off("namespace label sessionguard.io/eviction-exempt")
        } else {
            Eviction::On
        }
    }
}

/// Whether drift eviction applies to this pod (its namespace).
pub fn eviction_for(ctx: &Context, pod: &CachedPod) -> Eviction<'static> {
    let ns = pod.namespace().unwrap_or_default();
    ctx.settings
        .evict
        .eviction(&ns, ctx.cache.namespace_labels(&ns).as_ref())
}

/// Returns when to look again, if eviction is pending.
pub async fn step(
    ctx: &Context,
    pod: &CachedPod,
    logins: &[Session],
    opt: &OptIn,
    record: Option<&Interaction>,
    now: Timestamp,
) -> Result<Option<Duration>> {
    let Some(record) = record else {
        return Ok(None);
    };
    if eviction_for(ctx, pod) != Eviction::On {
        return Ok(None);
    }
    let evict_at = record.evict_at(ctx.settings.plan.max_extension);
    if now < evict_at {
        announce_once(ctx, pod, record, evict_at, now);
        let wait = Duration::try_from(evict_at.duration_since(now)).unwrap_or_default();
        return Ok(Some(wait + Duration::from_millis(20)));
    }
    if !logins.is_empty() && opt.wants_protection() {
        postpone(ctx, pod, logins.len(), evict_at, now);
        return Ok(Some(POSTPONE_RECHECK));
    }
    evict(ctx, pod, record, evict_at, now).await
}

/// EvictionScheduled, once per pod (per controller run).
fn announce_once(
    ctx: &Context,
    pod: &CachedPod,
    record: &Interaction,
    evict_at: Timestamp,
    now: Timestamp,
) {
    let uid = pod.uid().unwrap_or_default();
    let first = ctx.memory.with_pod(&uid, |m| {
        !std::mem::replace(&mut m.scheduled_event_sent, true)
    });
    if !first {
        return;
    }
    ctx.events.on_pod(
        pod,
        Kind::Warning,
        "EvictionScheduled",
        format!(
            "pod was interacted with by {} at {}; it will be evicted at {} (in about {}) to undo drift. Extend with `kubectl sessions extend`.",
            record.interactor,
            rfc3339(record.first),
            rfc3339(evict_at),
            duration::format(Duration::try_from(evict_at.duration_since(now)).unwrap_or_default())
        ),
    );
}

/// Due, but someone is logged in to this protected pod: wait for the logout.
fn postpone(ctx: &Context, pod: &CachedPod, logins: usize, evict_at: Timestamp, now: Timestamp) {
    let uid = pod.uid().unwrap_or_default();
    let first = ctx
        .memory
        .with_pod(&uid, |m| m.postponed_at.replace(now).is_none());
    if !first {
        return;
    }
    ctx.metrics.eviction("drift", "postponed");
    ctx.events.on_pod(
        pod,
        Kind::Normal,
        "EvictionPostponed",
        format!(
            "eviction was due at {} but {logins} login session(s) are live on this protected pod; it is evicted after the last one ends",
            rfc3339(evict_at),
        ),
    );
}

async fn evict(
    ctx: &Context,
    pod: &CachedPod,
    record: &Interaction,
    evict_at: Timestamp,
    now: Timestamp,
) -> Result<Option<Duration>> {
    match evict_pod(ctx, pod).await {
        Ok(()) => {
            ctx.metrics.eviction("drift", "evicted");
            ctx.events.on_pod(
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
            ctx.metrics
                .eviction("drift", if blocked { "blocked" } else { "failed" });
            let attempts = ctx.memory.with_pod(&pod.uid().unwrap_or_default(), |m| {
                m.eviction_attempts += 1;
                m.eviction_attempts
            });
            let retry = BACKOFF.delay(attempts);
            let why = if blocked {
                "a PodDisruptionBudget does not allow it now".to_string()
            } else {
                e.to_string()
            };
            ctx.events.on_pod(
                pod,
                Kind::Warning,
                "EvictionFailed",
                format!(
                    "eviction failed ({why}); retrying in {}",
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
        assert_eq!(BACKOFF.delay(1), Duration::from_secs(2));
        assert_eq!(BACKOFF.delay(3), Duration::from_secs(8));
        assert_eq!(BACKOFF.delay(30), Duration::from_secs(300));
    }

    #[test]
    fn the_allowlist_and_the_exempt_label_switch_eviction_off() {
        let s = Settings {
            enabled: true,
            namespace_allowlist: vec!["kube-system".into(), " ops".into()],
        };
        assert!(s.applies("default", None));
        assert!(!s.applies("ops", None), "allowlisted (entries are trimmed)");
        let exempt = sessionguard_core::protection::Map::from([(
            keys::EVICTION_EXEMPT.to_string(),
            "true".to_string(),
        )]);
        assert!(!s.applies("default", Some(&exempt)));
        assert!(
            !Settings::default().applies("default", None),
            "off unless enabled"
        );
        // Each says why, first the flag.
        assert_eq!(
            Settings::default().eviction("ops", Some(&exempt)),
            Eviction::Off("--evict-interacted is false")
        );
        assert_eq!(
            s.eviction("ops", Some(&exempt)),
            Eviction::Off("namespace allowlisted")
        );
        assert_eq!(
            s.eviction("default", Some(&exempt)),
            Eviction::Off("namespace label sessionguard.io/eviction-exempt")
        );
    }
}
