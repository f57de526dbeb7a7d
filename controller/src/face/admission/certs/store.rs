//! The shared Secret: read it, let the policy decide, write what changed.
//!
//! The first replica to create it wins (the others get 409 and read it);
//! every change is a replace under the resourceVersion it read, so exactly
//! one replica makes it.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use sessionguard_core::certs::{Policy, Published, State, describe};

use super::pki::Rcgen;
use super::publish::Trusted;
use super::{codec, is_conflict, kube_err};
use crate::error::{Error, Result};

/// How often a check re-reads the Secret after losing a write to another replica.
const ATTEMPTS: usize = 3;

pub struct Store {
    pub api: Api<Secret>,
    pub namespace: String,
    pub name: String,
}

impl Store {
    /// The Secret's state after this check, written if the policy changed it.
    pub async fn ensure(
        &self,
        policy: &Policy<Rcgen>,
        published: &Published<Trusted>,
    ) -> Result<State> {
        for _ in 0..ATTEMPTS {
            let current = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(kube_err("get_webhook_secret"))?;
            let old = current.as_ref().map(codec::read_state);
            let next = policy.next(old.as_ref(), published, Timestamp::now())?;
            if old.as_ref() == Some(&next) {
                return Ok(next);
            }
            let secret = codec::secret(&self.name, &self.namespace, &next)?;
            match self.write(current.as_ref(), secret).await {
                Ok(()) => {
                    self.log(old.as_ref(), &next);
                    return Ok(next);
                }
                // Another replica changed it first: read its result.
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(kube_err("write_webhook_secret")(e)),
            }
        }
        Err(Error::Webhook(format!(
            "Secret {}/{} kept changing under us; will retry",
            self.namespace, self.name
        )))
    }

    /// Creates the Secret, or replaces the one read under its resourceVersion.
    async fn write(&self, current: Option<&Secret>, mut s: Secret) -> kube::Result<()> {
        let pp = PostParams::default();
        match current {
            None => self.api.create(&pp, &s).await.map(drop),
            Some(existing) => {
                s.metadata.resource_version = existing.metadata.resource_version.clone();
                self.api.replace(&self.name, &pp, &s).await.map(drop)
            }
        }
    }

    fn log(&self, old: Option<&State>, next: &State) {
        for what in describe(old, next) {
            tracing::info!(secret = %self.name, generation = next.generation, "{what}");
        }
    }
}
