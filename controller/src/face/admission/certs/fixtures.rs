//! A replica's certificate check against a mocked API server
//! (`tower_test::mock`): the test plays the API server, taking each request
//! the check sends, asserting what it must say, and answering it.
//!
//! The replica runs with the chart's defaults: namespace `sg`, Secret
//! `sessionguard-webhook-tls`, both configurations named `sessionguard`
//! (the validating one with two webhooks, the mutating one with one).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use http::{Method, Request, Response, StatusCode};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::client::Body;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sessionguard_core::certs::{Leaf, Pki as _, Policy, Published, State};
use tokio::task::JoinHandle;
use tower_test::mock::{self, SendResponse};

use super::codec::{self, GENERATION};
use super::pki::Rcgen;
use super::publish::{Trusted, Webhooks};
use super::{Manager, Source, sans, timing};
use crate::error::Result;
use crate::face::admission::WebhookConfig;
use crate::face::admission::metrics::Metrics;
use crate::face::admission::tls::Resolver;
use crate::face::admission::token::{self, Tokens};

const NS: &str = "sg";
const SECRET: &str = "/api/v1/namespaces/sg/secrets/sessionguard-webhook-tls";
const SECRETS: &str = "/api/v1/namespaces/sg/secrets";
const VALIDATING: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/sessionguard";
const MUTATING: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/sessionguard";
/// resourceVersions the mocked API server hands out.
const VALIDATING_RV: &str = "5";
const MUTATING_RV: &str = "6";
pub const SECRET_RV: &str = "10";
pub const NEWER_SECRET_RV: &str = "11";

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    webhook: WebhookConfig,
}

fn flags() -> WebhookConfig {
    Flags::parse_from(["sessionguard-controller", "--webhook", "true"]).webhook
}

/// The policy the replica runs, for making the states it finds.
fn policy() -> Policy<Rcgen> {
    Policy {
        pki: Rcgen,
        timing: timing(&flags()),
        sans: sans("sessionguard-webhook", NS, &[]),
    }
}

/// Both configurations (three webhooks) holding `s`'s bundle.
pub fn published(s: &State) -> Published<Trusted> {
    Published {
        bundles: vec![Trusted::of_pem(&s.bundle()); 3],
        generation: s.generation,
    }
}

pub fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

/// A Secret as the replicas left it `age` ago: one CA that both
/// configurations were seen trusting, a serving certificate signed then
/// (valid 90 days), generation 1.
pub fn secret_written(age: SignedDuration) -> State {
    let p = policy();
    let then = Timestamp::now() - age;
    let first = p
        .next(None, &Published::<Trusted>::default(), then)
        .unwrap();
    let seen = then + SignedDuration::from_mins(1);
    p.next(Some(&first), &published(&first), seen).unwrap()
}

/// `s` after another replica rotated its CA: a second CA, trusted by both
/// configurations for an hour, signs the serving certificate now.
pub fn rotated_by_another_replica(s: &State) -> State {
    let now = Timestamp::now();
    let mut ca = Rcgen
        .new_ca(Duration::from_secs(1825 * 86_400), now - days(1))
        .unwrap();
    ca.trusted_at = Some(now - SignedDuration::from_hours(1));
    let not_after = now + days(90);
    let leaf = Rcgen.sign(&ca, &policy().sans, not_after, now).unwrap();
    let mut next = s.clone();
    next.cas.push(ca);
    next.leaf = Some(leaf);
    next.generation += 1;
    next
}

/// One replica running one check, and what it serves.
pub struct Replica {
    check: JoinHandle<Result<()>>,
    resolver: Arc<Resolver>,
    tokens: Arc<Tokens>,
    metrics: Metrics,
}

/// The API server's side of the replica's client.
pub struct ApiServer(mock::Handle<Request<Body>, Response<Body>>);

/// Starts a check on a replica that has served nothing yet.
pub fn a_replica_checks() -> (Replica, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let resolver = Arc::new(Resolver::default());
    let tokens = Arc::new(Tokens::default());
    let metrics = Metrics::default();
    let manager = Manager {
        client: Client::new(service, "default"),
        source: Source::Secret {
            namespace: NS.into(),
            sans: policy().sans,
        },
        resolver: resolver.clone(),
        tokens: tokens.clone(),
        config: flags(),
        metrics: metrics.clone(),
        serving_until: Default::default(),
    };
    // The manager, and so the client, is dropped when the check ends: the
    // API server then hears that nothing more is coming.
    let check = tokio::spawn(async move { manager.tick().await });
    let replica = Replica {
        check,
        resolver,
        tokens,
        metrics,
    };
    (replica, ApiServer(handle))
}

