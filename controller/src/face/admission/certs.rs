//! Certificates for the webhook server.
//!
//! Generated mode (default): a long-lived CA (`--webhook-ca-validity`) and a
//! short-lived serving certificate (`--webhook-cert-validity`) made with
//! rcgen live in one Secret shared by all replicas. The first replica to
//! create it wins (the others get 409 and read it); every change is a replace
//! under the resourceVersion it read, so exactly one replica makes it.
//!
//! The rule that keeps the API server from ever failing open: **a replica
//! only serves a certificate whose CA every webhook configuration already
//! trusts.**
//!
//! - Renewing the serving certificate re-signs it with the same CA, so the
//!   caBundle does not change and the new certificate is trusted the moment
//!   it exists.
//! - Rotating the CA is two-phase. The new CA is first added to the bundle
//!   (old and new both trusted) and published; only when every configuration
//!   has shown it for one check interval (the API server's webhook client
//!   picks configuration changes up through a watch) does the serving
//!   certificate move to it. Old CAs stay in the bundle until they expire,
//!   so a replica still serving an older certificate stays trusted.
//! - The bundle carries a generation, written next to it on the webhook
//!   configurations; a replica holding an older Secret never overwrites a
//!   newer bundle (resourceVersions of different objects cannot be ordered,
//!   our own counter can). A Secret whose generation is below the published
//!   one (restored from a backup) moves past it, so its bundle is published
//!   again instead of being held back forever.
//! - Each check reads both configurations once; the write reuses what was
//!   read, under its resourceVersion (409 when it changed since: retried the
//!   next check).
//!
//! The CA keys live in the Secret (`state.json`), readable by the controller
//! only (its Role names that one Secret).
//!
//! Mounted mode (`--webhook-cert-dir`, e.g. cert-manager): tls.crt/tls.key are
//! re-read every check; the caBundle is cert-manager's business.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use sessionguard_core::interaction::{plus, rfc3339, until};

use super::WebhookConfig;
use super::metrics::Metrics;
use super::tls::Resolver;
use crate::error::{Error, Result};

/// Secret annotations, for people (`kubectl get secret -o yaml`) and tests;
/// `state.json` is what the controller reads.
pub const NOT_AFTER: &str = "sessionguard.io/not-after";
pub const SANS: &str = "sessionguard.io/sans";
/// On the Secret and on both webhook configurations: the bundle's version.
pub const GENERATION: &str = "sessionguard.io/ca-bundle-generation";
const CA_BUNDLE: &str = "ca-bundle.crt";
const STATE: &str = "state.json";

pub enum Source {
    Files(PathBuf),
    Secret {
        namespace: String,
        sans: Vec<String>,
    },
}

/// The names the serving certificate must cover.
pub fn sans(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
    let mut v = vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    v.extend(
        extra
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
    );
    v
}

/// Lifetimes and pacing of the generated certificates.
#[derive(Clone, Copy, Debug)]
struct Timing {
    leaf_validity: Duration,
    renew_before: Duration,
    ca_validity: Duration,
    /// How long every configuration must have trusted a new CA before the
    /// serving certificate moves to it.
    propagation: Duration,
}

impl Timing {
    fn from_config(c: &WebhookConfig) -> Self {
        Self {
            leaf_validity: c.cert_validity,
            renew_before: c.cert_renew_before,
            ca_validity: c.ca_validity,
            propagation: c.cert_check_interval,
        }
    }

    /// Start a CA rotation when the newest CA has less than this left: enough
    /// for a full serving certificate plus its renewal margin (so no
    /// certificate is cut short by its CA), but never more than half the CA's
    /// life (else a short CA would rotate on every check).
    fn ca_rotate_before(&self) -> Duration {
        self.leaf_validity
            .saturating_add(self.renew_before)
            .min(self.ca_validity / 2)
    }
}

/// One CA in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ca {
    /// Its common name, unique per CA; the serving certificate names its issuer by it.
    pub name: String,
    pub cert_pem: String,
    /// `None` for a CA taken over from the older Secret format, which never
    /// stored the key: trusted until it expires, never signs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    pub not_after: Timestamp,
    /// When every webhook configuration was first seen trusting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_at: Option<Timestamp>,
}

/// The serving certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
    pub sans: Vec<String>,
    /// The name of the CA that signed it.
    pub issuer: String,
}

/// Everything in the Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    /// Oldest first; every one of them is in the bundle.
    pub cas: Vec<Ca>,
    pub leaf: Option<Leaf>,
    /// Bumped whenever the bundle changes.
    pub generation: u64,
}

impl State {
    /// The caBundle: every CA, oldest first.
    fn bundle(&self) -> String {
        self.cas
            .iter()
            .map(|c| format!("{}\n", c.cert_pem.trim()))
            .collect()
    }

