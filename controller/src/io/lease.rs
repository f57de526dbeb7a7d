//! Leader election on a `coordination.k8s.io/v1` Lease. Only the holder runs
//! the controllers and writes; standbys wait.
//!
//! Hand-written on purpose: kube-rs has no leader election of its own, and the
//! lease crates around it (kube-leader-election, kube-lease-manager) neither
//! track kube 5 nor expose a fence. What we need from a lease is exactly that
//! fence: a [`WriteGate`] that closes by itself at the renew deadline, checked
//! by the writer on every write, so a renewal that hangs can never let an old
//! leader write after a standby took over.
//!
//! Expiry is judged on the local clock, from when this replica last saw the
//! Lease change (as client-go does), so clock skew between replicas cannot
//! make two leaders. Every write carries the resourceVersion it read, so two
//! candidates racing for an expired Lease cannot both win.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::Result;
use crate::io::metrics::Metrics;
use crate::io::writer::timed;

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    timeout: Duration,
    observed: Option<(String, Instant)>,
    metrics: Metrics,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            timeout: duration / 3,
            observed: None,
            metrics,
        }
    }

    pub fn retry_period(&self) -> Duration {
        (self.duration / 5).max(Duration::from_millis(200))
    }

    pub fn renew_period(&self) -> Duration {
        (self.duration / 3).max(Duration::from_millis(200))
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        timed(&self.metrics, op, self.timeout, f).await
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let ours =
            previous.and_then(|p| p.holder_identity.as_deref()) == Some(self.identity.as_str());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous.and_then(|p| p.lease_transitions).unwrap_or(0)
                    + if ours || previous.is_none() { 0 } else { 1 },
            ),
            ..Default::default()
        }
    }

    /// Creates the Lease, held by us from `now` (409: someone created it first).
    async fn create(&self, now: Timestamp) -> Result<()> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(self.spec(None, now)),
        };
        let pp = PostParams::default();
        let create = self.api.create(&pp, &lease);
        self.timed("create_lease", create).await.map(|_| ())
    }

    /// One attempt: true if we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = Timestamp::now();
        let Some(lease) = self
            .timed("get_lease", self.api.get_opt(&self.name))
            .await?
        else {
            return match self.create(now).await {
                Ok(_) => Ok(true),
                Err(e) if e.status() == Some(409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let observed_at = match &self.observed {
            Some((seen, at)) if *seen == rv => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((rv.clone(), at));
                at
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let their_duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let expired = holder.is_empty() || observed_at.elapsed() > their_duration;
        if holder != self.identity && !expired {
            return Ok(false);
        }
        match self.write(&lease, &spec, now).await {
            Ok(()) => Ok(true),
            Err(e) if e.status() == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replaces `lease` with ours (renewed from `spec`) and remembers the
    /// version written and when: what the next renewal compares against.
    async fn write(&mut self, lease: &Lease, spec: &LeaseSpec, now: Timestamp) -> Result<()> {
        let mut next = lease.clone();
        next.spec = Some(self.spec(Some(spec), now));
        let updated = self
            .timed(
                "update_lease",
                self.api.replace(&self.name, &PostParams::default(), &next),
            )
            .await?;
        self.observed = updated
            .metadata
            .resource_version
            .map(|rv| (rv, Instant::now()));
        Ok(())
    }

    /// Changes how long our Lease is honoured from the next renewal on (the
    /// uninstall path keeps it for minutes at the end).
    pub fn set_duration(&mut self, duration: Duration) {
        self.duration = duration;
    }

    /// Takes the Lease whoever holds it: the uninstall path, which cannot wait
    /// for a running controller's Lease to expire (it never does). Returns the
    /// fence to wait out before writing: the previous holder's duration when
    /// another replica held it, since its writes may go on until its renew
    /// deadline, which is shorter than that duration; zero when the Lease was
    /// free, released or already ours. The write carries the resourceVersion
    /// read, so a renewal in between makes us read and try again.
    pub async fn take_over(&mut self) -> Result<Duration> {
        let mut conflicts = 0;
        loop {
            let now = Timestamp::now();
            let Some(lease) = self
                .timed("get_lease", self.api.get_opt(&self.name))
                .await?
            else {
                match self.create(now).await {
                    Ok(_) => return Ok(Duration::ZERO),
                    Err(e) if e.status() == Some(409) && conflicts < 5 => {
                        conflicts += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let fence = if holder.is_empty() || holder == self.identity {
                Duration::ZERO
            } else {
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64)
            };
            match self.write(&lease, &spec, now).await {
                Ok(()) => {
                    if !holder.is_empty() && holder != self.identity {
                        tracing::info!(previous = %holder, fence_secs = fence.as_secs(), "took the Lease over");
                    }
                    return Ok(fence);
                }
                Err(e) if e.status() == Some(409) && conflicts < 5 => conflicts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Adds an owner to the Lease (kept by every later renewal, which replaces
    /// the object it read), so the garbage collector deletes the Lease with it.
    pub async fn set_owner(&self, owner: OwnerReference) -> Result<()> {
        let mut lease = self.timed("get_lease", self.api.get(&self.name)).await?;
        let owners = lease.metadata.owner_references.get_or_insert_with(Vec::new);
        if owners.iter().any(|o| o.uid == owner.uid) {
            return Ok(());
        }
        owners.push(owner);
        self.timed(
            "update_lease",
            self.api.replace(&self.name, &PostParams::default(), &lease),
        )
        .await
        .map(|_| ())
    }

    /// Gives the Lease up on shutdown so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self
            .timed(
                "release_lease",
                self.api.replace(&self.name, &PostParams::default(), &lease),
            )
            .await
        {
            tracing::warn!(error = %e, "could not release the Lease; a standby takes over when it expires");
        }
    }
}
