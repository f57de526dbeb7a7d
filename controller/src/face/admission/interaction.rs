//! What an exec, attach or debug request tells about an interaction: the
//! record the webhook queues for the record writer.

use jiff::Timestamp;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::Value;

/// How the API server was used to get into the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Exec,
    Attach,
    Debug,
}

impl Via {
    pub fn reason(self) -> &'static str {
        match self {
            Via::Exec => "Exec",
            Via::Attach => "Attach",
            Via::Debug => "Debug",
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Via::Exec => "kubectl exec",
            Via::Attach => "kubectl attach",
            Via::Debug => "kubectl debug (ephemeral container)",
        }
    }
}

/// One interaction seen by the API server, waiting to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub namespace: String,
    pub pod: String,
    pub at: Timestamp,
    /// From the authenticated request (`userInfo`), never from the client's body.
    pub user: String,
    pub groups: Vec<String>,
    pub via: Via,
    pub container: Option<String>,
    /// Exec's command, or the ephemeral container's command and args; empty
    /// for attach (PodAttachOptions has none).
    pub command: Vec<String>,
}

pub(super) fn user(req: &AdmissionRequest<DynamicObject>) -> (String, Vec<String>) {
    (
        req.user_info.username.clone().unwrap_or_default(),
        req.user_info.groups.clone().unwrap_or_default(),
    )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What kind of interaction this request is, if it is one we record.
pub fn via(req: &AdmissionRequest<DynamicObject>) -> Option<Via> {
    if req.resource.resource != "pods" {
        return None;
    }
    match (&req.operation, req.sub_resource.as_deref()) {
        (Operation::Connect, Some("exec")) => Some(Via::Exec),
        (Operation::Connect, Some("attach")) => Some(Via::Attach),
        (Operation::Update, Some("ephemeralcontainers")) => Some(Via::Debug),
        _ => None,
    }
}

/// The ephemeral containers in `new` that `old` does not have.
fn added_ephemeral<'a>(new: &'a DynamicObject, old: Option<&DynamicObject>) -> Vec<&'a Value> {
    let names = |o: &DynamicObject| -> Vec<String> {
        o.data["spec"]["ephemeralContainers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = old.map(names).unwrap_or_default();
    new.data["spec"]["ephemeralContainers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| {
                    c["name"]
                        .as_str()
                        .is_some_and(|n| !before.iter().any(|b| b == n))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The record for an exec, attach or debug request; `None` when there is
/// nothing to record (not an interaction, or no new ephemeral container).
pub fn record_for(req: &AdmissionRequest<DynamicObject>, now: Timestamp) -> Option<Record> {
    let via = via(req)?;
    let obj = req.object.as_ref();
    let (container, command) = match via {
        Via::Exec | Via::Attach => (
            obj.and_then(|o| o.data["container"].as_str().map(str::to_string)),
            obj.map(|o| strings(&o.data["command"])).unwrap_or_default(),
        ),
        Via::Debug => {
            let added = added_ephemeral(obj?, req.old_object.as_ref());
            let c = added.first()?;
            let mut cmd = strings(&c["command"]);
            cmd.extend(strings(&c["args"]));
            (c["name"].as_str().map(str::to_string), cmd)
        }
    };
    let (user, groups) = user(req);
    Some(Record {
        namespace: req.namespace.clone().unwrap_or_default(),
        pod: req.name.clone(),
        at: now,
        user,
        groups,
        via,
        container,
        command,
    })
}