    /// The CA that signed the serving certificate.
    fn issuer(&self) -> Option<&Ca> {
        let leaf = self.leaf.as_ref()?;
        self.cas.iter().find(|c| c.name == leaf.issuer)
    }
}

/// What the webhook configurations trust right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Published {
    /// One set of CA certificates (DER) per webhook of every configuration
    /// found (none before the chart created them).
    bundles: Vec<BTreeSet<Vec<u8>>>,
    /// The highest bundle generation among them.
    generation: u64,
}

impl Published {
    /// Does every webhook trust this CA? Vacuously true when there is no
    /// configuration: nobody calls the webhooks, so nobody can fail open.
    fn trusts(&self, ca_pem: &str) -> bool {
        let Some(der) = ders(ca_pem).into_iter().next() else {
            return false;
        };
        self.bundles.iter().all(|b| b.contains(&der))
    }
}

/// The certificates (DER) in a PEM text; unreadable parts are skipped.
pub fn ders(pem: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(|c| c.ok())
        .map(|c| c.as_ref().to_vec())
        .collect()
}

fn rc(e: rcgen::Error) -> Error {
    Error::Webhook(format!("generating the webhook certificate: {e}"))
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .map_err(|e| Error::Webhook(format!("certificate time {t}: {e}")))
}

/// The CA's parameters. Signing needs only its name, key usages and key
/// identifier method, all fixed here, so a CA read back from the Secret
/// signs exactly like the one generated.
fn ca_params(name: &str) -> CertificateParams {
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca
}

/// A new CA valid for `validity` from `now` (backdated 5 minutes for clock skew).
fn generate_ca(validity: Duration, now: Timestamp) -> Result<Ca> {
    let name = format!("sessionguard-webhook-ca-{}", now.as_nanosecond());
    let not_after = plus(now, validity);
    let mut params = ca_params(&name);
    params.not_before = offset(now - SignedDuration::from_mins(5))?;
    params.not_after = offset(not_after)?;
    let key = KeyPair::generate().map_err(rc)?;
    let cert = params.self_signed(&key).map_err(rc)?;
    Ok(Ca {
        name,
        cert_pem: cert.pem(),
        key_pem: Some(key.serialize_pem()),
        not_after,
        trusted_at: None,
    })
}

/// A serving certificate for `sans` signed by `ca`, valid until `not_after`.
fn sign_leaf(ca: &Ca, sans: &[String], not_after: Timestamp, now: Timestamp) -> Result<Leaf> {
    let ca_key = ca
        .key_pem
        .as_deref()
        .ok_or_else(|| Error::Webhook(format!("CA {} has no key to sign with", ca.name)))?;
    let issuer = Issuer::new(ca_params(&ca.name), KeyPair::from_pem(ca_key).map_err(rc)?);
    let mut leaf = CertificateParams::new(sans.to_vec()).map_err(rc)?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        sans.first()
            .cloned()
            .unwrap_or_else(|| "sessionguard-webhook".into()),
    );
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = offset(now - SignedDuration::from_mins(5))?;
    leaf.not_after = offset(not_after)?;
    let key = KeyPair::generate().map_err(rc)?;
    let cert = leaf.signed_by(&key, &issuer).map_err(rc)?;
    Ok(Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
        sans: sans.to_vec(),
        issuer: ca.name.clone(),
    })
}

/// A CA and a serving certificate signed by it, in one go (tests, bench).
#[derive(Clone, Debug)]
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
}

pub fn generate(sans: &[String], validity: Duration, now: Timestamp) -> Result<Generated> {
    let ca = generate_ca(validity, now)?;
    let leaf = sign_leaf(&ca, sans, ca.not_after, now)?;
    Ok(Generated {
        ca_pem: ca.cert_pem,
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
        not_after: leaf.not_after,
    })
}