// === impl Replica ===

impl Replica {
    /// Is this the certificate its TLS server hands out? The expiry gauge
    /// says when it is not; when it matches, installing the certificate
    /// again is a no-op exactly if it is the one served.
    pub fn serves(&self, leaf: &Leaf) -> bool {
        self.metrics.cert_not_after.get() == leaf.not_after.as_second()
            && !self.resolver.set(&leaf.cert_pem, &leaf.key_pem).unwrap()
    }

    /// Does its server route a request whose path carries `tok`?
    pub fn accepts(&self, tok: &str) -> bool {
        self.tokens
            .route(&token::with_token("/validate/connect", tok))
            .is_ok()
    }

    /// Failed writes it counted (`sessionguard_webhook_cert_errors_total`).
    pub fn errors(&self) -> u64 {
        self.metrics.cert_errors.get()
    }
}

// === impl ApiServer ===

impl ApiServer {
    /// Both configurations as the chart creates them: no caBundle yet, paths without a token.
    pub async fn serves_configurations_without_a_bundle(&mut self) {
        self.serves_configurations(None, None, None).await;
    }

    /// Both configurations with `s`'s bundle and path token on every
    /// webhook, at `s`'s generation.
    pub async fn serves_configurations_publishing(&mut self, s: &State) {
        self.serves_configurations(
            Some(&s.bundle()),
            s.path_token.as_deref(),
            Some(s.generation),
        )
        .await;
    }

    async fn serves_configurations(
        &mut self,
        bundle: Option<&str>,
        tok: Option<&str>,
        generation: Option<u64>,
    ) {
        let path = |p: &str| tok.map_or(p.to_string(), |t| token::with_token(p, t));
        let hook = || WebhookClientConfig {
            ca_bundle: bundle.map(|b| ByteString(b.as_bytes().to_vec())),
            service: Some(ServiceReference {
                name: "sessionguard-webhook".into(),
                namespace: NS.into(),
                path: Some(path("/validate/connect")),
                port: Some(443),
            }),
            ..Default::default()
        };
        let validating = ValidatingWebhookConfiguration {
            metadata: config_meta(VALIDATING_RV, generation),
            webhooks: Some(
                ["connect", "guard"]
                    .map(|n| validating_hook(n, hook()))
                    .to_vec(),
            ),
        };
        let mutating = MutatingWebhookConfiguration {
            metadata: config_meta(MUTATING_RV, generation),
            webhooks: Some(vec![MutatingWebhook {
                name: "mutate.sessionguard.io".into(),
                client_config: hook(),
                ..Default::default()
            }]),
        };
        self.answers(Method::GET, VALIDATING, &validating).await;
        self.answers(Method::GET, MUTATING, &mutating).await;
    }

    pub async fn has_no_secret(&mut self) {
        let (_, send) = self.expects(Method::GET, SECRET).await;
        send.send_response(status(StatusCode::NOT_FOUND, "NotFound"));
    }

    /// The Secret holding `s`, at resourceVersion `rv`.
    pub async fn serves_secret(&mut self, s: &State, rv: &str) {
        let mut secret = codec::secret("sessionguard-webhook-tls", NS, s).unwrap();
        secret.metadata.resource_version = Some(rv.into());
        self.answers(Method::GET, SECRET, &secret).await;
    }

