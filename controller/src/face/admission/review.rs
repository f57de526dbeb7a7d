//! Admission decisions over `AdmissionReview` bodies. No I/O: the connect
//! webhook hands its record to the [`Queue`] and the eviction webhook its
//! event to a bounded channel (neither waits), so a decision costs a JSON
//! parse and a few map lookups.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::json;
use sessionguard_core::guard::{self, Update, Verdict};
use sessionguard_core::keys;

use super::eviction::{self, EVICTION_PATH, Evictions};
use super::interaction::{record_for, user, via};
use super::metrics::{Metrics, WebhookLabels};
use super::queue::Queue;

pub const CONNECT_PATH: &str = "/validate/connect";
pub const GUARD_PATH: &str = "/validate/pods";
pub const MUTATE_PATH: &str = "/mutate/pods";

/// The webhooks this server answers. A path that names none is refused
/// (400), never answered by a default: a webhook added to the manifests but
/// not here fails loudly instead of being mutated or admitted by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    Connect,
    Guard,
    Mutate,
    Eviction,
}

impl Webhook {
    pub const ALL: [Webhook; 4] = [Self::Connect, Self::Guard, Self::Mutate, Self::Eviction];

    pub fn path(self) -> &'static str {
        match self {
            Self::Connect => CONNECT_PATH,
            Self::Guard => GUARD_PATH,
            Self::Mutate => MUTATE_PATH,
            Self::Eviction => EVICTION_PATH,
        }
    }

    /// The `webhook` label of its metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Guard => "guard",
            Self::Mutate => "mutate",
            Self::Eviction => "eviction",
        }
    }

    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.path() == path)
    }
}

pub struct Context {
    pub deny_namespaces: Vec<String>,
    pub privileged: Vec<String>,
    pub max_extension: Duration,
    pub queue: Queue,
    pub metrics: Metrics,
    /// The eviction webhook's view (None: every eviction is admitted).
    pub evictions: Option<Evictions>,
}

/// A request we could not read: the API server gets a 400 and, with
/// failurePolicy Ignore, admits anyway.
#[derive(Debug)]
pub struct BadRequest(pub String);

/// Answers one AdmissionReview posted to `path`.
pub fn handle(ctx: &Context, path: &str, body: &[u8]) -> Result<Vec<u8>, BadRequest> {
    match Webhook::from_path(path) {
        Some(hook) => answer_hook(ctx, hook, body),
        None => Err(BadRequest(format!("no webhook at {path}"))),
    }
}

/// Answers one AdmissionReview for `hook` (the server has routed it already).
pub fn answer_hook(ctx: &Context, hook: Webhook, body: &[u8]) -> Result<Vec<u8>, BadRequest> {
    let started = Instant::now();
    let webhook = hook.label();
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|e| {
        ctx.metrics.request(webhook, "invalid");
        BadRequest(format!("not an AdmissionReview: {e}"))
    })?;
    let req: AdmissionRequest<DynamicObject> = review.try_into().map_err(|e| {
        ctx.metrics.request(webhook, "invalid");
        BadRequest(format!("AdmissionReview without a request: {e}"))
    })?;
    let (resp, outcome) = match hook {
        Webhook::Connect => connect(ctx, &req, Timestamp::now()),
        Webhook::Guard => guard_update(ctx, &req),
        Webhook::Eviction => match &ctx.evictions {
            Some(ev) => eviction::review(ev, &req, Timestamp::now()),
            None => (AdmissionResponse::from(&req), "allowed"),
        },
        Webhook::Mutate => mutate(&req),
    };
    ctx.metrics.request(webhook, outcome);
    let out = serde_json::to_vec(&resp.into_review())
        .map_err(|e| BadRequest(format!("encoding the response: {e}")))?;
    ctx.metrics
        .duration
        .get_or_create(&WebhookLabels { webhook })
        .observe(started.elapsed().as_secs_f64());
    Ok(out)
}