/// What the Secret should hold after this check: the whole rotation policy,
/// without I/O (only key generation), run by whichever replica checks.
fn next_state(
    current: Option<&State>,
    published: &Published,
    sans: &[String],
    t: &Timing,
    now: Timestamp,
) -> Result<State> {
    let mut s = current.cloned().unwrap_or_else(|| State {
        generation: published.generation,
        ..State::default()
    });
    let bundle_before = s.bundle();

    for ca in &mut s.cas {
        if ca.trusted_at.is_none() && published.trusts(&ca.cert_pem) {
            ca.trusted_at = Some(now);
        }
    }
    // An expired CA can only vouch for expired certificates.
    s.cas.retain(|c| c.not_after > now);
    let rotate = match s.cas.last() {
        None => true,
        Some(c) => c.key_pem.is_none() || until(now, c.not_after) < t.ca_rotate_before(),
    };
    if rotate {
        s.cas.push(generate_ca(t.ca_validity, now)?);
    }

    // Sign with the newest CA every configuration has trusted for a while;
    // with no usable certificate at all (first start, or everything
    // expired) with the newest CA: there is no trusted certificate to lose.
    let ready = |c: &&Ca| {
        c.key_pem.is_some()
            && c.trusted_at
                .is_some_and(|at| now >= plus(at, t.propagation))
    };
    let usable = s
        .leaf
        .as_ref()
        .is_some_and(|l| l.not_after > now && s.cas.iter().any(|c| c.name == l.issuer));
    let signer = s.cas.iter().rev().find(ready).cloned().or_else(|| {
        (!usable)
            .then(|| s.cas.iter().rev().find(|c| c.key_pem.is_some()).cloned())
            .flatten()
    });
    if let Some(ca) = signer {
        let not_after = plus(now, t.leaf_validity).min(ca.not_after);
        let renew = match &s.leaf {
            None => true,
            Some(l) => {
                !usable
                    || l.sans != sans
                    || l.issuer != ca.name
                    // Renewing only helps if the new one lasts longer (it
                    // cannot outlive its CA).
                    || (until(now, l.not_after) <= t.renew_before && not_after > l.not_after)
            }
        };
        if renew {
            s.leaf = Some(sign_leaf(&ca, sans, not_after, now)?);
        }
    }
    // A Secret behind what is published was rolled back (restored from a
    // backup): moving past the published generation lets its bundle be
    // published again (else every replica would find it stale forever).
    if s.bundle() != bundle_before || s.generation < published.generation {
        s.generation = s.generation.max(published.generation) + 1;
    }
    Ok(s)
}

/// Should a replica serve the Secret's certificate? Only once every
/// configuration trusts its CA, unless it serves nothing valid yet (then
/// there is nothing to lose).
fn should_serve(s: &State, published: &Published, serving_valid: bool) -> bool {
    if !serving_valid {
        return s.leaf.is_some();
    }
    s.issuer().is_some_and(|ca| published.trusts(&ca.cert_pem))
}

/// What to do with one configuration's caBundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BundleAction {
    /// Already ours.
    Current,
    Write,
    /// It holds a newer generation than our Secret: written by a replica
    /// that read a newer Secret. Never overwrite it; re-read the Secret (a
    /// Secret that really is older moves past it, see [`next_state`]).
    Stale,
}

/// `ours`: our Secret's generation; `theirs`: the configuration's;
/// `all_current`: every webhook in it already holds our bundle.
fn bundle_action(ours: u64, theirs: Option<u64>, all_current: bool) -> BundleAction {
    if theirs.is_some_and(|g| g > ours) {
        return BundleAction::Stale;
    }
    if theirs == Some(ours) && all_current {
        return BundleAction::Current;
    }
    BundleAction::Write
}

