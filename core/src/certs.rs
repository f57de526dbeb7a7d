//! The webhook certificates' rotation policy: what the shared Secret should
//! hold after a check, whether a replica may serve its certificate, and
//! whether a webhook configuration's caBundle needs writing.
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
//!   has shown it for one propagation interval (the API server's webhook
//!   client picks configuration changes up through a watch) does the serving
//!   certificate move to it. Old CAs stay in the bundle until they expire,
//!   so a replica still serving an older certificate stays trusted.
//! - The bundle carries a generation, written next to it on the webhook
//!   configurations; a replica holding an older Secret never overwrites a
//!   newer bundle (resourceVersions of different objects cannot be ordered,
//!   our own counter can). A Secret whose generation is below the published
//!   one (restored from a backup) moves past it, so its bundle is published
//!   again instead of being held back forever.
//!
//! The same Secret holds the **path tokens**: an unguessable secret that the
//! webhook configurations carry in their path (`clientConfig.service.path`,
//! readable by cluster admins only), so that only the API server, which reads
//! them, can reach a webhook; a request without a token the replica knows gets
//! 404 and records nothing. A new token comes with every new serving
//! certificate, is accepted by every replica as soon as it reads the Secret,
//! and is put into the configurations only after two check intervals (every
//! replica has read it by then). The token published before it stays accepted
//! until the next one is published, so the API server's calls keep landing
//! while it picks the new path up.
//!
//! Key, token generation and signing are the caller's ([`Pki`]); so is reading a
//! caBundle ([`Bundle`]). What is left is plain data and decisions.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::interaction::{plus, rfc3339, until};

/// Lifetimes and pacing of the generated certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub leaf_validity: Duration,
    pub renew_before: Duration,
    pub ca_validity: Duration,
    /// How long every configuration must have trusted a new CA before the
    /// serving certificate moves to it.
    pub propagation: Duration,
}

impl Timing {
    /// Start a CA rotation when the newest CA has less than this left: enough
    /// for a full serving certificate plus its renewal margin (so no
    /// certificate is cut short by its CA), but never more than half the CA's
    /// life (else a short CA would rotate on every check).
    pub fn ca_rotate_before(&self) -> Duration {
        self.leaf_validity
            .saturating_add(self.renew_before)
            .min(self.ca_validity / 2)
    }
}

/// One CA in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ca {
    /// Its common name, unique per CA; the serving certificate names its issuer by it.
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
    /// When every webhook configuration was first seen trusting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_at: Option<Timestamp>,
}

/// The serving certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
    pub sans: Vec<String>,
    /// The name of the CA that signed it.
    pub issuer: String,
}

/// A secret path segment of the webhooks (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathToken {
    pub value: String,
    pub created_at: Timestamp,
}

/// Everything in the Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Oldest first; every one of them is in the bundle.
    pub cas: Vec<Ca>,
    pub leaf: Option<Leaf>,
    /// Bumped whenever the bundle or the published path token changes.
    pub generation: u64,
    /// Oldest first: the one published before `path_token` (if any), the
    /// published one, and a newer one not yet published. Replicas accept all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<PathToken>,
    /// The token the webhook configurations carry (one of `tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_token: Option<String>,
}

impl State {
    /// The caBundle: every CA, oldest first.
    pub fn bundle(&self) -> String {
        self.cas
            .iter()
            .map(|c| format!("{}\n", c.cert_pem.trim()))
            .collect()
    }

    /// The CA that signed the serving certificate.
    pub fn issuer(&self) -> Option<&Ca> {
        let leaf = self.leaf.as_ref()?;
        self.cas.iter().find(|c| c.name == leaf.issuer)
    }

    /// Every token a replica accepts in a request's path.
    pub fn accepted_tokens(&self) -> Vec<String> {
        self.tokens.iter().map(|t| t.value.clone()).collect()
    }

    /// A serving certificate that is still valid and whose CA is still in the bundle.
    fn usable_leaf(&self, now: Timestamp) -> bool {
        self.leaf
            .as_ref()
            .is_some_and(|l| l.not_after > now && self.cas.iter().any(|c| c.name == l.issuer))
    }
}

/// Makes keys and certificates: the one part of the policy that is not pure.
pub trait Pki {
    type Error;
    /// A new self-signed CA valid for `validity` from `now`, named uniquely.
    fn new_ca(&self, validity: Duration, now: Timestamp) -> Result<Ca, Self::Error>;
    /// A serving certificate for `sans` signed by `ca`, valid until `not_after`.
    fn sign(
        &self,
        ca: &Ca,
        sans: &[String],
        not_after: Timestamp,
        now: Timestamp,
    ) -> Result<Leaf, Self::Error>;
    /// A new unguessable path token (URL-path safe).
    fn new_token(&self) -> Result<String, Self::Error>;
}