/// exec/attach/debug: admit (unless the namespace's policy denies) and queue
/// the record. The policy applies to dry runs too (a dry run must answer
/// what the real request would get); they are only never recorded.
pub fn connect(
    ctx: &Context,
    req: &AdmissionRequest<DynamicObject>,
    now: Timestamp,
) -> (AdmissionResponse, &'static str) {
    let resp = AdmissionResponse::from(req);
    let ns = req.namespace.as_deref().unwrap_or_default();
    if let Some(via) = via(req)
        && ctx.deny_namespaces.iter().any(|d| d.trim() == ns)
    {
        return (
            resp.deny(format!(
                "{} is not allowed in namespace {ns}: sessionguard's policy \
                 (--webhook-deny-namespaces) denies interactive access there; \
                 change the workload through its manifest instead",
                via.verb()
            )),
            "denied",
        );
    }
    if req.dry_run {
        return (resp, "dry_run");
    }
    if let Some(record) = record_for(req, now) {
        ctx.queue.push(record);
    }
    (resp, "allowed")
}

fn maps(o: Option<&DynamicObject>) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    o.map(|o| {
        (
            o.metadata.labels.clone().unwrap_or_default(),
            o.metadata.annotations.clone().unwrap_or_default(),
        )
    })
    .unwrap_or_default()
}

/// An update of a pod's metadata: through the pod itself, or through
/// `pods/status`, which also accepts label and annotation changes (the
/// status strategy keeps only the spec), so it must not be a way around the
/// guard.
fn is_pod_update(req: &AdmissionRequest<DynamicObject>) -> bool {
    req.operation == Operation::Update
        && req.resource.resource == "pods"
        && matches!(req.sub_resource.as_deref(), None | Some("status"))
}

/// The guard: only the extension is the user's, and it must be a valid
/// duration within the cap; new pods carry no record. Applies to dry-run
/// requests too (no side effects).
pub fn guard_update(
    ctx: &Context,
    req: &AdmissionRequest<DynamicObject>,
) -> (AdmissionResponse, &'static str) {
    let resp = AdmissionResponse::from(req);
    let (username, _) = user(req);
    let privileged = ctx.privileged.contains(&username);
    if req.operation == Operation::Create
        && req.resource.resource == "pods"
        && req.sub_resource.is_none()
    {
        let (labels, annotations) = maps(req.object.as_ref());
        return match guard::check_create(&labels, &annotations, privileged, ctx.max_extension) {
            Verdict::Deny(why) => (resp.deny(why), "denied"),
            _ => (resp, "allowed"),
        };
    }
    if !is_pod_update(req) {
        return (resp, "allowed");
    }
    let (old_labels, old_annotations) = maps(req.old_object.as_ref());
    let (new_labels, new_annotations) = maps(req.object.as_ref());
    let verdict = guard::check(
        &Update {
            old_labels: &old_labels,
            new_labels: &new_labels,
            old_annotations: &old_annotations,
            new_annotations: &new_annotations,
        },
        privileged,
        &username,
        ctx.max_extension,
    );
    match verdict {
        Verdict::Deny(why) => (resp.deny(why), "denied"),
        Verdict::Allow | Verdict::Extension(_) => (resp, "allowed"),
    }
}

