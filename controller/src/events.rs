//! Kubernetes Events on pods, written as `events.k8s.io/v1` objects with a
//! fresh name each time (kube's Recorder folds repeats into a series and keeps
//! the first message, which would show a stale user or terminal).
//!
//! Events are sent off the reconcile path: a slow event write never delays a
//! PDB, and a failed one is counted, not retried.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use crate::state::State;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

pub const CONTROLLER: &str = "sessionguard.io/controller";

pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

/// Sends an event about `regarding` in the background.
pub fn emit(
    state: &Arc<State>,
    regarding: ObjectReference,
    kind: Kind,
    reason: &'static str,
    note: String,
) {
    let ns = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let now = Timestamp::now();
    let base = regarding.name.clone().unwrap_or_default();
    let name = format!("{}.{:x}", &base[..base.len().min(200)], now.as_nanosecond());
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        action: Some(reason.to_string()),
        reason: Some(reason.to_string()),
        note: Some(truncate(note, 1000)),
        type_: Some(
            match kind {
                Kind::Normal => "Normal",
                Kind::Warning => "Warning",
            }
            .to_string(),
        ),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding),
        reporting_controller: Some(CONTROLLER.to_string()),
        reporting_instance: Some(truncate(state.identity.clone(), 128)),
        ..Default::default()
    };
    tracing::info!(reason, note = ev.note.as_deref().unwrap_or(""), "event");
    let state = state.clone();
    tokio::spawn(async move {
        let api: Api<Event> = Api::namespaced(state.client.clone(), &ns);
        if let Err(e) = state
            .write("create_event", api.create(&PostParams::default(), &ev))
            .await
        {
            tracing::warn!(error = %e, reason, "could not write event");
        }
    });
}

pub fn on_pod(state: &Arc<State>, pod: &Pod, kind: Kind, reason: &'static str, note: String) {
    emit(state, object_ref(pod), kind, reason, note);
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Used in messages: `pod ns/name`.
pub fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}