    /// A create of the Secret: returns the state it holds.
    pub async fn takes_a_new_secret(&mut self) -> State {
        let (secret, send) = self.expects_object::<Secret>(Method::POST, SECRETS).await;
        assert_eq!(secret.metadata.resource_version, None);
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "sessionguard");
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        send.send_response(ok(&with_rv(secret.clone(), SECRET_RV)));
        codec::read_state(&secret)
    }

    /// A replace of the Secret read at `rv`: returns the state it holds.
    pub async fn takes_the_secret_written_over(&mut self, rv: &str) -> State {
        let (secret, send) = self.expects_object::<Secret>(Method::PUT, SECRET).await;
        assert_eq!(secret.metadata.resource_version.as_deref(), Some(rv));
        send.send_response(ok(&with_rv(secret.clone(), NEWER_SECRET_RV)));
        codec::read_state(&secret)
    }

    /// A replace of the Secret that another replica changed first: 409.
    pub async fn refuses_the_secret_written_over(&mut self, rv: &str) -> State {
        let (secret, send) = self.expects_object::<Secret>(Method::PUT, SECRET).await;
        assert_eq!(secret.metadata.resource_version.as_deref(), Some(rv));
        send.send_response(status(StatusCode::CONFLICT, "Conflict"));
        codec::read_state(&secret)
    }

    /// The validating and then the mutating configuration replaced with
    /// `s`'s bundle on every webhook and its generation, each under the
    /// resourceVersion it was read at.
    pub async fn takes_the_bundle_on_both(&mut self, s: &State) {
        self.takes_bundle::<ValidatingWebhookConfiguration>(VALIDATING, VALIDATING_RV, s)
            .await;
        self.takes_bundle::<MutatingWebhookConfiguration>(MUTATING, MUTATING_RV, s)
            .await;
    }

    async fn takes_bundle<K: Webhooks>(&mut self, path: &str, rv: &str, s: &State) {
        let (config, send) = self.expects_object::<K>(Method::PUT, path).await;
        let meta = config.meta();
        assert_eq!(meta.resource_version.as_deref(), Some(rv), "{path}");
        let generation = meta.annotations.as_ref().map(|a| a[GENERATION].clone());
        assert_eq!(generation, Some(s.generation.to_string()), "{path}");
        let hooks = config.client_configs();
        assert!(!hooks.is_empty());
        for cc in hooks {
            let bundle = cc.ca_bundle.as_ref().map(|b| b.0.as_slice());
            assert_eq!(bundle, Some(s.bundle().as_bytes()), "{path}");
            let tok = s.path_token.as_deref().expect("a published token");
            let want = token::with_token("/validate/connect", tok);
            let svc = cc.service.as_ref().expect("a service reference");
            assert_eq!(svc.path.as_deref(), Some(want.as_str()), "{path}");
        }
        send.send_response(ok(&config));
    }

    /// The check sends nothing more and ends without error. (The request
    /// stream ends when the check does: its client is dropped with it.)
    pub async fn sees_the_check_end(mut self, replica: &mut Replica) {
        if let Some((req, _)) = self.0.next_request().await {
            panic!("unexpected {} {}", req.method(), req.uri());
        }
        (&mut replica.check).await.unwrap().unwrap();
    }

    async fn answers<T: Serialize>(&mut self, method: Method, path: &str, object: &T) {
        let (_, send) = self.expects(method, path).await;
        send.send_response(ok(object));
    }

    async fn expects_object<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
    ) -> (T, SendResponse<Response<Body>>) {
        let (body, send) = self.expects(method, path).await;
        let object = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
        (object, send)
    }

    async fn expects(
        &mut self,
        method: Method,
        path: &str,
    ) -> (bytes::Bytes, SendResponse<Response<Body>>) {
        let Some((req, send)) = self.0.next_request().await else {
            panic!("expected {method} {path}; the check ended");
        };
        assert_eq!((req.method(), req.uri().path()), (&method, path));
        (req.into_body().collect_bytes().await.unwrap(), send)
    }
}

fn config_meta(rv: &str, generation: Option<u64>) -> ObjectMeta {
    ObjectMeta {
        name: Some("sessionguard".into()),
        resource_version: Some(rv.into()),
        annotations: generation.map(|g| BTreeMap::from([(GENERATION.into(), g.to_string())])),
        ..Default::default()
    }
}

fn validating_hook(name: &str, client_config: WebhookClientConfig) -> ValidatingWebhook {
    ValidatingWebhook {
        name: format!("{name}.sessionguard.io"),
        client_config,
        ..Default::default()
    }
}

fn with_rv(mut s: Secret, rv: &str) -> Secret {
    s.metadata.resource_version = Some(rv.into());
    s
}

fn ok<T: Serialize>(object: &T) -> Response<Body> {
    let body = serde_json::to_vec(object).unwrap();
    Response::builder().body(Body::from(body)).unwrap()
}

/// A failure as the API server words it.
fn status(code: StatusCode, reason: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": reason, "reason": reason, "code": code.as_u16(),
    });
    let body = Body::from(serde_json::to_vec(&body).unwrap());
    Response::builder().status(code).body(body).unwrap()
}