fn data(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// Reads the Secret; one written by an older version (no `state.json`, no CA
/// key) becomes a state whose CA is kept for trust only, so the next check
/// starts a regular two-phase rotation away from it.
fn read_state(s: &Secret) -> State {
    if let Ok(st) = serde_json::from_str::<State>(&data(s, STATE)) {
        return st;
    }
    let ann = s.metadata.annotations.clone().unwrap_or_default();
    let (cert_pem, key_pem) = (data(s, "tls.crt"), data(s, "tls.key"));
    // The old format's ca.crt held exactly its one CA.
    let ca_pem = Some(data(s, "ca.crt"))
        .filter(|p| ders(p).len() == 1)
        .map(|p| p.trim().to_string() + "\n");
    let not_after = ann.get(NOT_AFTER).and_then(|v| v.parse().ok());
    let (Some(ca_pem), Some(not_after)) = (ca_pem, not_after) else {
        return State::default();
    };
    const LEGACY: &str = "sessionguard-webhook-ca-legacy";
    State {
        // The old format gave its CA and serving certificate the same validity.
        cas: vec![Ca {
            name: LEGACY.into(),
            cert_pem: ca_pem,
            key_pem: None,
            not_after,
            trusted_at: None,
        }],
        leaf: (!cert_pem.is_empty() && !key_pem.is_empty()).then(|| Leaf {
            cert_pem,
            key_pem,
            not_after,
            sans: ann
                .get(SANS)
                .map(|v| v.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            issuer: LEGACY.into(),
        }),
        generation: 0,
    }
}

/// The Secret holding `s`: `tls.crt`/`tls.key`/`ca.crt` as a
/// `kubernetes.io/tls` Secret has them, `ca-bundle.crt` for people, and
/// `state.json`, what the controller reads back.
fn secret(name: &str, ns: &str, s: &State) -> Result<Secret> {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let state = serde_json::to_string(s)
        .map_err(|e| Error::Webhook(format!("encoding the webhook certificate state: {e}")))?;
    let mut data = BTreeMap::from([
        (CA_BUNDLE.to_string(), bytes(&s.bundle())),
        (STATE.to_string(), bytes(&state)),
    ]);
    let mut annotations = BTreeMap::from([(GENERATION.to_string(), s.generation.to_string())]);
    if let Some(l) = &s.leaf {
        data.insert("tls.crt".into(), bytes(&l.cert_pem));
        data.insert("tls.key".into(), bytes(&l.key_pem));
        annotations.insert(NOT_AFTER.into(), rfc3339(l.not_after));
        annotations.insert(SANS.into(), l.sans.join(","));
    }
    if let Some(ca) = s.issuer() {
        data.insert("ca.crt".into(), bytes(&ca.cert_pem));
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            annotations: Some(annotations),
            labels: Some(BTreeMap::from([(
                sessionguard_core::keys::MANAGED_BY.to_string(),
                sessionguard_core::keys::MANAGER.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    })
}

/// What changed between two states, for the log.
fn describe(old: Option<&State>, new: &State) -> Vec<String> {
    let Some(old) = old.filter(|o| !o.cas.is_empty()) else {
        return vec!["generated the webhook CA and serving certificate".into()];
    };
    let mut out = vec![];
    let names = |s: &State| -> Vec<String> { s.cas.iter().map(|c| c.name.clone()).collect() };
    let (before, after) = (names(old), names(new));
    for n in after.iter().filter(|n| !before.contains(n)) {
        out.push(format!(
            "added CA {n} to the caBundle (generation {}); the serving certificate moves to it once every webhook configuration trusts it",
            new.generation
        ));
    }
    for n in before.iter().filter(|n| !after.contains(n)) {
        out.push(format!("dropped expired CA {n} from the caBundle"));
    }
    match (&old.leaf, &new.leaf) {
        (Some(a), Some(b)) if a.issuer != b.issuer => out.push(format!(
            "moved the webhook serving certificate to CA {} (valid until {})",
            b.issuer,
            rfc3339(b.not_after)
        )),
        (Some(a), Some(b)) if a != b => out.push(format!(
            "renewed the webhook serving certificate with the same CA {} (valid until {}); caBundle unchanged",
            b.issuer,
            rfc3339(b.not_after)
        )),
        (None, Some(b)) => out.push(format!(
            "signed a webhook serving certificate with CA {}",
            b.issuer
        )),
        _ => {}
    }
    if new.generation > old.generation && new.bundle() == old.bundle() {
        out.push(format!(
            "moved the caBundle generation from {} to {}, past the webhook configurations' (the Secret is older than they are: restored from a backup?); its caBundle is published again",
            old.generation, new.generation
        ));
    }
    if out.is_empty() && old != new {
        out.push("noted that every webhook configuration trusts the new CA".into());
    }
    out
}

pub struct Manager {
    pub client: Client,
    pub source: Source,
    pub resolver: Arc<Resolver>,
    pub config: WebhookConfig,
    pub metrics: Metrics,
    /// Expiry of the certificate being served, if any.
    pub serving_until: std::sync::Mutex<Option<Timestamp>>,
}

fn kube_err(op: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { op, source }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Manager {
    pub async fn run(self) {
        loop {
            tokio::time::sleep(self.config.cert_check_interval).await;
            if let Err(e) = self.tick().await {
                self.metrics.cert_errors.inc();
                tracing::warn!(error = %e, "webhook certificate check failed; retrying");
            }
        }
    }

    /// Loads (or creates, or renews) the certificate, makes the webhook
    /// configurations trust its CA and, once they do, serves it.
    pub async fn tick(&self) -> Result<()> {
        match &self.source {
            Source::Files(dir) => {
                let read = |f: &str| {
                    let p = dir.join(f);
                    std::fs::read_to_string(&p)
                        .map_err(|e| Error::Webhook(format!("reading {}: {e}", p.display())))
                };
                if self.resolver.set(&read("tls.crt")?, &read("tls.key")?)? {
                    tracing::info!(dir = %dir.display(), "webhook certificate loaded from files");
                }
                Ok(())
            }
            Source::Secret { namespace, sans } => {
                let mut configs = Configurations::read(&self.client, &self.config).await?;
                let state = self
                    .ensure_secret(namespace, sans, &configs.published())
                    .await?;
                if let Err(e) = configs.write(&state).await {
                    // A configuration changed since we read it (409) or the
                    // write failed: retried next check. Meanwhile serve
                    // against what the configurations held as last read or
                    // written (failurePolicy Ignore admits if it falls short).
                    self.metrics.cert_errors.inc();
                    tracing::warn!(error = %e, "could not update the webhook configurations' caBundle");
                }
                self.serve(&state, &configs.published())
            }
        }
    }

    fn serve(&self, state: &State, published: &Published) -> Result<()> {
        let Some(leaf) = &state.leaf else {
            return Ok(());
        };
        let now = Timestamp::now();
        let valid = self
            .serving_until
            .lock()
            .expect("serving lock")
            .is_some_and(|t| t > now);
        if !should_serve(state, published, valid) {
            tracing::info!(issuer = %leaf.issuer, "not serving the new webhook certificate yet: a webhook configuration does not trust its CA yet");
            return Ok(());
        }
        if self.resolver.set(&leaf.cert_pem, &leaf.key_pem)? {
            tracing::info!(issuer = %leaf.issuer, not_after = %rfc3339(leaf.not_after), "webhook certificate installed");
        }
        *self.serving_until.lock().expect("serving lock") = Some(leaf.not_after);
        self.metrics.cert_not_after.set(leaf.not_after.as_second());
        Ok(())
    }

    async fn ensure_secret(
        &self,
        ns: &str,
        sans: &[String],
        published: &Published,
    ) -> Result<State> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let name = &self.config.secret;
        let timing = Timing::from_config(&self.config);
        for _ in 0..3 {
            let now = Timestamp::now();
            let current = api
                .get_opt(name)
                .await
                .map_err(kube_err("get_webhook_secret"))?;
            let old = current.as_ref().map(read_state);
            let next = next_state(old.as_ref(), published, sans, &timing, now)?;
            if old.as_ref() == Some(&next) {
                return Ok(next);
            }
            let mut s = secret(name, ns, &next)?;
            let result = match &current {
                None => api.create(&PostParams::default(), &s).await,
                Some(existing) => {
                    s.metadata.resource_version = existing.metadata.resource_version.clone();
                    api.replace(name, &PostParams::default(), &s).await
                }
            };
            match result {
                Ok(_) => {
                    for what in describe(old.as_ref(), &next) {
                        tracing::info!(secret = %name, generation = next.generation, "{what}");
                    }
                    return Ok(next);
                }
                // Another replica changed it first: read its result.
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(kube_err("write_webhook_secret")(e)),
            }
        }
        Err(Error::Webhook(format!(
            "Secret {ns}/{name} kept changing under us; will retry"
        )))
    }
}

/// A webhook configuration kind: its webhooks each carry a caBundle.
trait Webhooks:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
    fn client_configs(&self) -> Vec<&WebhookClientConfig>;
    fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig>;
}

impl Webhooks for ValidatingWebhookConfiguration {
    fn client_configs(&self) -> Vec<&WebhookClientConfig> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| &w.client_config)
            .collect()
    }
    fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig> {
        let hooks = self.webhooks.iter_mut().flatten();
        hooks.map(|w| &mut w.client_config).collect()
    }
}

impl Webhooks for MutatingWebhookConfiguration {
    fn client_configs(&self) -> Vec<&WebhookClientConfig> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| &w.client_config)
            .collect()
    }
    fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig> {
        let hooks = self.webhooks.iter_mut().flatten();
        hooks.map(|w| &mut w.client_config).collect()
    }
}