/// One webhook's caBundle, as read from its configuration.
pub trait Bundle {
    /// Does it hold this CA certificate?
    fn holds(&self, cert_pem: &str) -> bool;
}

/// What the webhook configurations trust right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published<B> {
    /// One bundle per webhook of every configuration found (none before the
    /// chart created them).
    pub bundles: Vec<B>,
    /// The highest bundle generation among them.
    pub generation: u64,
}

impl<B> Default for Published<B> {
    fn default() -> Self {
        Self {
            bundles: vec![],
            generation: 0,
        }
    }
}

impl<B: Bundle> Published<B> {
    /// Does every webhook trust this CA? Vacuously true when there is no
    /// configuration: nobody calls the webhooks, so nobody can fail open.
    pub fn trusts(&self, ca_pem: &str) -> bool {
        self.bundles.iter().all(|b| b.holds(ca_pem))
    }
}

/// The rotation policy for one set of names, run by whichever replica checks.
pub struct Policy<P> {
    pub pki: P,
    pub timing: Timing,
    /// The names the serving certificate must cover.
    pub sans: Vec<String>,
}

impl<P: Pki> Policy<P> {
    /// What the Secret should hold after this check.
    pub fn next<B: Bundle>(
        &self,
        current: Option<&State>,
        published: &Published<B>,
        now: Timestamp,
    ) -> Result<State, P::Error> {
        let mut s = current.cloned().unwrap_or_else(|| State {
            generation: published.generation,
            ..State::default()
        });
        let before = (s.bundle(), s.path_token.clone());
        note_trust(&mut s, published, now);
        self.keep_a_fresh_ca(&mut s, now)?;
        let mut renewed = false;
        if let Some(ca) = self.signer(&s, now) {
            renewed = self.renew_leaf(&mut s, &ca, now)?;
        }
        self.keep_tokens(&mut s, renewed, now)?;
        let after = (s.bundle(), s.path_token.clone());
        move_generation(&mut s, before != after, published.generation);
        Ok(s)
    }

    /// A new token with every new serving certificate (and the first one at
    /// once); published once every replica has had two check intervals to
    /// read it; the previously published one kept, older ones dropped.
    fn keep_tokens(&self, s: &mut State, renewed: bool, now: Timestamp) -> Result<(), P::Error> {
        if s.tokens.is_empty() || renewed {
            s.tokens.push(PathToken {
                value: self.pki.new_token()?,
                created_at: now,
            });
        }
        let index = |s: &State| {
            let p = s.path_token.as_deref();
            s.tokens.iter().position(|t| Some(t.value.as_str()) == p)
        };
        let wait = self.timing.propagation.saturating_mul(2);
        let ready = s
            .tokens
            .iter()
            .rposition(|t| plus(t.created_at, wait) <= now);
        let published = match (index(s), ready) {
            (Some(i), Some(r)) => i.max(r),
            (Some(i), None) => i,
            // Nothing published yet (or a token lost): nobody reaches us
            // with a token yet, so there is nothing to lose by publishing now.
            (None, r) => r.unwrap_or(s.tokens.len() - 1),
        };
        s.path_token = Some(s.tokens[published].value.clone());
        s.tokens.drain(..published.saturating_sub(1));
        Ok(())
    }

    /// Drops expired CAs (they can only vouch for expired certificates) and
    /// adds a new one when the newest is close to its end.
    fn keep_a_fresh_ca(&self, s: &mut State, now: Timestamp) -> Result<(), P::Error> {
        s.cas.retain(|c| c.not_after > now);
        let rotate = s
            .cas
            .last()
            .is_none_or(|c| until(now, c.not_after) < self.timing.ca_rotate_before());
        if rotate {
            s.cas.push(self.pki.new_ca(self.timing.ca_validity, now)?);
        }
        Ok(())
    }

    /// Signs with the newest CA every configuration has trusted for a while;
    /// with no usable certificate at all (first start, or everything
    /// expired) with the newest CA: there is no trusted certificate to lose.
    fn signer(&self, s: &State, now: Timestamp) -> Option<Ca> {
        let ready = |c: &&Ca| {
            c.trusted_at
                .is_some_and(|at| now >= plus(at, self.timing.propagation))
        };
        let fallback = || (!s.usable_leaf(now)).then(|| s.cas.last()).flatten();
        s.cas.iter().rev().find(ready).or_else(fallback).cloned()
    }

    /// Signs a new serving certificate when needed; says whether it did.
    fn renew_leaf(&self, s: &mut State, ca: &Ca, now: Timestamp) -> Result<bool, P::Error> {
        let not_after = plus(now, self.timing.leaf_validity).min(ca.not_after);
        let renew = match &s.leaf {
            None => true,
            Some(l) => {
                !s.usable_leaf(now)
                    || l.sans != self.sans
                    || l.issuer != ca.name
                    // Renewing only helps if the new one lasts longer (it
                    // cannot outlive its CA).
                    || (until(now, l.not_after) <= self.timing.renew_before
                        && not_after > l.not_after)
            }
        };
        if renew {
            s.leaf = Some(self.pki.sign(ca, &self.sans, not_after, now)?);
        }
        Ok(renew)
    }
}

