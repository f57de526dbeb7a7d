//! The caBundle publisher: reads what both webhook configurations trust,
//! and writes the Secret's bundle onto them when [`bundle_action`] says so.
//!
//! The same write puts the Secret's published path token into every
//! webhook's path (`clientConfig.service.path`, or the path of
//! `clientConfig.url`).
//!
//! Each check reads both configurations once; the write reuses what was
//! read, under its resourceVersion (409 when it changed since: retried the
//! next check).

use std::collections::BTreeSet;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::Client;
use kube::api::{Api, PostParams};
use sessionguard_core::certs::{Bundle, BundleAction, Published, State, bundle_action};

use super::codec::GENERATION;
use super::kube_err;
use super::pki::ders;
use crate::error::Result;
use crate::face::admission::WebhookConfig;
use crate::face::admission::token;

/// One webhook's caBundle: the CA certificates (DER) it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trusted(BTreeSet<Vec<u8>>);

impl Trusted {
    pub fn of_pem(pem: &str) -> Self {
        Self(ders(pem).into_iter().collect())
    }
}

impl Bundle for Trusted {
    fn holds(&self, cert_pem: &str) -> bool {
        ders(cert_pem).first().is_some_and(|d| self.0.contains(d))
    }
}

/// A webhook configuration kind: its webhooks each carry a caBundle.
pub trait Webhooks:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
    fn client_configs(&self) -> Vec<&WebhookClientConfig>;
    fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig>;
}

/// The two kinds differ in type only: their webhooks both keep the caBundle
/// at `webhooks[].clientConfig`.
macro_rules! webhooks {
    ($($kind:ty),+) => {$(
        impl Webhooks for $kind {
            fn client_configs(&self) -> Vec<&WebhookClientConfig> {
                let hooks = self.webhooks.iter().flatten();
                hooks.map(|w| &w.client_config).collect()
            }
            fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig> {
                let hooks = self.webhooks.iter_mut().flatten();
                hooks.map(|w| &mut w.client_config).collect()
            }
        }
    )+};
}

webhooks!(ValidatingWebhookConfiguration, MutatingWebhookConfiguration);

/// Does this webhook's path carry `tok`? (One with neither a service nor a
/// URL has no path to carry it: nothing to do.)
fn carries(cc: &WebhookClientConfig, tok: &str) -> bool {
    if let Some(svc) = &cc.service {
        let path = svc.path.as_deref().unwrap_or("");
        return token::with_token(path, tok) == path;
    }
    cc.url
        .as_deref()
        .is_none_or(|u| token::url_with_token(u, tok) == u)
}

fn put_token(cc: &mut WebhookClientConfig, tok: &str) {
    if let Some(svc) = &mut cc.service {
        svc.path = Some(token::with_token(svc.path.as_deref().unwrap_or(""), tok));
    } else if let Some(u) = &mut cc.url {
        *u = token::url_with_token(u, tok);
    }
}

/// Both webhook configurations, read once per check.
pub struct Configurations {
    validating: Configuration<ValidatingWebhookConfiguration>,
    mutating: Configuration<MutatingWebhookConfiguration>,
}

// === impl Configurations ===

impl Configurations {
    pub async fn read(client: &Client, config: &WebhookConfig) -> Result<Self> {
        Ok(Self {
            validating: Configuration::read(client, &config.validating_config).await?,
            mutating: Configuration::read(client, &config.mutating_config).await?,
        })
    }

    /// What they trust, as last read or written.
    pub fn published(&self) -> Published<Trusted> {
        let mut p = Published::default();
        self.validating.publish_into(&mut p);
        self.mutating.publish_into(&mut p);
        p
    }

    /// Publishes `state`'s bundle on both (each on its own: a conflict on
    /// one does not hold the other back); the first error, if any.
    pub async fn write(&mut self, state: &State) -> Result<()> {
        let bundle = ByteString(state.bundle().into_bytes());
        let tok = state.path_token.as_deref();
        let validating = self.validating.write(&bundle, tok, state.generation).await;
        let mutating = self.mutating.write(&bundle, tok, state.generation).await;
        validating.and(mutating)
    }
}

/// One webhook configuration as last read (or written) this check.
struct Configuration<K> {
    api: Api<K>,
    name: String,
    /// `None` when it does not exist (before the chart created it).
    object: Option<K>,
}

// === impl Configuration ===

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
    fn publish_into(&self, p: &mut Published<Trusted>) {
        let Some(c) = &self.object else { return };
        p.generation = p.generation.max(self.generation().unwrap_or(0));
        p.bundles.extend(c.client_configs().into_iter().map(|cc| {
            cc.ca_bundle
                .as_ref()
                .map(|b| Trusted::of_pem(&String::from_utf8_lossy(&b.0)))
                .unwrap_or_default()
        }));
    }

    /// What [`bundle_action`] says for publishing `bundle` (generation
    /// `ours`) here; `None` when the configuration does not exist.
    fn action(&self, bundle: &ByteString, tok: Option<&str>, ours: u64) -> Option<BundleAction> {
        let c = self.object.as_ref()?;
        let all_current = c
            .client_configs()
            .into_iter()
            .all(|cc| cc.ca_bundle.as_ref() == Some(bundle) && tok.is_none_or(|t| carries(cc, t)));
        Some(bundle_action(ours, self.generation(), all_current))
    }

    async fn write(&mut self, bundle: &ByteString, tok: Option<&str>, ours: u64) -> Result<()> {
        let name = &self.name;
        match self.action(bundle, tok, ours) {
            None | Some(BundleAction::Current) => Ok(()),
            Some(BundleAction::Stale) => {
                let theirs = self.generation();
                tracing::warn!(%name, ours, theirs = ?theirs, "a newer caBundle is published than our Secret's; not overwriting it (re-reading the Secret next check)");
                Ok(())
            }
            Some(BundleAction::Write) => self.replace(bundle, tok, ours).await,
        }
    }

    /// Sets `bundle` on every webhook and the generation annotation: a
    /// replace of the object read, under its resourceVersion (409 when it
    /// changed since). What was read stays the view until the write
    /// succeeds, so a failed write is not taken for a published bundle.
    async fn replace(&mut self, bundle: &ByteString, tok: Option<&str>, ours: u64) -> Result<()> {
        let Some(mut next) = self.object.clone() else {
            return Ok(());
        };
        for cc in next.client_configs_mut() {
            cc.ca_bundle = Some(bundle.clone());
            if let Some(t) = tok {
                put_token(cc, t);
            }
        }
        next.meta_mut()
            .annotations
            .get_or_insert_with(Default::default)
            .insert(GENERATION.into(), ours.to_string());
        let written = self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
            .map_err(kube_err("replace_webhook_ca_bundle"))?;
        self.object = Some(written);
        tracing::info!(name = %self.name, generation = ours, "caBundle and path token updated");
        Ok(())
    }
}
