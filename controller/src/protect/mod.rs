//! Pod reconcile: protection (PDB + autoscaler annotations), the interaction
//! record, session events, and (through [`crate::evict`]) drift eviction.

pub mod pdb;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use sessionguard_core::interaction::{login_user, rfc3339};
use sessionguard_core::{Session, duration, keys};

use crate::error::{Error, Result};
use crate::events::{self, Kind};
use crate::reports::index::Liveness;
use crate::state::{SessionKey, State};
use plan::{Inputs, Release};

/// How often a pod is looked at even if nothing changes (timers are also
/// re-derived from annotations, so this is only a safety net).
const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(pod: Arc<Pod>, state: Arc<State>) -> Result<Action> {
    let _timer = state.metrics.timer("pod");
    state.ready().await;
    if pod.metadata.deletion_timestamp.is_some() {
        // The pod is going; the garbage collector removes our PDB with it.
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let uid = pod.uid().unwrap_or_default();
    let (logins, silent_since, stale_at) = match state.liveness(&pod, now) {
        Liveness::Fresh { sessions, stale_at } => (
            sessions
                .into_iter()
                .filter(Session::is_login)
                .collect::<Vec<_>>(),
            None,
            Some(stale_at),
        ),
        Liveness::Silent { heard_at } => (vec![], Some(heard_at), None),
        Liveness::NoReport => (vec![], None, None),
    };
    if silent_since.is_none() {
        session_events(&state, &pod, &logins);
    }
    let existing_pdb = state.our_pdb(&pod);
    let last_login = state.with_memory(&uid, |m| {
        if !logins.is_empty() || (m.last_login.is_none() && existing_pdb.is_some()) {
            // After a restart an existing PDB starts its grace from now.
            m.last_login = Some(now);
        }
        m.last_login
    });
    let opt = state.opt_in(&pod);
    let p = plan::plan(&Inputs {
        pod: &pod,
        logins: &logins,
        silent_since,
        stale_at,
        opt,
        has_pdb: existing_pdb.is_some(),
        last_login,
        now,
        config: &state.config,
    });

    if let Some(err) = &p.interaction_error {
        state
            .metrics
            .report_errors
            .get_or_create(&crate::metrics::KindLabels {
                kind: "bad_interaction_record",
            })
            .inc();
        tracing::warn!(pod = %events::pod_name(&pod), error = %err, "interaction record unreadable (not updated) or its extension ignored/capped");
    }

    // Order matters for the race with a drain: label the pod before the PDB
    // selects it; delete the PDB before taking the annotations away.
    if p.protect {
        patch_pod(&state, &pod, &p.labels, &p.annotations).await?;
        if existing_pdb.is_none()
            && let pdb::Ensured::Created = pdb::ensure(&state, &pod).await?
        {
            events::on_pod(
                &state,
                &pod,
                Kind::Normal,
                "Protected",
                protected_note(&pod, &logins),
            );
        }
    } else {
        let deleted = match &existing_pdb {
            Some(existing) => pdb::delete(&state, existing).await?,
            None => false,
        };
        // Announced by the call that deleted the PDB, before anything else can
        // fail: a retry finds it gone (404) and must neither lose nor repeat it.
        if let Some(r) = &p.release
            && (deleted || matches!(r, Release::Capped(_)))
        {
            release_event(&state, &pod, r);
        }
        patch_pod(&state, &pod, &p.labels, &p.annotations).await?;
    }
    if let Some(r) = &p.extended {
        events::on_pod(
            &state,
            &pod,
            Kind::Normal,
            "Extended",
            format!(
                "eviction time extended by {} (requested by {}); new eviction time {}",
                duration::format(r.extension.unwrap_or_default()),
                r.extended_by.as_deref().unwrap_or("unknown"),
                rfc3339(r.evict_at(state.config.webhook.max_extension))
            ),
        );
    }

    let evict_requeue =
        crate::evict::step(&state, &pod, &logins, &opt, p.interaction.as_ref(), now).await?;

    if let Some(sts) = state.owner_statefulset(&pod) {
        let _ = state.sts_trigger.send(ObjectRef::from_obj(&*sts));
    }
    let next = [p.requeue, evict_requeue, Some(RESYNC)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(RESYNC);
    Ok(Action::requeue(next))
}

pub fn error_policy(pod: Arc<Pod>, err: &Error, state: Arc<State>) -> Action {
    state
        .metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            controller: "pod",
            kind: err.kind(),
        })
        .inc();
    tracing::warn!(pod = %events::pod_name(&pod), error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

async fn patch_pod(
    state: &Arc<State>,
    pod: &Pod,
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
    let api: Api<Pod> = Api::namespaced(state.client.clone(), &pod.namespace().unwrap_or_default());
    match state
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
        s.container_name
            .as_deref()
            .unwrap_or(s.container_id.short()),
        s.command,
        s.pid
    )
}

fn protected_note(pod: &Pod, logins: &[Session]) -> String {
    let who: Vec<String> = logins.iter().take(3).map(describe).collect();
    format!(
        "{} login session(s) ({}); PodDisruptionBudget {} (maxUnavailable 0) blocks eviction and drains until the last session ends",
        logins.len(),
        who.join("; "),
        sessionguard_core::protection::pdb_name(&pod.name_any())
    )
}

fn release_event(state: &Arc<State>, pod: &Pod, r: &Release) {
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
                duration::format(state.config.agent_grace)
            ),
        ),
        Release::Capped(cap) => (
            Kind::Warning,
            "ProtectionExpired",
            format!(
                "protection reached --max-protection {} while sessions continue",
                duration::format(*cap)
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
    events::on_pod(
        state,
        pod,
        kind,
        reason,
        format!("protection released: {why}; the pod can be evicted again"),
    );
}

/// SessionStarted/SessionEnded from the difference to what we saw last time.
/// On the first look after a restart, sessions that the interaction record
/// already covers are taken as known, so a restart does not replay them.
fn session_events(state: &Arc<State>, pod: &Pod, logins: &[Session]) {
    let now: BTreeSet<SessionKey> = logins.iter().map(SessionKey::from).collect();
    let recorded_until = pod
        .annotations()
        .get(keys::LAST_INTERACTION)
        .and_then(|v| v.parse::<Timestamp>().ok());
    let (started, ended) = state.with_memory(&pod.uid().unwrap_or_default(), |m| {
        if m.known.is_empty() && m.last_login.is_none() {
            m.known = now
                .iter()
                .filter(|k| {
                    recorded_until.is_some_and(|r| {
                        k.started_at
                            .round(jiff::Unit::Second)
                            .unwrap_or(k.started_at)
                            <= r
                    })
                })
                .cloned()
                .collect();
        }
        let started: Vec<SessionKey> = now.difference(&m.known).cloned().collect();
        let ended: Vec<SessionKey> = m.known.difference(&now).cloned().collect();
        m.known = now.clone();
        (started, ended)
    });
    for k in started {
        let s = logins
            .iter()
            .find(|s| SessionKey::from(*s) == k)
            .expect("from logins");
        events::on_pod(
            state,
            pod,
            Kind::Normal,
            "SessionStarted",
            format!("login session started: {}", describe(s)),
        );
    }
    for k in ended {
        events::on_pod(
            state,
            pod,
            Kind::Normal,
            "SessionEnded",
            format!(
                "login session ended: user {} on {} in container {} (pid {})",
                login_user(k.uid),
                k.tty,
                k.container,
                k.pid
            ),
        );
    }
}
