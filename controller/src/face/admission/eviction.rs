//! `/validate/eviction` (CREATE pods/eviction): while sessionguard protects a
//! pod, its eviction is refused with 429 and a message naming the logins
//! (`core::eviction`), whether or not the workload has a PDB of its own; and
//! each refusal is recorded as an `EvictionBlocked` event on the pod naming
//! who asked, and remembered for the `sessionguard_drain_blocked` gauge
//! ([`crate::face::blocked`]). After logout the webhook admits and the workload's own PDB (if
//! any) decides, as if we were never there.
//!
//! Answered from this replica's warm cache (every replica watches), without
//! an API call. If the webhook is down (failurePolicy Ignore), our PDB still
//! refuses the eviction: with the PDB's 429, or 500 where a second PDB
//! selects the pod. Protection holds either way; only the message is worse.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use sessionguard_api::CachedPod;
use sessionguard_core::drain::{Refusal, blocked_note, holder};
use sessionguard_core::eviction::refusal;
use sessionguard_core::keys;
use tokio::sync::mpsc;

use crate::face::blocked::BlockedDrains;
use crate::io::cache::Cache;
use crate::io::events::{self, Kind};
use crate::io::metrics::Metrics as WriteMetrics;
use crate::io::report_index::Liveness;
use crate::io::writer::timed;

pub const EVICTION_PATH: &str = "/validate/eviction";
pub const REASON: &str = "EvictionBlocked";
/// A drain retries every 5 s: repeats within this window extend one series.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(30);
/// Refusals waiting for their event; beyond this they are dropped (the
/// refusal itself never waits on an event write).
const QUEUE: usize = 256;

/// What the eviction webhook reads and where its events go.
pub struct Evictions {
    pub cache: Arc<Cache>,
    /// Refusals for the drain-blocked gauge.
    pub refusals: Arc<BlockedDrains>,
    blocked: mpsc::Sender<Blocked>,
}

/// One refused eviction, for the event writer.
#[derive(Debug)]
pub struct Blocked {
    pub pod: Arc<CachedPod>,
    /// The authenticated user who asked (a drain's identity, an autoscaler).
    pub by: String,
    pub message: String,
}

impl Evictions {
    pub fn new(cache: Arc<Cache>, refusals: Arc<BlockedDrains>) -> (Self, mpsc::Receiver<Blocked>) {
        let (blocked, rx) = mpsc::channel(QUEUE);
        (
            Self {
                cache,
                refusals,
                blocked,
            },
            rx,
        )
    }
}

/// The webhook's answer; `outcome` is for the request counter.
pub fn review(
    ev: &Evictions,
    req: &AdmissionRequest<DynamicObject>,
    now: Timestamp,
) -> (AdmissionResponse, &'static str) {
    let resp = AdmissionResponse::from(req);
    let Some(ns) = req.namespace.as_deref() else {
        return (resp, "allowed");
    };
    let Some(pod) = ev
        .cache
        .stores
        .pods
        .get(&ObjectRef::new(&req.name).within(ns))
    else {
        return (resp, "allowed");
    };
    if ev.cache.our_pdb(&pod).is_none() {
        return (resp, "allowed");
    }
    let sessions = match ev.cache.liveness(&pod, now) {
        Liveness::Fresh { sessions, .. } => sessions,
        _ => Vec::new(),
    };
    let message = refusal(&format!("{ns}/{}", req.name), &sessions, now);
    let mut resp = resp.deny(&message);
    resp.result.code = 429;
    resp.result.reason = "TooManyRequests".into();
    if req.dry_run {
        return (resp, "dry_run");
    }
    let by = req.user_info.username.clone().unwrap_or_default();
    let node = pod.node_name.clone().unwrap_or_default();
    let user = holder(
        pod.annotations()
            .get(keys::LAST_INTERACTOR)
            .map(String::as_str),
        &sessions,
    );
    let held = Refusal {
        uid: pod.uid().unwrap_or_default(),
        node,
        user,
        requested_by: by.clone(),
        first: now,
        last: now,
    };
    ev.refusals.record(ns, &req.name, held, now);
    if ev.blocked.try_send(Blocked { pod, by, message }).is_err() {
        tracing::warn!("eviction refused; its event was dropped (queue full)");
    }
    (resp, "refused")
}

// === impl the event writer ===

/// One event series: the Event object and how often it happened.
struct Series {
    name: String,
    count: i32,
    last: Timestamp,
}

/// Writes an `EvictionBlocked` event per refusal, folding repeats of the same
/// requester on the same pod into one series (events.k8s.io `series`), so a
/// drain that retries for an hour leaves one event, not 700. Series are per
/// replica: with several replicas behind the Service there may be one each.
pub fn spawn_events(
    client: Client,
    mut rx: mpsc::Receiver<Blocked>,
    identity: String,
    timeout: Duration,
    metrics: WriteMetrics,
) {
    tokio::spawn(async move {
        let mut series: HashMap<(String, String), Series> = HashMap::new();
        while let Some(b) = rx.recv().await {
            let now = Timestamp::now();
            series.retain(|_, s| now.duration_since(s.last) < SERIES_WINDOW);
            let ns = b.pod.namespace().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(client.clone(), &ns);
            let key = (b.pod.uid().unwrap_or_default(), b.by.clone());
            if let Some(s) = series.get_mut(&key) {
                s.count += 1;
                s.last = now;
                let patch = serde_json::json!({
                    "series": EventSeries { count: s.count, last_observed_time: MicroTime(now) },
                });
                let (pp, body) = (PatchParams::default(), Patch::Merge(&patch));
                let write = api.patch(&s.name, &pp, &body);
                match timed(&metrics, "patch_event", timeout, write).await {
                    Ok(_) => continue,
                    // Gone (expired, deleted): start a new series below.
                    Err(e) => tracing::debug!(error = %e, "event series lost; starting a new one"),
                }
            }
            let node = b.pod.node_name.clone().unwrap_or_default();
            let note = blocked_note(&b.by, &node, &b.message);
            let ev = events::build(
                events::object_ref(&*b.pod),
                Kind::Warning,
                REASON,
                note,
                &identity,
                now,
            );
            let name = ev.metadata.name.clone().unwrap_or_default();
            match timed(
                &metrics,
                "create_event",
                timeout,
                api.create(&PostParams::default(), &ev),
            )
            .await
            {
                Ok(_) => {
                    series.insert(
                        key,
                        Series {
                            name,
                            count: 1,
                            last: now,
                        },
                    );
                }
                Err(e) => tracing::warn!(error = %e, "could not write the EvictionBlocked event"),
            }
        }
    });
}