/// Writes `extended-by` from the authenticated user whenever a request
/// changes the extension, so a client-written value never survives. Nobody
/// is exempt, privileged users included: whoever moved an eviction time is
/// on record. (The controller itself never writes the extension.)
pub fn mutate(req: &AdmissionRequest<DynamicObject>) -> (AdmissionResponse, &'static str) {
    let resp = AdmissionResponse::from(req);
    if !is_pod_update(req) {
        return (resp, "allowed");
    }
    let (username, _) = user(req);
    let (_, old) = maps(req.old_object.as_ref());
    let (_, new) = maps(req.object.as_ref());
    if old.get(keys::EXTENSION) == new.get(keys::EXTENSION) {
        return (resp, "allowed");
    }
    let path = format!(
        "/metadata/annotations/{}",
        keys::EXTENDED_BY.replace('/', "~1")
    );
    let ops = if new
        .get(keys::EXTENSION)
        .is_some_and(|v| !v.trim().is_empty())
    {
        json!([{ "op": "add", "path": path, "value": username }])
    } else if new.contains_key(keys::EXTENDED_BY) {
        json!([{ "op": "remove", "path": path }])
    } else {
        return (resp, "allowed");
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("well-formed JSON patch");
    match resp.clone().with_patch(patch) {
        Ok(r) => (r, "mutated"),
        // Cannot happen for a patch we built; admitting unmutated lets the
        // guard refuse the request with its reason.
        Err(_) => (resp, "allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::admission::interaction::Via;
    use crate::face::admission::metrics::Metrics;
    use serde_json::Value;

    fn ctx(deny: &[&str]) -> (Context, super::super::queue::Receiver) {
        let metrics = Metrics::default();
        let (queue, rx) = Queue::new(8, metrics.clone());
        (
            Context {
                deny_namespaces: deny.iter().map(|s| s.to_string()).collect(),
                privileged: vec!["system:serviceaccount:sg:controller".into()],
                max_extension: Duration::from_secs(86_400),
                queue,
                metrics,
                evictions: None,
            },
            rx,
        )
    }

    fn review(
        op: &str,
        sub: Option<&str>,
        user: &str,
        object: Value,
        old: Value,
        dry_run: bool,
    ) -> Vec<u8> {
        let mut req = json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web-0",
            "namespace": "team-a",
            "operation": op,
            "userInfo": {"username": user, "groups": ["devs", "system:authenticated"]},
            "object": object,
            "oldObject": old,
            "dryRun": dry_run,
        });
        if let Some(s) = sub {
            req["subResource"] = json!(s);
        }
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": req,
        }))
        .unwrap()
    }

    fn answer(ctx: &Context, path: &str, body: &[u8]) -> Value {
        let out = handle(ctx, path, body).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(
            v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002",
            "uid must be echoed"
        );
        v["response"].clone()
    }

    #[test]
    fn exec_is_admitted_and_recorded_with_the_authenticated_user() {
        let (c, mut rx) = ctx(&[]);
        let body = review(
            "CONNECT",
            Some("exec"),
            "oidc:https://idp.example.com#alice@example.com",
            json!({"kind": "PodExecOptions", "apiVersion": "v1", "stdin": true, "tty": true,
                   "container": "app", "command": ["sh", "-c", "echo hi"]}),
            Value::Null,
            false,
        );
        assert_eq!(answer(&c, CONNECT_PATH, &body)["allowed"], true);
        let r = rx.try_recv().unwrap();
        assert_eq!(r.user, "oidc:https://idp.example.com#alice@example.com");
        assert_eq!(r.groups, ["devs", "system:authenticated"]);
        assert_eq!((r.namespace.as_str(), r.pod.as_str()), ("team-a", "web-0"));
        assert_eq!(r.via, Via::Exec);
        assert_eq!(r.container.as_deref(), Some("app"));
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
    }

    #[test]
    fn attach_has_no_command_and_still_works() {
        let (c, mut rx) = ctx(&[]);
        let body = review(
            "CONNECT",
            Some("attach"),
            "bob",
            json!({"kind": "PodAttachOptions", "apiVersion": "v1", "stdin": true, "container": "app"}),
            Value::Null,
            false,
        );
        assert_eq!(answer(&c, CONNECT_PATH, &body)["allowed"], true);
        let r = rx.try_recv().unwrap();
        assert_eq!((r.via, r.command.len()), (Via::Attach, 0));
    }

    #[test]
    fn debug_records_the_new_ephemeral_container() {
        let (c, mut rx) = ctx(&[]);
        let old = json!({"metadata": {"name": "web-0"}, "spec": {"ephemeralContainers": [
            {"name": "debugger-old", "image": "busybox"}]}});
        let new = json!({"metadata": {"name": "web-0"}, "spec": {"ephemeralContainers": [
            {"name": "debugger-old", "image": "busybox"},
            {"name": "debugger-x1", "image": "busybox", "command": ["sh"], "args": ["-i"], "targetContainerName": "app"}]}});
        let body = review(
            "UPDATE",
            Some("ephemeralcontainers"),
            "bob",
            new,
            old,
            false,
        );
        assert_eq!(answer(&c, CONNECT_PATH, &body)["allowed"], true);
        let r = rx.try_recv().unwrap();
        assert_eq!(r.via, Via::Debug);
        assert_eq!(r.container.as_deref(), Some("debugger-x1"));
        assert_eq!(r.command, ["sh", "-i"]);
    }

    #[test]
    fn dry_run_records_nothing_and_policy_denies_only_where_asked() {
        let (c, mut rx) = ctx(&["team-a"]);
        let exec = |dry| {
            review(
                "CONNECT",
                Some("exec"),
                "bob",
                json!({"container": "app", "command": ["ls"]}),
                Value::Null,
                dry,
            )
        };
        let resp = answer(&c, CONNECT_PATH, &exec(false));
        assert_eq!(resp["allowed"], false);
        assert!(
            resp["status"]["message"]
                .as_str()
                .unwrap()
                .contains("kubectl exec is not allowed in namespace team-a")
        );
        assert!(rx.try_recv().is_err(), "a denied exec is not recorded");
        let (c, mut rx) = ctx(&["elsewhere"]);
        assert_eq!(answer(&c, CONNECT_PATH, &exec(true))["allowed"], true);
        assert!(rx.try_recv().is_err(), "dry run recorded");
        assert_eq!(answer(&c, CONNECT_PATH, &exec(false))["allowed"], true);
        assert_eq!(rx.try_recv().unwrap().pod, "web-0");
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "annotations": annotations}})
    }

    #[test]
    fn the_extension_gets_its_requester_from_the_request() {
        let (c, _rx) = ctx(&[]);
        let old = pod(json!({"sessionguard.io/first-interaction": "2026-11-24T01:00:00Z"}));
        let new = pod(
            json!({"sessionguard.io/first-interaction": "2026-11-24T01:00:00Z",
                             "sessionguard.io/extension": "30m",
                             "sessionguard.io/extended-by": "somebody-else"}),
        );
        let body = review("UPDATE", None, "alice", new, old.clone(), false);
        let resp = answer(&c, MUTATE_PATH, &body);
        assert_eq!(resp["patchType"], "JSONPatch");
        assert_eq!(
            patch_of(&resp),
            json!([{"op": "add", "path": "/metadata/annotations/sessionguard.io~1extended-by", "value": "alice"}])
        );
        // The guard refuses the forged value if the mutation did not happen.
        let resp = answer(&c, GUARD_PATH, &body);
        assert_eq!(resp["allowed"], false);
        // ... and admits once it did.
        let mutated = pod(
            json!({"sessionguard.io/first-interaction": "2026-11-24T01:00:00Z",
                                 "sessionguard.io/extension": "30m",
                                 "sessionguard.io/extended-by": "alice"}),
        );
        let body = review("UPDATE", None, "alice", mutated, old, false);
        assert_eq!(answer(&c, GUARD_PATH, &body)["allowed"], true);
    }

    #[test]
    fn the_guard_refuses_record_edits_but_not_the_controller() {
        let (c, _rx) = ctx(&[]);
        let old = pod(json!({"sessionguard.io/evict-at": "2026-11-24T01:10:00Z"}));
        let new = pod(json!({"sessionguard.io/evict-at": "2099-01-01T00:00:00Z"}));
        let body = review("UPDATE", None, "alice", new.clone(), old.clone(), false);
        let resp = answer(&c, GUARD_PATH, &body);
        assert_eq!(resp["allowed"], false);
        assert!(
            resp["status"]["message"]
                .as_str()
                .unwrap()
                .contains("sessionguard.io/evict-at")
        );
        let body = review(
            "UPDATE",
            None,
            "system:serviceaccount:sg:controller",
            new,
            old,
            false,
        );
        assert_eq!(answer(&c, GUARD_PATH, &body)["allowed"], true);
    }

    #[test]
    fn garbage_is_a_bad_request_not_a_panic() {
        let (c, _rx) = ctx(&[]);
        assert!(handle(&c, CONNECT_PATH, b"{").is_err());
        assert!(handle(&c, CONNECT_PATH, br#"{"kind":"AdmissionReview"}"#).is_err());
        assert!(handle(&c, "/nope", b"{}").is_err());
    }

    #[test]
    fn the_deny_policy_answers_dry_runs_too() {
        let (c, mut rx) = ctx(&["team-a"]);
        let body = review(
            "CONNECT",
            Some("exec"),
            "bob",
            json!({"container": "app", "command": ["ls"]}),
            Value::Null,
            true,
        );
        let resp = answer(&c, CONNECT_PATH, &body);
        assert_eq!(resp["allowed"], false, "a dry run must see the real answer");
        assert!(rx.try_recv().is_err(), "and is never recorded");
    }

    #[test]
    fn status_updates_cannot_bypass_the_guard() {
        let (c, _rx) = ctx(&[]);
        let old = pod(json!({"sessionguard.io/evict-at": "2026-11-24T01:10:00Z"}));
        let new = pod(json!({"sessionguard.io/evict-at": "2099-01-01T00:00:00Z"}));
        let body = review("UPDATE", Some("status"), "alice", new, old.clone(), false);
        let resp = answer(&c, GUARD_PATH, &body);
        assert_eq!(resp["allowed"], false);
        assert!(
            resp["status"]["message"]
                .as_str()
                .unwrap()
                .contains("sessionguard.io/evict-at is managed by sessionguard")
        );
        // An extension through pods/status gets its requester, like any other.
        let ext = pod(json!({"sessionguard.io/evict-at": "2026-11-24T01:10:00Z",
                             "sessionguard.io/extension": "1h"}));
        let body = review("UPDATE", Some("status"), "alice", ext, old, false);
        assert_eq!(answer(&c, MUTATE_PATH, &body)["patchType"], "JSONPatch");
        // Other subresources are none of the guard's business.
        let body = review(
            "UPDATE",
            Some("ephemeralcontainers"),
            "alice",
            pod(json!({"sessionguard.io/ttl": "1h"})),
            pod(json!({})),
            false,
        );
        assert_eq!(answer(&c, GUARD_PATH, &body)["allowed"], true);
    }

    /// kube encodes the patch bytes as a JSON array, which the API server's
    /// decoder accepts for []byte like a base64 string.
    fn patch_of(resp: &Value) -> Value {
        let bytes: Vec<u8> = serde_json::from_value(resp["patch"].clone()).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn privileged_users_extensions_are_on_record_too() {
        let (c, _rx) = ctx(&[]);
        let old = pod(json!({"sessionguard.io/first-interaction": "2026-11-24T01:00:00Z"}));
        let new = pod(
            json!({"sessionguard.io/first-interaction": "2026-11-24T01:00:00Z",
                             "sessionguard.io/extension": "30m"}),
        );
        let admin = "system:serviceaccount:sg:controller";
        let body = review("UPDATE", None, admin, new, old, false);
        let resp = answer(&c, MUTATE_PATH, &body);
        assert_eq!(
            patch_of(&resp),
            json!([{"op": "add", "path": "/metadata/annotations/sessionguard.io~1extended-by", "value": admin}])
        );
    }

    #[test]
    fn new_pods_extensions_are_checked() {
        let (c, _rx) = ctx(&[]);
        let create = |annotations: Value| {
            let body = review(
                "CREATE",
                None,
                "alice",
                pod(annotations),
                Value::Null,
                false,
            );
            answer(&c, GUARD_PATH, &body)
        };
        let resp = create(json!({"sessionguard.io/extension": "bogus"}));
        assert_eq!(resp["allowed"], false, "unparsable extension on create");
        let resp = create(json!({"sessionguard.io/extension": "30d"}));
        assert!(
            resp["status"]["message"]
                .as_str()
                .unwrap()
                .contains("exceeds the maximum extension of 24h0m0s"),
            "{resp}"
        );
        let resp = create(json!({"sessionguard.io/extension": "1h",
                                 "sessionguard.io/extended-by": "alice"}));
        assert_eq!(resp["allowed"], false, "extended-by on create");
        assert_eq!(
            create(json!({"sessionguard.io/extension": "1h"}))["allowed"],
            true
        );
    }
}
