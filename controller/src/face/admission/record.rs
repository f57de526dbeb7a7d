//! Writes the interaction records the webhook queued: the same record, label
//! and annotations an agent-seen login produces (`Interaction::record` and
//! `to_annotations` from the core), plus what only the API knows about the
//! latest API interaction (`last-container`, `last-command`, `last-groups`;
//! bounded in size), and an event.
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
//!
//! The first attempt folds into the pod as this replica's cache holds it
//! (every replica watches pods; the record's annotations are among the keys
//! the cache keeps) and patches conditional on that resourceVersion: no GET.
//! Only when the cache is behind (409) or has no such pod does a retry read
//! the pod from the API server. At 200 execs a second that is 200 reads a
//! second less on the API server the logins' writes wait for.
//!
//! The writer leaves `evict-at` and `eviction` to that reconcile: whether
//! drift eviction applies depends on the namespace's labels, and a standby
//! replica has no namespace cache (a GET per exec would put the API server on
//! the exec path). The record it reads back is bounded exactly as the
//! controller bounds it (`readback::read_back`: TTL by `--ttl`, times inside
//! [pod creation, now], an unreadable record restored), so both fold into the
//! same record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use serde_json::json;
use sessionguard_api::CachedPod;
use sessionguard_core::backoff::Backoff;
use sessionguard_core::interaction::{Interaction, rfc3339};
use sessionguard_core::keys;
use sessionguard_core::readback::{Bounds, read_back};

use crate::io::cache::Cache;

use super::interaction::Record;
use super::metrics::Metrics;
use super::queue::Receiver;
use crate::io::events::{self, Kind};
use crate::io::metrics::Metrics as WriteMetrics;
use crate::io::writer::timed;

const ATTEMPTS: u32 = 5;
/// Between attempts: 200ms, 400ms ... 3.2s; well within an exec's lifetime.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_millis(3200));

pub struct Writer {
    pub client: Client,
    pub ttl: Duration,
    pub write_timeout: Duration,
    pub identity: String,
    pub metrics: Metrics,
    /// `sessionguard_writes`: the record's API calls count with every other
    /// write. Not gated on the Lease (see the module comment).
    pub write_metrics: WriteMetrics,
    /// This replica's pods, for the first attempt; and `--namespaces`: a
    /// record elsewhere is not written (the webhook configurations do not
    /// send those requests; this holds if one comes).
    pub cache: Arc<Cache>,
}

/// Where the record workers deliver: the API server ([`Writer`]) in the
/// controller, a fake with a chosen latency in the bench.
pub trait Sink: Send + Sync + 'static {
    fn write_record(&self, r: Record) -> impl std::future::Future<Output = ()> + Send;
}

impl Sink for Writer {
    fn write_record(&self, r: Record) -> impl std::future::Future<Output = ()> + Send {
        self.write(r)
    }
}

enum Outcome {
    /// Written; the issues of the record read back (corrected by this write).
    Recorded(Box<CachedPod>, Interaction, Vec<String>),
    Gone,
}

enum Failure {
    Conflict,
    NotFound,
    Other(String),
}

/// Starts `workers` tasks that take records off the queue and write them.
pub fn spawn_workers<S: Sink>(sink: Arc<S>, rx: Receiver, workers: usize, metrics: Metrics) {
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..workers {
        let rx = rx.clone();
        let sink = sink.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(record) = next else { break };
                metrics.queue_depth.dec();
                sink.write_record(record).await;
            }
        });
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked with `…`
/// when cut, so one huge command line cannot fill the pod's annotations.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    events::truncate(s.to_string(), max.saturating_sub('…'.len_utf8())) + "…"
}

