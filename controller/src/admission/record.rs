//! Writes the interaction records the webhook queued: the same record, label
//! and annotations an agent-seen login produces (`Interaction::record` and
//! `to_annotations` from the core), plus an event.
//!
//! Every replica writes the records of the requests it admitted, leader or
//! not: the Service spreads admission over all replicas, and a standby that
//! dropped or forwarded its share would lose records whenever the leader is
//! down. That is safe without the Lease because the write is a fold that
//! commutes (first = min, last = max, interactor = first's, TTL fixed at the
//! first interaction) and each write carries the resourceVersion it read, so
//! two replicas (or a replica and the leader's reconcile) can never lose each
//! other's update: the loser of a race gets 409, re-reads and folds again.
//! The leader then sees the pod change through its watch and schedules the
//! eviction from the annotations, exactly as for a login.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sessionguard_core::interaction::{Interaction, rfc3339};
use sessionguard_core::keys;

use super::metrics::Metrics;
use super::queue::Receiver;
use super::review::Record;
use crate::events;

const ATTEMPTS: u32 = 5;

pub struct Writer {
    pub client: Client,
    pub ttl: Duration,
    pub write_timeout: Duration,
    pub identity: String,
    pub metrics: Metrics,
}

enum Outcome {
    Recorded(Box<Pod>, Interaction),
    /// The record on the pod is unreadable: left alone (the controller
    /// reports it), the event still says who got in.
    Unreadable(Box<Pod>, String),
    Gone,
}

enum Failure {
    Conflict,
    NotFound,
    Other(String),
}

pub fn spawn_workers(writer: Arc<Writer>, rx: Receiver, workers: usize) {
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..workers {
        let rx = rx.clone();
        let writer = writer.clone();
        tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(record) = next else { break };
                writer.metrics.queue_depth.dec();
                writer.write(record).await;
            }
        });
    }
}