/// One webhook configuration as last read (or written) this check.
struct Configuration<K> {
    api: Api<K>,
    name: String,
    /// `None` when it does not exist (before the chart created it).
    object: Option<K>,
}

impl<K: Webhooks> Configuration<K> {
    async fn read(client: &Client, name: &str) -> Result<Self> {
        let api = Api::<K>::all(client.clone());
        let object = api
            .get_opt(name)
            .await
            .map_err(kube_err("get_webhook_configuration"))?;
        Ok(Self {
            api,
            name: name.to_string(),
            object,
        })
    }

    /// The bundle generation written on it, if any.
    fn generation(&self) -> Option<u64> {
        let annotations = self.object.as_ref()?.meta().annotations.as_ref()?;
        annotations.get(GENERATION)?.parse().ok()
    }

    /// Adds what its webhooks trust to `p`.
    fn publish_into(&self, p: &mut Published) {
        let Some(c) = &self.object else { return };
        p.generation = p.generation.max(self.generation().unwrap_or(0));
        p.bundles.extend(c.client_configs().into_iter().map(|cc| {
            cc.ca_bundle
                .as_ref()
                .map(|b| ders(&String::from_utf8_lossy(&b.0)).into_iter().collect())
                .unwrap_or_default()
        }));
    }

    /// Sets `bundle` (generation `ours`) on every webhook and the generation
    /// annotation, unless it is current or newer (see [`bundle_action`]).
    /// A replace of the object read, under its resourceVersion: 409 when it
    /// changed since.
    async fn write(&mut self, bundle: &ByteString, ours: u64) -> Result<()> {
        let theirs = self.generation();
        let name = &self.name;
        let Some(c) = &mut self.object else {
            return Ok(());
        };
        let all_current = c
            .client_configs()
            .into_iter()
            .all(|cc| cc.ca_bundle.as_ref() == Some(bundle));
        match bundle_action(ours, theirs, all_current) {
            BundleAction::Current => {}
            BundleAction::Stale => {
                tracing::warn!(%name, ours, theirs = ?theirs, "a newer caBundle is published than our Secret's; not overwriting it (re-reading the Secret next check)");
            }
            BundleAction::Write => {
                for cc in c.client_configs_mut() {
                    cc.ca_bundle = Some(bundle.clone());
                }
                c.meta_mut()
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(GENERATION.into(), ours.to_string());
                *c = self
                    .api
                    .replace(name, &PostParams::default(), c)
                    .await
                    .map_err(kube_err("replace_webhook_ca_bundle"))?;
                tracing::info!(%name, generation = ours, "caBundle updated");
            }
        }
        Ok(())
    }
}

