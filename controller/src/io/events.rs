//! Kubernetes Events on pods, written as `events.k8s.io/v1` objects with a
//! fresh name each time (kube's Recorder folds repeats into a series and keeps
//! the first message, which would show a stale user or terminal).
//!
//! [`build`] is the one Event builder (the reconciles' [`Recorder`] and the
//! webhook's record writer both use it). The recorder sends off the reconcile
//! path: a slow event write never delays a PDB, and a failed one is counted,
//! not retried.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use sessionguard_api::CachedPod;
use sessionguard_core::printable::printable;

use crate::io::writer::Writer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

pub const CONTROLLER: &str = "sessionguard.io/controller";
/// The API server refuses longer notes.
const NOTE_MAX: usize = 1000;

pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    obj.object_ref(&())
}

/// An event about `regarding`, reported by replica `identity`.
pub fn build(
    regarding: ObjectReference,
    kind: Kind,
    reason: &str,
    note: String,
    identity: &str,
    now: Timestamp,
) -> Event {
    let base = regarding.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                &base[..floor_char_boundary(&base, 200)],
                now.as_nanosecond()
            )),
            namespace: Some(
                regarding
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_string()),
            ),
            ..Default::default()
        },
        action: Some(reason.to_string()),
        reason: Some(reason.to_string()),
        // Notes quote process names and argv, which their owners choose.
        note: Some(truncate(printable(&note, NOTE_MAX), NOTE_MAX)),
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
        reporting_instance: Some(truncate(identity.to_string(), 128)),
        ..Default::default()
    }
}

// === impl Recorder ===

/// Sends events through the writer (so only the leader writes them).
#[derive(Clone)]
pub struct Recorder {
    writer: Writer,
    identity: String,
}

impl Recorder {
    pub fn new(writer: Writer, identity: String) -> Self {
        Self { writer, identity }
    }

    /// Sends an event about `regarding` in the background.
    pub fn emit(&self, regarding: ObjectReference, kind: Kind, reason: &'static str, note: String) {
        let ev = build(
            regarding,
            kind,
            reason,
            note,
            &self.identity,
            Timestamp::now(),
        );
        tracing::info!(reason, note = ev.note.as_deref().unwrap_or(""), "event");
        // Standbys watch what the leader watches; the leader tells the story.
        if !self.writer.is_leader() {
            return;
        }
        let writer = self.writer.clone();
        tokio::spawn(async move {
            let ns = ev.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(writer.client().clone(), &ns);
            if let Err(e) = writer
                .write("create_event", api.create(&PostParams::default(), &ev))
                .await
            {
                tracing::warn!(error = %e, reason, "could not write event");
            }
        });
    }

    pub fn on_pod(&self, pod: &CachedPod, kind: Kind, reason: &'static str, note: String) {
        self.emit(object_ref(pod), kind, reason, note);
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    s.truncate(floor_char_boundary(&s, max));
    s
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut cut = max.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

/// Used in messages: `pod ns/name`.
pub fn pod_name(pod: &CachedPod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_notes_cut_on_a_character_boundary() {
        let regarding = ObjectReference {
            name: Some("é".repeat(150)),
            namespace: Some("ops".into()),
            ..Default::default()
        };
        let ev = build(
            regarding,
            Kind::Warning,
            "Test",
            "ü".repeat(600),
            "replica-1",
            "2026-11-24T01:00:00Z".parse().unwrap(),
        );
        let name = ev.metadata.name.unwrap();
        assert!(name.len() <= 200 + 1 + 16, "{}", name.len());
        assert_eq!(ev.note.as_deref().map(str::len), Some(1000));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.metadata.namespace.as_deref(), Some("ops"));
    }

    #[test]
    fn notes_show_escape_sequences_escaped() {
        let ev = build(
            ObjectReference::default(),
            Kind::Normal,
            "Test",
            "user 0 ran \u{1b}[2J\u{1b}]0;owned\u{7}".to_string(),
            "replica-1",
            "2026-11-24T01:00:00Z".parse().unwrap(),
        );
        let note = ev.note.unwrap();
        assert!(
            !note.contains('\u{1b}') && !note.contains('\u{7}'),
            "{note:?}"
        );
        assert_eq!(note, "user 0 ran \\u{1b}[2J\\u{1b}]0;owned\\u{7}");
    }
}
