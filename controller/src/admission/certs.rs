//! Certificates for the webhook server.
//!
//! Generated mode (default): a CA and a serving certificate made with rcgen
//! live in one Secret shared by all replicas. The first replica to create it
//! wins (the others get 409 and read it); renewal replaces it under the
//! resourceVersion it read, so exactly one replica renews. The CA's PEM goes
//! into every webhook's caBundle; on renewal the bundle holds the new and the
//! previous CA, so replicas that still serve the old certificate until their
//! next check stay trusted. The CA key is never stored: a renewal makes a new
//! CA and serving certificate together.
//!
//! Mounted mode (`--webhook-cert-dir`, e.g. cert-manager): tls.crt/tls.key are
//! re-read every check; the caBundle is cert-manager's business.

use std::collections::BTreeMap;
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
use sessionguard_core::interaction::rfc3339;

use super::WebhookConfig;
use super::metrics::Metrics;
use super::tls::Resolver;
use crate::error::{Error, Result};

pub const NOT_AFTER: &str = "sessionguard.io/not-after";
pub const SANS: &str = "sessionguard.io/sans";
const CA_BUNDLE: &str = "ca-bundle.crt";

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

/// A freshly generated CA and serving certificate (PEM).
#[derive(Clone, Debug)]
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
}

fn rc(e: rcgen::Error) -> Error {
    Error::Webhook(format!("generating the webhook certificate: {e}"))
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .map_err(|e| Error::Webhook(format!("certificate time {t}: {e}")))
}

pub fn generate(sans: &[String], validity: Duration, now: Timestamp) -> Result<Generated> {
    let not_before = now - SignedDuration::from_mins(5);
    let not_after = now
        .checked_add(SignedDuration::try_from(validity).unwrap_or(SignedDuration::MAX))
        .map_err(|e| Error::Webhook(format!("--webhook-cert-validity too large: {e}")))?;

    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("sessionguard-webhook-ca-{}", now.as_second()),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = offset(not_before)?;
    ca.not_after = offset(not_after)?;
    let ca_key = KeyPair::generate().map_err(rc)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(rc)?;
    let issuer = Issuer::new(ca, ca_key);

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
    leaf.not_before = offset(not_before)?;
    leaf.not_after = offset(not_after)?;
    let key = KeyPair::generate().map_err(rc)?;
    let cert = leaf.signed_by(&key, &issuer).map_err(rc)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// What a replica needs from the Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_bundle: String,
    pub not_after: Option<Timestamp>,
    pub sans: String,
}

fn data(s: &Secret, key: &str) -> String {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

pub fn stored(s: &Secret) -> Stored {
    let ann = s.metadata.annotations.clone().unwrap_or_default();
    let mut ca_bundle = data(s, CA_BUNDLE);
    if ca_bundle.is_empty() {
        ca_bundle = data(s, "ca.crt");
    }
    Stored {
        cert_pem: data(s, "tls.crt"),
        key_pem: data(s, "tls.key"),
        ca_bundle,
        not_after: ann.get(NOT_AFTER).and_then(|v| v.parse().ok()),
        sans: ann.get(SANS).cloned().unwrap_or_default(),
    }
}

/// Renew when the certificate is missing or unreadable, covers other names,
/// or has less than `renew_before` left.
pub fn needs_renewal(s: &Stored, sans: &[String], renew_before: Duration, now: Timestamp) -> bool {
    let Some(not_after) = s.not_after else {
        return true;
    };
    let renew_at = not_after
        .checked_sub(SignedDuration::try_from(renew_before).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MIN);
    s.cert_pem.is_empty() || s.key_pem.is_empty() || s.sans != sans.join(",") || now >= renew_at
}

/// The Secret for `g`; the bundle also trusts `previous_ca` (the CA being replaced).
pub fn secret(
    name: &str,
    ns: &str,
    sans: &[String],
    g: &Generated,
    previous_ca: Option<&str>,
) -> Secret {
    let mut bundle = g.ca_pem.clone();
    if let Some(prev) = previous_ca.map(str::trim).filter(|p| !p.is_empty()) {
        // Only the most recent predecessor: the one replicas may still serve.
        let first = prev
            .split_inclusive("-----END CERTIFICATE-----")
            .next()
            .unwrap_or(prev);
        bundle.push_str(first.trim());
        bundle.push('\n');
    }
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            annotations: Some(BTreeMap::from([
                (NOT_AFTER.to_string(), rfc3339(g.not_after)),
                (SANS.to_string(), sans.join(",")),
            ])),
            labels: Some(BTreeMap::from([(
                sessionguard_core::keys::MANAGED_BY.to_string(),
                sessionguard_core::keys::MANAGER.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), bytes(&g.cert_pem)),
            ("tls.key".to_string(), bytes(&g.key_pem)),
            ("ca.crt".to_string(), bytes(&g.ca_pem)),
            (CA_BUNDLE.to_string(), bytes(&bundle)),
        ])),
        ..Default::default()
    }
}

pub struct Manager {
    pub client: Client,
    pub source: Source,
    pub resolver: Arc<Resolver>,
    pub config: WebhookConfig,
    pub metrics: Metrics,
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