/// Both webhook configurations, read once per check.
struct Configurations {
    validating: Configuration<ValidatingWebhookConfiguration>,
    mutating: Configuration<MutatingWebhookConfiguration>,
}

impl Configurations {
    async fn read(client: &Client, config: &WebhookConfig) -> Result<Self> {
        Ok(Self {
            validating: Configuration::read(client, &config.validating_config).await?,
            mutating: Configuration::read(client, &config.mutating_config).await?,
        })
    }

    /// What they trust, as last read or written.
    fn published(&self) -> Published {
        let mut p = Published::default();
        self.validating.publish_into(&mut p);
        self.mutating.publish_into(&mut p);
        p
    }

    /// Publishes `state`'s bundle on both (each on its own: a conflict on
    /// one does not hold the other back); the first error, if any.
    async fn write(&mut self, state: &State) -> Result<()> {
        let bundle = ByteString(state.bundle().into_bytes());
        let validating = self.validating.write(&bundle, state.generation).await;
        let mutating = self.mutating.write(&bundle, state.generation).await;
        validating.and(mutating)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    const DAY: Duration = Duration::from_secs(86_400);
    const HOST: &str = "sg-webhook.sg.svc";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn names() -> Vec<String> {
        sans("sg-webhook", "sg", &["127.0.0.1".into()])
    }

    fn timing(ca_days: u64) -> Timing {
        Timing {
            leaf_validity: 90 * DAY,
            renew_before: 30 * DAY,
            ca_validity: DAY * ca_days as u32,
            propagation: Duration::from_secs(30),
        }
    }

    /// Would the API server, trusting `bundle`, accept `leaf` at `now`?
    fn verifies(leaf: &Leaf, bundle: &str, now: Timestamp) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for d in ders(bundle) {
            roots.add(CertificateDer::from(d)).unwrap();
        }
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let end = CertificateDer::from(ders(&leaf.cert_pem).remove(0));
        v.verify_server_cert(
            &end,
            &[],
            &ServerName::try_from(HOST.to_string()).unwrap(),
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(now.as_second() as u64)),
        )
        .is_ok()
    }

    /// Both configurations (three webhooks) holding `s`'s bundle.
    fn published(s: &State) -> Published {
        Published {
            bundles: vec![ders(&s.bundle()).into_iter().collect(); 3],
            generation: s.generation,
        }
    }

    fn step(s: &State, p: &Published, t: &Timing, now: Timestamp) -> State {
        next_state(Some(s), p, &names(), t, now).unwrap()
    }

    #[test]
    fn renewing_the_serving_certificate_keeps_the_ca_bundle() {
        let t = timing(1825);
        let t0 = ts("2026-11-24T01:00:00Z");
        let s0 = next_state(None, &Published::default(), &names(), &t, t0).unwrap();
        assert_eq!((s0.cas.len(), s0.generation), (1, 1));
        let leaf0 = s0.leaf.clone().unwrap();
        assert_eq!(leaf0.not_after, ts("2027-02-22T01:00:00Z"));
        assert!(verifies(&leaf0, &s0.bundle(), t0));
        crate::face::admission::tls::certified_key(&leaf0.cert_pem, &leaf0.key_pem).unwrap();

        // Published: trust is noted, nothing else moves.
        let s1 = step(&s0, &published(&s0), &t, t0 + SignedDuration::from_mins(1));
        assert!(s1.cas[0].trusted_at.is_some());
        assert_eq!((s1.leaf.as_ref(), s1.generation), (Some(&leaf0), 1));

        // 29 days left: a new serving certificate from the same CA.
        let later = ts("2027-01-24T01:00:00Z");
        let s2 = step(&s1, &published(&s1), &t, later);
        let leaf2 = s2.leaf.clone().unwrap();
        assert_ne!(leaf2.cert_pem, leaf0.cert_pem);
        assert_eq!(leaf2.issuer, leaf0.issuer);
        assert_eq!(
            (s2.bundle(), s2.generation),
            (s1.bundle(), 1),
            "bundle unchanged"
        );
        // Trusted by what the API server already has: safe to serve at once.
        assert!(verifies(&leaf2, &s1.bundle(), later));
        assert!(should_serve(&s2, &published(&s1), true));

        // New names: re-signed, same CA.
        let s3 = next_state(Some(&s2), &published(&s2), &names()[..2], &t, later).unwrap();
        assert_eq!(s3.leaf.as_ref().unwrap().sans, names()[..2]);
        assert_eq!(s3.bundle(), s2.bundle());
        // Nothing due: nothing changes (no write).
        assert_eq!(step(&s2, &published(&s2), &t, later), s2);
    }

    #[test]
    fn a_new_ca_is_trusted_everywhere_before_it_signs() {
        // CA 200 days: rotation starts with 100 days left.
        let t = timing(200);
        let t0 = ts("2026-01-01T00:00:00Z");
        let s = next_state(None, &Published::default(), &names(), &t, t0).unwrap();
        let s = step(&s, &published(&s), &t, t0 + SignedDuration::from_mins(1));
        let ca1 = s.cas[0].clone();

        let t1 = ts("2026-04-15T00:00:00Z"); // 99 days left on CA 1
        let old_view = published(&s);
        let s = step(&s, &old_view, &t, t1);
        assert_eq!(s.cas.len(), 2, "new CA added to the bundle");
        assert_eq!(s.generation, 2);
        assert_eq!(
            s.leaf.as_ref().unwrap().issuer,
            ca1.name,
            "the serving certificate stays with the CA the API server trusts"
        );

        // The configurations have not taken the new bundle (yet): no move.
        let s = step(&s, &old_view, &t, t1 + SignedDuration::from_mins(5));
        assert_eq!(s.leaf.as_ref().unwrap().issuer, ca1.name);
        assert!(s.cas[1].trusted_at.is_none());

        // They have it now; the move waits one propagation interval.
        let seen = t1 + SignedDuration::from_mins(6);
        let s = step(&s, &published(&s), &t, seen);
        assert_eq!(s.cas[1].trusted_at, Some(seen));
        assert_eq!(s.leaf.as_ref().unwrap().issuer, ca1.name);
        let moved_at = seen + SignedDuration::from_secs(30);
        let old_leaf = s.leaf.clone().unwrap();
        let s = step(&s, &published(&s), &t, moved_at);
        let leaf = s.leaf.clone().unwrap();
        assert_eq!(leaf.issuer, s.cas[1].name, "moved to the new CA");
        assert!(verifies(&leaf, &s.bundle(), moved_at));
        // The old CA stays: a replica still serving the old certificate is trusted.
        assert!(verifies(&old_leaf, &s.bundle(), moved_at));
        assert_eq!(s.generation, 2, "the bundle did not change for the move");
        // A replica that sees a configuration without the new CA does not serve it.
        assert!(!should_serve(&s, &old_view, true));
        assert!(should_serve(&s, &published(&s), true));
        assert!(
            should_serve(&s, &old_view, false),
            "nothing valid served yet"
        );

        // CA 1 expires: it leaves the bundle.
        let gone = ts("2026-07-21T00:00:00Z");
        let s = step(&s, &published(&s), &t, gone);
        assert_eq!(s.cas.len(), 1);
        assert_eq!(s.generation, 3);
        assert!(verifies(s.leaf.as_ref().unwrap(), &s.bundle(), gone));
    }

    #[test]
    fn short_cas_do_not_churn() {
        // The e2e's settings: CA 60s, serving 30s renewed with 20s left.
        let t = Timing {
            leaf_validity: Duration::from_secs(30),
            renew_before: Duration::from_secs(20),
            ca_validity: Duration::from_secs(60),
            propagation: Duration::from_secs(1),
        };
        let mut now = ts("2026-01-01T00:00:00Z");
        let mut s = next_state(None, &Published::default(), &names(), &t, now).unwrap();
        let (mut writes, mut max_cas) = (0, 0);
        for _ in 0..120 {
            now += SignedDuration::from_secs(1);
            let next = step(&s, &published(&s), &t, now);
            writes += usize::from(next != s);
            s = next;
            max_cas = max_cas.max(s.cas.len());
            let leaf = s.leaf.as_ref().unwrap();
            assert!(leaf.not_after > now, "always a valid certificate");
            assert!(verifies(leaf, &s.bundle(), now));
        }
        assert!(writes < 40, "{writes} Secret writes in 120 s");
        assert!(max_cas <= 3, "{max_cas} CAs in the bundle");
    }

    #[test]
    fn a_replica_with_an_older_secret_never_overwrites_a_newer_bundle() {
        use BundleAction::*;
        assert_eq!(bundle_action(2, Some(3), false), Stale);
        assert_eq!(bundle_action(2, Some(3), true), Stale);
        assert_eq!(bundle_action(3, Some(3), true), Current);
        assert_eq!(bundle_action(3, Some(2), false), Write);
        assert_eq!(bundle_action(3, Some(2), true), Write, "generation behind");
        // Reset by hand or by a re-install: ours again.
        assert_eq!(bundle_action(3, Some(3), false), Write);
        assert_eq!(bundle_action(1, None, false), Write);
        assert_eq!(bundle_action(1, None, true), Write, "no generation yet");
        // A Secret recreated from scratch starts above what is published.
        let p = Published {
            bundles: vec![BTreeSet::new(); 3],
            generation: 7,
        };
        let s = next_state(
            None,
            &p,
            &names(),
            &timing(1825),
            ts("2026-01-01T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(s.generation, 8);
    }

    #[test]
    fn a_rolled_back_secret_is_published_again() {
        let t = timing(200);
        let t0 = ts("2026-01-01T00:00:00Z");
        let s = next_state(None, &Published::default(), &names(), &t, t0).unwrap();
        let backup = step(&s, &published(&s), &t, t0 + SignedDuration::from_mins(1));
        assert_eq!(backup.generation, 1);
        // A CA rotation starts and its bundle (generation 2) is published.
        let t1 = ts("2026-04-15T00:00:00Z");
        let newer = step(&backup, &published(&backup), &t, t1);
        assert_eq!((newer.cas.len(), newer.generation), (2, 2));
        let view = published(&newer);

        // The Secret is restored from the backup (generation 1).
        let later = t1 + SignedDuration::from_mins(1);
        let back_then = t0 + SignedDuration::from_mins(2);
        let restored = step(&backup, &view, &t, back_then);
        assert_eq!(
            restored.generation, 3,
            "moved past the published generation"
        );
        assert_eq!(restored.cas, backup.cas, "only the generation moved");
        assert_eq!(restored.leaf, backup.leaf);
        assert!(
            describe(Some(&backup), &restored)
                .iter()
                .any(|d| d.contains("from 1 to 3")),
            "{:?}",
            describe(Some(&backup), &restored)
        );
        // So it is written, not held back as stale.
        assert_eq!(
            bundle_action(restored.generation, Some(view.generation), false),
            BundleAction::Write
        );
        // Once published, nothing moves (no write on every check).
        let republished = published(&restored);
        assert_eq!(step(&restored, &republished, &t, back_then), restored);
        // Equal generations are not a rollback.
        assert_eq!(step(&newer, &view, &t, later).generation, 2);
    }

    #[test]
    fn the_secret_round_trips_and_an_old_format_secret_migrates() {
        let t = timing(1825);
        let t0 = ts("2026-11-24T01:00:00Z");
        let s = next_state(None, &Published::default(), &names(), &t, t0).unwrap();
        let sec = secret("tls", "sg", &s).unwrap();
        assert_eq!(read_state(&sec), s);
        let ann = sec.metadata.annotations.clone().unwrap();
        assert_eq!(ann[NOT_AFTER], "2027-02-22T01:00:00Z");
        assert_eq!(ann[GENERATION], "1");

        // The previous version: CA and serving certificate with one validity,
        // no CA key stored.
        let g = generate(&names(), 90 * DAY, t0).unwrap();
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        let old = Secret {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([
                    (NOT_AFTER.to_string(), rfc3339(g.not_after)),
                    (SANS.to_string(), names().join(",")),
                ])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("tls.crt".to_string(), bytes(&g.cert_pem)),
                ("tls.key".to_string(), bytes(&g.key_pem)),
                ("ca.crt".to_string(), bytes(&g.ca_pem)),
            ])),
            ..Default::default()
        };
        let legacy = read_state(&old);
        assert!(legacy.cas[0].key_pem.is_none());
        let served = legacy.leaf.clone().unwrap();
        assert!(verifies(&served, &legacy.bundle(), t0));
        let view = published(&legacy);
        let s = step(&legacy, &view, &t, t0);
        assert_eq!(s.cas.len(), 2, "a CA with a key is added");
        assert_eq!(
            s.leaf.as_ref(),
            Some(&served),
            "the old certificate is served meanwhile"
        );
        let s = step(&s, &published(&s), &t, t0 + SignedDuration::from_mins(1));
        let s = step(&s, &published(&s), &t, t0 + SignedDuration::from_mins(2));
        assert_eq!(s.leaf.as_ref().unwrap().issuer, s.cas[1].name);
        assert!(
            verifies(&served, &s.bundle(), t0),
            "old certificate still trusted"
        );
    }
}
