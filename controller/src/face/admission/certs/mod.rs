//! Certificates for the webhook server.
//!
//! Generated mode (default): a long-lived CA (`--webhook-ca-validity`) and a
//! short-lived serving certificate (`--webhook-cert-validity`) made with
//! rcgen ([`pki`]) live in one Secret shared by all replicas ([`store`],
//! laid out by [`codec`]). Whichever replica checks runs the rotation policy
//! ([`sessionguard_core::certs`]: renewals keep the caBundle, CA rotation is
//! two-phase, the bundle carries a generation), publishes the bundle on both
//! webhook configurations ([`publish`]) and serves the certificate only once
//! every configuration trusts its CA.
//!
//! The CA keys live in the Secret (`state.json`), readable by the controller
//! only (its Role names that one Secret).
//!
//! The same check hands the Secret's path tokens to the server ([`Tokens`])
//! and publishes the current one in both configurations' paths.
//!
//! Mounted mode (`--webhook-cert-dir`, e.g. cert-manager): tls.crt/tls.key and
//! the path token file are re-read every check; the caBundle is
//! cert-manager's business, the configurations' path the chart's.

mod codec;
mod pki;
mod publish;
mod store;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod scenarios;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use kube::Client;
use kube::api::Api;
use sessionguard_core::certs::{Policy, Published, State, Timing, should_serve};
use sessionguard_core::interaction::rfc3339;

pub use self::codec::{GENERATION, NOT_AFTER, SANS};
use self::pki::Rcgen;
pub use self::pki::{Generated, ders, generate};
use self::publish::{Configurations, Trusted};
use self::store::Store;
use super::WebhookConfig;
use super::metrics::Metrics;
use super::tls::Resolver;
use super::token::{self, Tokens};
use crate::error::{Error, Result};

pub enum Source {
    Files {
        dir: PathBuf,
        token_file: PathBuf,
    },
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

fn timing(c: &WebhookConfig) -> Timing {
    Timing {
        leaf_validity: c.cert_validity,
        renew_before: c.cert_renew_before,
        ca_validity: c.ca_validity,
        propagation: c.cert_check_interval,
    }
}

fn kube_err(op: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { op, source }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

pub struct Manager {
    pub client: Client,
    pub source: Source,
    pub resolver: Arc<Resolver>,
    pub tokens: Arc<Tokens>,
    pub config: WebhookConfig,
    pub metrics: Metrics,
    /// Expiry of the certificate being served, if any.
    pub serving_until: std::sync::Mutex<Option<Timestamp>>,
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
            Source::Files { dir, token_file } => self.load_files(dir, token_file),
            Source::Secret { namespace, sans } => self.check_secret(namespace, sans).await,
        }
    }

    fn load_files(&self, dir: &Path, token_file: &Path) -> Result<()> {
        let read = |f: &str| {
            let p = dir.join(f);
            std::fs::read_to_string(&p)
                .map_err(|e| Error::Webhook(format!("reading {}: {e}", p.display())))
        };
        if self.tokens.observe(token::read_file(token_file)?) {
            tracing::info!(file = %token_file.display(), "webhook path tokens loaded (the previous ones, if any, still accepted until the file changes again)");
        }
        if self.resolver.set(&read("tls.crt")?, &read("tls.key")?)? {
            tracing::info!(dir = %dir.display(), "webhook certificate loaded from files");
        }
        Ok(())
    }

    async fn check_secret(&self, namespace: &str, sans: &[String]) -> Result<()> {
        let mut configs = Configurations::read(&self.client, &self.config).await?;
        let policy = Policy {
            pki: Rcgen,
            timing: timing(&self.config),
            sans: sans.to_vec(),
        };
        let store = Store {
            api: Api::namespaced(self.client.clone(), namespace),
            namespace: namespace.to_string(),
            name: self.config.secret.clone(),
        };
        let state = store.ensure(&policy, &configs.published()).await?;
        // Accepted before it is published: the API server may use it the
        // moment a configuration carries it.
        self.tokens.set(state.accepted_tokens());
        if let Err(e) = configs.write(&state).await {
            // A configuration changed since we read it (409) or the write
            // failed: retried next check. Meanwhile serve against what the
            // configurations held as last read or written (failurePolicy
            // Ignore admits if it falls short).
            self.metrics.cert_errors.inc();
            tracing::warn!(error = %e, "could not update the webhook configurations' caBundle");
        }
        self.serve(&state, &configs.published())
    }

    fn serve(&self, state: &State, published: &Published<Trusted>) -> Result<()> {
        let Some(leaf) = &state.leaf else {
            return Ok(());
        };
        let now = Timestamp::now();
        let mut serving_until = self.serving_until.lock().expect("serving lock");
        let valid = serving_until.is_some_and(|t| t > now);
        if !should_serve(state, published, valid) {
            tracing::info!(issuer = %leaf.issuer, "not serving the new webhook certificate yet: a webhook configuration does not trust its CA yet");
            return Ok(());
        }
        if self.resolver.set(&leaf.cert_pem, &leaf.key_pem)? {
            tracing::info!(issuer = %leaf.issuer, not_after = %rfc3339(leaf.not_after), "webhook certificate installed");
        }
        *serving_until = Some(leaf.not_after);
        self.metrics.cert_not_after.set(leaf.not_after.as_second());
        Ok(())
    }
}
