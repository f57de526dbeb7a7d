//! Pod reconcile: protection (PDB + autoscaler annotations), the interaction
//! record, session events, and (through [`super::evict`]) drift eviction.
//!
//! Gather (cache) → decide (`sessionguard_core::pod_plan`) → write (writer),
//! in the order that keeps a drain from slipping between two writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use sessionguard_api::CachedPod;
use sessionguard_core::idle::counts_for_protection;
use sessionguard_core::interaction::{Interaction, login_user, rfc3339};
use sessionguard_core::pod_plan::{self, Expiring, Inputs, Plan, PodFacts, Release};
use sessionguard_core::protection::OptIn;
use sessionguard_core::{Session, SessionKey, duration, keys};

use super::{Context, evict, pdb};
use crate::error::{Error, Result};
use crate::io::events::{self, Kind};
use crate::io::metrics::KindLabels;
use crate::io::report_index::Liveness;

/// How often a pod is looked at even if nothing changes (timers are also
/// re-derived from annotations, so this is only a safety net).
const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(pod: Arc<CachedPod>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.timer("pod");
    ctx.cache.ready().await;
    if pod.metadata.deletion_timestamp.is_some() {
        // The pod is going; the garbage collector removes our PDB with it.
        return Ok(Action::await_change());
    }
    if !ctx.cache.in_scope(&pod) {
        // Not a namespace the operator chose: nothing is written here (the
        // chart's policies would refuse it), whatever reports or wakes it.
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let mut seen = Seen::gather(&ctx, &pod, now);
    // Before the login is remembered: the first look after a restart is
    // recognised by an empty memory.
    if seen.silent_since.is_none() {
        session_events(&ctx, &pod, &seen.logins);
    }
    seen.remember_login(&ctx, &pod, now);
    let uid = pod.uid().unwrap_or_default();
    let namespace_cap = ctx
        .cache
        .namespace_annotation(&pod.namespace().unwrap_or_default(), keys::MAX_PROTECTION);
    let p = pod_plan::plan(&Inputs {
        pod: PodFacts {
            uid: &uid,
            labels: pod.labels(),
            annotations: pod.annotations(),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        },
        logins: &seen.logins,
        node_offset: seen.node_offset,
        silent_since: seen.silent_since,
        stale_at: seen.stale_at,
        opt: seen.opt,
        has_pdb: seen.pdb.is_some(),
        last_login: seen.last_login,
        now,
        settings: &ctx.settings.plan,
        eviction: evict::eviction_for(&ctx, &pod),
        namespace_cap: namespace_cap.as_deref(),
    });
    if let Some(issue) = &p.cap_issue {
        ctx.metrics
            .report_errors
            .get_or_create(&KindLabels {
                kind: "bad_namespace_cap",
            })
            .inc();
        tracing::warn!(pod = %events::pod_name(&pod), "{issue}");
    }
    if let Some(err) = &p.interaction_error {
        ctx.metrics
            .report_errors
            .get_or_create(&KindLabels {
                kind: "bad_interaction_record",
            })
            .inc();
        tracing::warn!(pod = %events::pod_name(&pod), error = %err, "interaction record corrected (unreadable: restored; out of bounds: capped/clamped) or its extension ignored/capped");
    }
    write_protection(&ctx, &pod, &seen, &p).await?;
    expiring_event(&ctx, &pod, &seen.logins, p.expiring.as_ref());
    if let Some(r) = &p.extended {
        extended_event(&ctx, &pod, r);
    }
    let evict_requeue = evict::step(
        &ctx,
        &pod,
        &seen.logins,
        &seen.opt,
        p.interaction.as_ref(),
        now,
    )
    .await?;

    // A cordoned node's count of protected pods may have changed.
    if let Some(node) = pod.node_name.clone() {
        let _ = ctx.nodes.send(node);
    }
    if let Some(sts) = ctx.cache.owner_statefulset(&pod) {
        let _ = ctx.statefulsets.send(ObjectRef::from_obj(&*sts));
    }
    let next = [p.requeue, evict_requeue, Some(RESYNC)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(RESYNC);
    Ok(Action::requeue(next))
}

/// What the cache and memory say about a pod.
struct Seen {
    /// Live logins from a fresh report (consoles removed).
    logins: Vec<Session>,
    /// Their report's node-clock offset.
    node_offset: SignedDuration,
    silent_since: Option<Timestamp>,
    stale_at: Option<Timestamp>,
    pdb: Option<Arc<PodDisruptionBudget>>,
    /// Set by [`Seen::remember_login`].
    last_login: Option<Timestamp>,
    opt: OptIn,
}

impl Seen {
    fn gather(ctx: &Context, pod: &CachedPod, now: Timestamp) -> Self {
        let zero = SignedDuration::ZERO;
        let (logins, node_offset, silent_since, stale_at) = match ctx.cache.liveness(pod, now) {
            Liveness::Fresh {
                sessions,
                node_offset,
                stale_at,
            } => (
                sessions.into_iter().filter(Session::is_login).collect(),
                node_offset,
                None,
                Some(stale_at),
            ),
            Liveness::Silent { heard_at } => (vec![], zero, Some(heard_at), None),
            Liveness::NoReport => (vec![], zero, None, None),
        };
        Self {
            logins,
            node_offset,
            silent_since,
            stale_at,
            pdb: ctx.cache.our_pdb(pod),
            last_login: None,
            opt: ctx.cache.opt_in(pod),
        }
    }

    /// The last time a login that counts for protection was seen (one idle
    /// past `--idle-release` does not), which drives the release grace.
    fn remember_login(&mut self, ctx: &Context, pod: &CachedPod, now: Timestamp) {
        let pdb = &self.pdb;
        let release = ctx.settings.plan.idle_release;
        let counting = self
            .logins
            .iter()
            .any(|s| counts_for_protection(s, release));
        self.last_login = ctx.memory.with_pod(&pod.uid().unwrap_or_default(), |m| {
            if counting || (m.last_login.is_none() && pdb.is_some()) {
                // After a restart an existing PDB starts its grace from now.
                m.last_login = Some(now);
            }
            m.last_login
        });
    }
}

/// Protecting: the pod's label and its PDB are written at once. The pod is
/// protected from the moment both exist, whichever lands first: a PDB whose
/// selector (that label) matches nothing yet blocks nothing, and a label
/// without its PDB changes nothing. One after the other, each login waited
/// for two API round trips in a row, under the load a drain brings.
/// Releasing: delete the PDB before taking the annotations away.
async fn write_protection(ctx: &Context, pod: &CachedPod, seen: &Seen, p: &Plan) -> Result<()> {
    if p.protect {
        let create = async {
            match seen.pdb {
                None => pdb::ensure(ctx, pod).await.map(Some),
                Some(_) => Ok(None),
            }
        };
        let (patched, created) =
            tokio::join!(patch_pod(ctx, pod, &p.labels, &p.annotations), create);
        // Announced even if the patch failed: the PDB exists, and the retry
        // finds it in the store (no second create, no second event).
        if let Ok(Some(pdb::Ensured::Created)) = created {
            ctx.events.on_pod(
                pod,
                Kind::Normal,
                "Protected",
                protected_note(pod, &seen.logins),
            );
        }
        patched?;
        created?;
        return Ok(());
    }
    let deleted = match &seen.pdb {
        Some(existing) => pdb::delete(ctx, existing).await?,
        None => false,
    };
    // Announced by the call that deleted the PDB, before anything else can
    // fail: a retry finds it gone (404) and must neither lose nor repeat it.
    if let Some(r) = &p.release
        && (deleted || matches!(r, Release::Capped(_)))
    {
        release_event(ctx, pod, r);
    }
    patch_pod(ctx, pod, &p.labels, &p.annotations).await
}

/// One Warning per protection that nears its cap (remembered per pod: a
/// restart may repeat it once); and, for the terminal notice, whether it
/// nears it now.
fn expiring_event(ctx: &Context, pod: &CachedPod, logins: &[Session], e: Option<&Expiring>) {
    let uid = pod.uid().unwrap_or_default();
    ctx.memory.set_expiring(
        &uid,
        e.map(|e| (e.end, e.cap.to_string())),
        Timestamp::now(),
    );
    let Some(e) = e else {
        return;
    };
    let first = ctx.memory.with_pod(&uid, |m| {
        let first = m.expiry_warned != Some(e.end);
        m.expiry_warned = Some(e.end);
        first
    });
    if !first {
        return;
    }
    let who: Vec<String> = logins.iter().take(3).map(describe).collect();
    ctx.events.on_pod(
        pod,
        Kind::Warning,
        "ProtectionExpiring",
        format!(
            "protection ends at {} ({}) while {} login session(s) continue ({}); after that the pod can be evicted and drains proceed",
            rfc3339(e.end),
            e.cap,
            logins.len(),
            who.join("; ")
        ),
    );
}

fn extended_event(ctx: &Context, pod: &CachedPod, r: &Interaction) {
    ctx.events.on_pod(
        pod,
        Kind::Normal,
        "Extended",
        format!(
            "eviction time extended by {} (requested by {}); new eviction time {}",
            duration::format(r.extension.unwrap_or_default()),
            r.extended_by.as_deref().unwrap_or("unknown"),
            rfc3339(r.evict_at(ctx.settings.plan.max_extension))
        ),
    );
}

pub fn error_policy(pod: Arc<CachedPod>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(pod = %events::pod_name(&pod), error = %err, "reconcile failed; retrying");
    ctx.failed("pod", err.kind(), Duration::from_secs(2))
}

async fn patch_pod(
    ctx: &Context,
    pod: &CachedPod,
    labels: &BTreeMap<String, Option<String>>,
    annotations: &BTreeMap<String, Option<String>>,
) -> Result<()> {
    if labels.is_empty() && annotations.is_empty() {
        return Ok(());
    }
    let mut meta = serde_json::Map::new();
    if !labels.is_empty() {
        meta.insert("labels".into(), serde_json::to_value(labels).expect("map"));
    }
    if !annotations.is_empty() {
        meta.insert(
            "annotations".into(),
            serde_json::to_value(annotations).expect("map"),
        );
    }
    // Optimistic concurrency: the webhook's writers may have folded an exec
    // into the interaction record since our cache saw the pod; a merge patch
    // computed from a stale copy would overwrite it. A 409 fails this
    // reconcile, and the watch event for the newer pod reconciles again.
    if let Some(rv) = &pod.metadata.resource_version {
        meta.insert(
            "resourceVersion".into(),
            serde_json::Value::String(rv.clone()),
        );
    }
    let patch = serde_json::json!({ "metadata": meta });
    let api: Api<CachedPod> = Api::namespaced(
        ctx.writer.client().clone(),
        &pod.namespace().unwrap_or_default(),
    );
    match ctx
        .writer
        .write(
            "patch_pod",
            api.patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            ),
        )
        .await
    {
        Ok(_) => Ok(()),
        // The pod is gone: nothing left to protect or restore.
        Err(e) if e.status() == Some(404) => Ok(()),
        Err(e) => Err(e),
    }
}

fn describe(s: &Session) -> String {
    format!(
        "user {} on {} in container {} ({}, pid {})",
        login_user(s.uid),
        s.tty,
        container(s),
        s.command,
        s.pid
    )
}

fn container(s: &Session) -> &str {
    s.container_name
        .as_deref()
        .unwrap_or(s.container_id.short())
}

fn protected_note(pod: &CachedPod, logins: &[Session]) -> String {
    let who: Vec<String> = logins.iter().take(3).map(describe).collect();
    format!(
        "{} login session(s) ({}); PodDisruptionBudget {} (maxUnavailable 0) blocks eviction and drains until the last session ends",
        logins.len(),
        who.join("; "),
        sessionguard_core::protection::pdb_name(&pod.name_any())
    )
}

fn release_event(ctx: &Context, pod: &CachedPod, r: &Release) {
    let (kind, reason, why) = match r {
        Release::SessionsEnded => (
            Kind::Normal,
            "Released",
            "the last login session ended".to_string(),
        ),
        Release::AgentSilent(t) => (
            Kind::Warning,
            "Released",
            format!(
                "the node's sessionguard agent has not reported since {} (grace {}); its sessions are no longer trusted",
                rfc3339(*t),
                duration::format(ctx.cache.agent_grace())
            ),
        ),
        Release::Capped(cap) => (
            Kind::Warning,
            "ProtectionExpired",
            format!("protection reached its cap ({cap}) while sessions continue"),
        ),
        Release::Idle(idle) => (
            Kind::Warning,
            "IdleReleased",
            format!(
                "every login has been idle for --idle-release {} or longer ({}); activity in a session protects the pod again",
                duration::format(ctx.settings.plan.idle_release.unwrap_or_default()),
                idle.iter()
                    .take(3)
                    .map(|s| format!(
                        "user {} on {} in container {}, idle {}",
                        login_user(s.uid),
                        s.tty,
                        container(s),
                        duration::format(Duration::from_secs(u64::from(s.idle_seconds)))
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        Release::NoPdb => (
            Kind::Normal,
            "Released",
            "the no-pdb annotation is set".to_string(),
        ),
        Release::OptedOut => (
            Kind::Normal,
            "Released",
            "the pod is no longer opted in to protection".to_string(),
        ),
    };
    ctx.events.on_pod(
        pod,
        kind,
        reason,
        format!("protection released: {why}; the pod can be evicted again"),
    );
}

/// SessionStarted/SessionEnded from the difference to what we saw last time.
/// On the first look after a restart, sessions that the interaction record
/// already covers are taken as known, so a restart does not replay them.
fn session_events(ctx: &Context, pod: &CachedPod, logins: &[Session]) {
    let now: BTreeMap<SessionKey, Session> = logins.iter().map(|s| (s.key(), s.clone())).collect();
    let recorded_until = pod
        .annotations()
        .get(keys::LAST_INTERACTION)
        .and_then(|v| v.parse::<Timestamp>().ok());
    let (started, ended) = ctx.memory.with_pod(&pod.uid().unwrap_or_default(), |m| {
        if m.known.is_empty() && m.last_login.is_none() {
            m.known = now
                .iter()
                .filter(|(k, _)| {
                    recorded_until.is_some_and(|r| {
                        k.started_at
                            .round(jiff::Unit::Second)
                            .unwrap_or(k.started_at)
                            <= r
                    })
                })
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect();
        }
        let keys_now: BTreeSet<&SessionKey> = now.keys().collect();
        let started: Vec<Session> = now
            .iter()
            .filter(|(k, _)| !m.known.contains_key(*k))
            .map(|(_, s)| s.clone())
            .collect();
        let ended: Vec<Session> = m
            .known
            .iter()
            .filter(|(k, _)| !keys_now.contains(k))
            .map(|(_, s)| s.clone())
            .collect();
        m.known = now.clone();
        (started, ended)
    });
    for s in started {
        ctx.events.on_pod(
            pod,
            Kind::Normal,
            "SessionStarted",
            format!("login session started: {}", describe(&s)),
        );
    }
    for s in ended {
        ctx.events.on_pod(
            pod,
            Kind::Normal,
            "SessionEnded",
            format!(
                "login session ended: user {} on {} in container {} (pid {})",
                login_user(s.uid),
                s.tty,
                container(&s),
                s.pid
            ),
        );
    }
}