/// Notes when every configuration was first seen trusting each CA.
fn note_trust<B: Bundle>(s: &mut State, published: &Published<B>, now: Timestamp) {
    for ca in &mut s.cas {
        if ca.trusted_at.is_none() && published.trusts(&ca.cert_pem) {
            ca.trusted_at = Some(now);
        }
    }
}

/// A changed bundle or path token gets a new generation. A Secret behind what
/// is published was rolled back (restored from a backup): moving past the
/// published generation lets its bundle be published again (else every
/// replica would find it stale forever).
fn move_generation(s: &mut State, changed: bool, published: u64) {
    if changed || s.generation < published {
        s.generation = s.generation.max(published) + 1;
    }
}

/// Should a replica serve the Secret's certificate? Only once every
/// configuration trusts its CA, unless it serves nothing valid yet (then
/// there is nothing to lose).
pub fn should_serve<B: Bundle>(s: &State, published: &Published<B>, serving_valid: bool) -> bool {
    if !serving_valid {
        return s.leaf.is_some();
    }
    s.issuer().is_some_and(|ca| published.trusts(&ca.cert_pem))
}

/// What to do with one configuration's caBundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleAction {
    /// Already ours.
    Current,
    Write,
    /// It holds a newer generation than our Secret: written by a replica
    /// that read a newer Secret. Never overwrite it; re-read the Secret (a
    /// Secret that really is older moves past it, see [`Policy::next`]).
    Stale,
}

/// `ours`: our Secret's generation; `theirs`: the configuration's;
/// `all_current`: every webhook in it already holds our bundle.
pub fn bundle_action(ours: u64, theirs: Option<u64>, all_current: bool) -> BundleAction {
    if theirs.is_some_and(|g| g > ours) {
        return BundleAction::Stale;
    }
    if theirs == Some(ours) && all_current {
        return BundleAction::Current;
    }
    BundleAction::Write
}

/// What changed between two states, for the log.
pub fn describe(old: Option<&State>, new: &State) -> Vec<String> {
    let Some(old) = old.filter(|o| !o.cas.is_empty()) else {
        return vec!["generated the webhook CA and serving certificate".into()];
    };
    let mut out = describe_cas(old, new);
    out.extend(describe_leaf(old.leaf.as_ref(), new.leaf.as_ref()));
    if new.generation > old.generation && new.bundle() == old.bundle() {
        out.push(format!(
            "moved the caBundle generation from {} to {}, past the webhook configurations' (the Secret is older than they are: restored from a backup?); its caBundle is published again",
            old.generation, new.generation
        ));
    }
    out.extend(describe_tokens(old, new));
    if out.is_empty() && old != new {
        out.push("noted that every webhook configuration trusts the new CA".into());
    }
    out
}

fn describe_cas(old: &State, new: &State) -> Vec<String> {
    let names = |s: &State| -> Vec<String> { s.cas.iter().map(|c| c.name.clone()).collect() };
    let (before, after) = (names(old), names(new));
    let added = after.iter().filter(|n| !before.contains(n)).map(|n| {
        format!(
            "added CA {n} to the caBundle (generation {}); the serving certificate moves to it once every webhook configuration trusts it",
            new.generation
        )
    });
    let dropped = before
        .iter()
        .filter(|n| !after.contains(n))
        .map(|n| format!("dropped expired CA {n} from the caBundle"));
    added.chain(dropped).collect()
}

/// Never the tokens themselves: the log is read by more people than the Secret.
fn describe_tokens(old: &State, new: &State) -> Vec<String> {
    let mut out = vec![];
    if new.tokens.last() != old.tokens.last() {
        out.push(
            "made a new webhook path token; it goes into the webhook configurations once every replica has had time to read it".to_string(),
        );
    }
    if new.path_token != old.path_token {
        out.push(format!(
            "published the new webhook path token (generation {}); the previous one is accepted until the next is published",
            new.generation
        ));
    }
    out
}

fn describe_leaf(old: Option<&Leaf>, new: Option<&Leaf>) -> Option<String> {
    match (old, new) {
        (Some(a), Some(b)) if a.issuer != b.issuer => Some(format!(
            "moved the webhook serving certificate to CA {} (valid until {})",
            b.issuer,
            rfc3339(b.not_after)
        )),
        (Some(a), Some(b)) if a != b => Some(format!(
            "renewed the webhook serving certificate with the same CA {} (valid until {}); caBundle unchanged",
            b.issuer,
            rfc3339(b.not_after)
        )),
        (None, Some(b)) => Some(format!(
            "signed a webhook serving certificate with CA {}",
            b.issuer
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