impl Writer {
    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.write_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Err(Failure::Conflict),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => Err(Failure::NotFound),
            Ok(Err(e)) => Err(Failure::Other(e.to_string())),
            Err(_) => Err(Failure::Other(format!(
                "timed out after {:?}",
                self.write_timeout
            ))),
        }
    }

    /// Writes one record, retrying conflicts and errors a few times.
    pub async fn write(&self, r: Record) {
        let pod_name = format!("{}/{}", r.namespace, r.pod);
        for attempt in 0..ATTEMPTS {
            match self.try_write(&r).await {
                Ok(Outcome::Recorded(pod, rec)) => {
                    self.metrics.record("recorded");
                    tracing::info!(pod = %pod_name, user = %r.user, via = r.via.reason(), "interaction recorded");
                    self.event(&pod, &r, Some(&rec)).await;
                    return;
                }
                Ok(Outcome::Unreadable(pod, why)) => {
                    self.metrics.record("unreadable");
                    tracing::warn!(pod = %pod_name, error = %why, "interaction record unreadable; not updating it");
                    self.event(&pod, &r, None).await;
                    return;
                }
                Ok(Outcome::Gone) => {
                    self.metrics.record("pod_gone");
                    return;
                }
                Err(Failure::Conflict) => continue,
                Err(Failure::NotFound) => {
                    self.metrics.record("pod_gone");
                    return;
                }
                Err(Failure::Other(e)) => {
                    tracing::warn!(pod = %pod_name, error = %e, attempt, "writing interaction record failed");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        self.metrics.record("failed");
        tracing::warn!(pod = %pod_name, user = %r.user, "interaction record lost after {ATTEMPTS} attempts");
    }

    async fn try_write(&self, r: &Record) -> Result<Outcome, Failure> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &r.namespace);
        let Some(pod) = self.timed(api.get_opt(&r.pod)).await? else {
            return Ok(Outcome::Gone);
        };
        let existing = match Interaction::from_annotations(pod.annotations()) {
            Ok(e) => e,
            Err(e) => return Ok(Outcome::Unreadable(Box::new(pod), e.to_string())),
        };
        let rec = Interaction::record(existing.as_ref(), r.at, &r.user, self.ttl);
        let mut annotations = rec.to_annotations();
        if let Some(c) = &r.container {
            annotations.insert(keys::LAST_CONTAINER.into(), c.clone());
        }
        let patch = json!({
            "metadata": {
                // Optimistic concurrency: a concurrent writer makes this 409.
                "resourceVersion": pod.resource_version(),
                "labels": { keys::INTERACTED: "true" },
                "annotations": annotations,
            }
        });
        match self
            .timed(api.patch(&r.pod, &PatchParams::default(), &Patch::Merge(&patch)))
            .await
        {
            Ok(pod) => Ok(Outcome::Recorded(Box::new(pod), rec)),
            Err(Failure::NotFound) => Ok(Outcome::Gone),
            Err(e) => Err(e),
        }
    }

    async fn event(&self, pod: &Pod, r: &Record, rec: Option<&Interaction>) {
        let ns = r.namespace.clone();
        let now = Timestamp::now();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    &r.pod[..r.pod.len().min(200)],
                    now.as_nanosecond()
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            action: Some(r.via.reason().to_string()),
            reason: Some(r.via.reason().to_string()),
            note: Some(note(r, rec)),
            type_: Some("Normal".into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(events::object_ref(pod)),
            reporting_controller: Some(events::CONTROLLER.to_string()),
            reporting_instance: Some(self.identity.chars().take(128).collect()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = self
            .timed(api.create(&PostParams::default(), &ev))
            .await
            .map_err(|f| match f {
                Failure::Conflict => "conflict".to_string(),
                Failure::NotFound => "namespace not found".to_string(),
                Failure::Other(e) => e,
            })
        {
            tracing::warn!(error = %e, "could not write interaction event");
        }
    }
}

/// The event's text: who, how, where, what, and what happens next.
pub fn note(r: &Record, rec: Option<&Interaction>) -> String {
    let groups = if r.groups.is_empty() {
        String::new()
    } else {
        format!(" (groups {})", r.groups.join(", "))
    };
    let container = r
        .container
        .as_deref()
        .map(|c| format!(" in container {c}"))
        .unwrap_or_default();
    let command = if r.command.is_empty() {
        String::new()
    } else {
        format!(": {}", r.command.join(" "))
    };
    let mut s = format!(
        "user {}{groups} used {}{container}{command}",
        r.user,
        r.via.verb()
    );
    if let Some(rec) = rec {
        s.push_str(&format!(
            "; interacted since {} (first by {}), eviction time {}",
            rfc3339(rec.first),
            rec.interactor,
            rfc3339(rec.evict_at())
        ));
    }
    if s.len() > 1000 {
        let mut cut = 1000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::Via;

    #[test]
    fn notes_read_like_prose() {
        let r = Record {
            namespace: "ns".into(),
            pod: "web-0".into(),
            at: "2026-11-24T01:00:00Z".parse().unwrap(),
            user: "alice@example.com".into(),
            groups: vec!["devs".into()],
            via: Via::Exec,
            container: Some("app".into()),
            command: vec!["sh".into(), "-c".into(), "id".into()],
        };
        let rec = Interaction::record(None, r.at, &r.user, Duration::from_secs(600));
        assert_eq!(
            note(&r, Some(&rec)),
            "user alice@example.com (groups devs) used kubectl exec in container app: sh -c id; \
             interacted since 2026-11-24T01:00:00Z (first by alice@example.com), eviction time 2026-11-24T01:10:00Z"
        );
        let attach = Record {
            via: Via::Attach,
            command: vec![],
            groups: vec![],
            ..r
        };
        assert_eq!(
            note(&attach, None),
            "user alice@example.com used kubectl attach in container app"
        );
    }
}