/// The command as one line a shell would split back into the same words:
/// words with anything but plain characters are single-quoted; control
/// characters are escaped so the annotation stays one readable line.
pub fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            let mut w = String::with_capacity(word.len());
            for c in word.chars() {
                if c.is_control() {
                    w.extend(c.escape_default());
                } else {
                    w.push(c);
                }
            }
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_alphanumeric() || "-_./=:,@%+\\".contains(c));
            if plain {
                w
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The annotations one record writes: the core record, plus the details of
/// this (the latest) API interaction. `None` removes a detail this
/// interaction does not have (attach has no command), so the three always
/// describe the same request. No `evict-at` (see the module docs).
pub fn annotations(rec: &Interaction, r: &Record) -> BTreeMap<String, Option<String>> {
    let mut m: BTreeMap<String, Option<String>> = rec
        .to_annotations()
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    let max = keys::LAST_COMMAND_MAX;
    m.insert(
        keys::LAST_CONTAINER.into(),
        r.container.as_deref().map(|c| bounded(c, max)),
    );
    m.insert(
        keys::LAST_COMMAND.into(),
        (!r.command.is_empty()).then(|| bounded(&shell_join(&r.command), max)),
    );
    m.insert(
        keys::LAST_GROUPS.into(),
        (!r.groups.is_empty()).then(|| bounded(&r.groups.join(","), max)),
    );
    m
}

impl Writer {
    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T, Failure> {
        timed(&self.write_metrics, op, self.write_timeout, fut)
            .await
            .map_err(|e| match e.status() {
                Some(409) => Failure::Conflict,
                Some(404) => Failure::NotFound,
                _ => Failure::Other(e.to_string()),
            })
    }

    /// Writes one record, retrying conflicts and errors a few times.
    pub async fn write(&self, r: Record) {
        let pod_name = format!("{}/{}", r.namespace, r.pod);
        if !self.cache.namespaces().contains(&r.namespace) {
            self.metrics.record("out_of_scope");
            tracing::debug!(pod = %pod_name, "not recorded: outside --namespaces");
            return;
        }
        let mut from_cache = true;
        for attempt in 0..ATTEMPTS {
            match self.try_write(&r, from_cache).await {
                Ok(Outcome::Recorded(pod, rec, issues)) => {
                    if issues.is_empty() {
                        self.metrics.record("recorded");
                    } else {
                        self.metrics.record("corrected");
                        tracing::warn!(pod = %pod_name, error = %issues.join("; "), "interaction record read back corrected");
                    }
                    tracing::info!(pod = %pod_name, user = %r.user, via = r.via.reason(), "interaction recorded");
                    self.event(&pod, &r, Some(&rec)).await;
                    return;
                }
                Ok(Outcome::Gone) => {
                    self.metrics.record("pod_gone");
                    return;
                }
                // The pod changed since the copy we folded into: read it.
                Err(Failure::Conflict) => from_cache = false,
                Err(Failure::NotFound) => {
                    self.metrics.record("pod_gone");
                    return;
                }
                Err(Failure::Other(e)) => {
                    tracing::warn!(pod = %pod_name, error = %e, attempt, "writing interaction record failed");
                    tokio::time::sleep(RETRY.delay(attempt + 1)).await;
                }
            }
        }
        self.metrics.record("failed");
        tracing::warn!(pod = %pod_name, user = %r.user, "interaction record lost after {ATTEMPTS} attempts");
    }

    /// One attempt: fold into the cached pod (`from_cache`, when the cache
    /// has it and it is not going) or into a fresh read, and patch
    /// conditionally on that copy's resourceVersion.
    async fn try_write(&self, r: &Record, from_cache: bool) -> Result<Outcome, Failure> {
        let api: Api<CachedPod> = Api::namespaced(self.client.clone(), &r.namespace);
        let cached = from_cache
            .then(|| {
                let key = ObjectRef::<CachedPod>::new(&r.pod).within(&r.namespace);
                self.cache.stores.pods.get(&key)
            })
            .flatten()
            .filter(|p| p.metadata.deletion_timestamp.is_none());
        let pod = match cached {
            Some(p) => p,
            None => match self.timed("get_pod", api.get_opt(&r.pod)).await? {
                Some(p) => Arc::new(p),
                None => return Ok(Outcome::Gone),
            },
        };
        let bounds = Bounds {
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            now: Timestamp::now(),
            max_ttl: self.ttl,
        };
        let back = read_back(pod.annotations(), &bounds);
        let at = bounds.clamp(r.at);
        let rec = Interaction::record(back.record.as_ref(), at, &r.user, self.ttl);
        let annotations = annotations(&rec, r);
        let patch = json!({
            "metadata": {
                // Optimistic concurrency: a concurrent writer makes this 409.
                "resourceVersion": pod.resource_version(),
                "labels": { keys::INTERACTED: "true" },
                "annotations": annotations,
            }
        });
        match self
            .timed(
                "record_interaction",
                api.patch(&r.pod, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await
        {
            Ok(pod) => Ok(Outcome::Recorded(Box::new(pod), rec, back.issues)),
            Err(Failure::NotFound) => Ok(Outcome::Gone),
            Err(e) => Err(e),
        }
    }

    async fn event(&self, pod: &CachedPod, r: &Record, rec: Option<&Interaction>) {
        let ns = r.namespace.clone();
        let ev = events::build(
            events::object_ref(pod),
            Kind::Normal,
            r.via.reason(),
            note(r, rec),
            &self.identity,
            Timestamp::now(),
        );
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = self
            .timed("create_event", api.create(&PostParams::default(), &ev))
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

/// The event's text: who, how, where, what, and since when. Not when the pod
/// is evicted: that is the controller's to say (`EvictionScheduled`), only
/// where eviction applies.
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
        format!(": {}", shell_join(&r.command))
    };
    let mut s = format!(
        "user {}{groups} used {}{container}{command}",
        r.user,
        r.via.verb()
    );
    if let Some(rec) = rec {
        s.push_str(&format!(
            "; interacted since {} (first by {})",
            rfc3339(rec.first),
            rec.interactor
        ));
    }
    events::truncate(s, 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::admission::interaction::Via;

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
            command: vec!["sh".into(), "-c".into(), "id -u".into()],
        };
        let rec = Interaction::record(None, r.at, &r.user, Duration::from_secs(600));
        // The command reads as the annotation has it: quoted as a shell would.
        assert_eq!(
            note(&r, Some(&rec)),
            "user alice@example.com (groups devs) used kubectl exec in container app: sh -c 'id -u'; \
             interacted since 2026-11-24T01:00:00Z (first by alice@example.com)"
        );
        assert!(
            note(&r, Some(&rec))
                .contains(&annotations(&rec, &r)[keys::LAST_COMMAND].clone().unwrap())
        );
        // Bounded like every event note, never cut inside a character.
        let long = Record {
            command: vec!["é".repeat(2_000)],
            ..r.clone()
        };
        let n = note(&long, None);
        assert!(n.len() <= 1000 && n.len() > 990, "{}", n.len());
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

    fn exec(command: &[&str], groups: &[&str]) -> Record {
        Record {
            namespace: "ns".into(),
            pod: "web-0".into(),
            at: "2026-11-24T01:00:00.9Z".parse().unwrap(),
            user: "oidc:https://idp#alice".into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            via: Via::Exec,
            container: Some("app".into()),
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn annotations_name_who_how_and_what_of_the_last_api_interaction() {
        let r = exec(
            &["sh", "-c", "echo 'hi there'"],
            &["devs", "system:authenticated"],
        );
        let rec = Interaction::record(None, r.at, &r.user, Duration::from_secs(600));
        let a = annotations(&rec, &r);
        let get = |k: &str| a.get(k).cloned().flatten();
        assert!(
            !a.contains_key(keys::EVICT_AT) && !a.contains_key(keys::EVICTION),
            "whether eviction applies is the controller's reconcile to write"
        );
        assert_eq!(
            get(keys::LAST_INTERACTOR).as_deref(),
            Some("oidc:https://idp#alice")
        );
        assert_eq!(get(keys::LAST_CONTAINER).as_deref(), Some("app"));
        assert_eq!(
            get(keys::LAST_COMMAND).as_deref(),
            Some(r#"sh -c 'echo '\''hi there'\'''"#)
        );
        assert_eq!(
            get(keys::LAST_GROUPS).as_deref(),
            Some("devs,system:authenticated")
        );
        // Whole seconds, truncated: the published time is never after the real one.
        assert_eq!(
            get(keys::FIRST_INTERACTION).as_deref(),
            Some("2026-11-24T01:00:00Z")
        );

        // attach: no command, so the previous exec's command is removed, not kept.
        let attach = Record {
            via: Via::Attach,
            command: vec![],
            groups: vec![],
            container: None,
            ..r
        };
        let a = annotations(&rec, &attach);
        for k in [keys::LAST_COMMAND, keys::LAST_GROUPS, keys::LAST_CONTAINER] {
            assert_eq!(a.get(k), Some(&None), "{k} must be removed");
        }
    }

    #[test]
    fn free_text_is_bounded() {
        let huge = "x".repeat(10_000);
        let groups = "g".repeat(5_000);
        let r = exec(&["sh", "-c", &huge], &[&groups]);
        let rec = Interaction::record(None, r.at, &r.user, Duration::from_secs(600));
        let a = annotations(&rec, &r);
        for k in [keys::LAST_COMMAND, keys::LAST_GROUPS] {
            let v = a[k].clone().unwrap();
            assert!(
                v.len() <= keys::LAST_COMMAND_MAX && v.ends_with('…'),
                "{k}: {}",
                v.len()
            );
        }
        // Never cut inside a character.
        assert_eq!(bounded(&"é".repeat(400), 9), "ééé…");
        assert_eq!(shell_join(&["a\nb".into(), "".into()]), r"a\nb ''");
    }
}