    /// Loads (or creates, or renews) the certificate, installs it and, in
    /// generated mode, makes the webhook configurations trust it.
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
                let s = self.ensure_secret(namespace, sans).await?;
                if self.resolver.set(&s.cert_pem, &s.key_pem)? {
                    tracing::info!(not_after = ?s.not_after.map(rfc3339), "webhook certificate installed");
                }
                if let Some(t) = s.not_after {
                    self.metrics.cert_not_after.set(t.as_second());
                }
                if let Err(e) = self.publish_ca_bundle(&s.ca_bundle).await {
                    // Keep serving: the configurations may not exist yet (the
                    // chart creates them), and Ignore admits meanwhile.
                    self.metrics.cert_errors.inc();
                    tracing::warn!(error = %e, "could not patch the webhook configurations' caBundle");
                }
                Ok(())
            }
        }
    }

    async fn ensure_secret(&self, ns: &str, sans: &[String]) -> Result<Stored> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let name = &self.config.secret;
        for _ in 0..3 {
            let now = Timestamp::now();
            let current = api
                .get_opt(name)
                .await
                .map_err(kube_err("get_webhook_secret"))?;
            match current {
                None => {
                    let g = generate(sans, self.config.cert_validity, now)?;
                    let s = secret(name, ns, sans, &g, None);
                    match api.create(&PostParams::default(), &s).await {
                        Ok(s) => {
                            tracing::info!(secret = %name, "generated the webhook CA and serving certificate");
                            return Ok(stored(&s));
                        }
                        // Another replica was first: use its certificate.
                        Err(e) if is_conflict(&e) => continue,
                        Err(e) => return Err(kube_err("create_webhook_secret")(e)),
                    }
                }
                Some(existing) => {
                    let st = stored(&existing);
                    if !needs_renewal(&st, sans, self.config.cert_renew_before, now) {
                        return Ok(st);
                    }
                    let g = generate(sans, self.config.cert_validity, now)?;
                    let prev_ca = data(&existing, "ca.crt");
                    let mut s = secret(name, ns, sans, &g, Some(&prev_ca));
                    s.metadata.resource_version = existing.metadata.resource_version.clone();
                    match api.replace(name, &PostParams::default(), &s).await {
                        Ok(s) => {
                            tracing::info!(secret = %name, "renewed the webhook CA and serving certificate");
                            return Ok(stored(&s));
                        }
                        // Another replica renewed first: read its result.
                        Err(e) if is_conflict(&e) => continue,
                        Err(e) => return Err(kube_err("renew_webhook_secret")(e)),
                    }
                }
            }
        }
        Err(Error::Webhook(format!(
            "Secret {ns}/{name} kept changing under us; will retry"
        )))
    }

    async fn publish_ca_bundle(&self, bundle: &str) -> Result<()> {
        let want = ByteString(bundle.as_bytes().to_vec());
        set_ca_bundle(
            Api::<ValidatingWebhookConfiguration>::all(self.client.clone()),
            &self.config.validating_config,
            &want,
            |c| {
                c.webhooks
                    .iter_mut()
                    .flatten()
                    .map(|w| &mut w.client_config)
                    .collect()
            },
        )
        .await?;
        set_ca_bundle(
            Api::<MutatingWebhookConfiguration>::all(self.client.clone()),
            &self.config.mutating_config,
            &want,
            |c| {
                c.webhooks
                    .iter_mut()
                    .flatten()
                    .map(|w| &mut w.client_config)
                    .collect()
            },
        )
        .await
    }
}

/// Sets `caBundle` on every webhook of one configuration, writing only when
/// something differs (replicas check every interval; most checks change nothing).
async fn set_ca_bundle<K>(
    api: Api<K>,
    name: &str,
    want: &ByteString,
    client_configs: fn(&mut K) -> Vec<&mut WebhookClientConfig>,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let Some(mut c) = api
        .get_opt(name)
        .await
        .map_err(kube_err("get_webhook_configuration"))?
    else {
        return Ok(());
    };
    let mut changed = false;
    for cc in client_configs(&mut c) {
        if cc.ca_bundle.as_ref() != Some(want) {
            cc.ca_bundle = Some(want.clone());
            changed = true;
        }
    }
    if changed {
        api.replace(name, &PostParams::default(), &c)
            .await
            .map_err(kube_err("replace_webhook_ca_bundle"))?;
        tracing::info!(%name, "caBundle updated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn generated_certificates_serve_and_renew_on_time() {
        let sans = sans("sg-webhook", "sg", &["127.0.0.1".into()]);
        assert_eq!(sans[3], "sg-webhook.sg.svc.cluster.local");
        let now = ts("2026-11-24T01:00:00Z");
        let g = generate(&sans, Duration::from_secs(90 * 86_400), now).unwrap();
        assert_eq!(g.not_after, ts("2027-02-22T01:00:00Z"));
        // rustls accepts the pair.
        crate::admission::tls::certified_key(&g.cert_pem, &g.key_pem).unwrap();

        let s = secret("tls", "sg", &sans, &g, None);
        let st = stored(&s);
        assert_eq!(st.ca_bundle, g.ca_pem);
        let month = Duration::from_secs(30 * 86_400);
        assert!(!needs_renewal(&st, &sans, month, now));
        assert!(needs_renewal(&st, &sans, month, ts("2027-01-24T01:00:00Z")));
        assert!(needs_renewal(&st, &sans[..2], month, now), "names changed");

        let g2 = generate(&sans, Duration::from_secs(90 * 86_400), now).unwrap();
        let renewed = stored(&secret("tls", "sg", &sans, &g2, Some(&g.ca_pem)));
        assert_eq!(
            renewed.ca_bundle.matches("BEGIN CERTIFICATE").count(),
            2,
            "new and previous CA"
        );
        assert!(renewed.ca_bundle.starts_with(&g2.ca_pem));
    }
}
