//! The shared Secret's layout: the policy's [`State`] in `state.json`, and
//! what people and TLS tooling look for beside it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sessionguard_core::certs::State;
use sessionguard_core::interaction::rfc3339;
use sessionguard_core::keys::{MANAGED_BY, MANAGER};

use crate::error::{Error, Result};

/// Secret annotations, for people (`kubectl get secret -o yaml`) and tests;
/// `state.json` is what the controller reads.
pub const NOT_AFTER: &str = "sessionguard.io/not-after";
pub const SANS: &str = "sessionguard.io/sans";
/// On the Secret and on both webhook configurations: the bundle's version.
pub const GENERATION: &str = "sessionguard.io/ca-bundle-generation";
const CA_BUNDLE: &str = "ca-bundle.crt";
const STATE: &str = "state.json";

fn data<'a>(s: &'a Secret, key: &str) -> Option<&'a [u8]> {
    Some(&s.data.as_ref()?.get(key)?.0)
}

/// Reads the Secret. One without a readable `state.json` (created empty by
/// hand, or damaged) reads as empty: the policy then starts afresh, with a
/// generation past the published one.
pub fn read_state(s: &Secret) -> State {
    let Some(json) = data(s, STATE) else {
        return State::default();
    };
    serde_json::from_slice(json).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the webhook Secret's {STATE} is unreadable; generating new certificates");
        State::default()
    })
}

/// The Secret holding `s`: `tls.crt`/`tls.key`/`ca.crt` as a
/// `kubernetes.io/tls` Secret has them, `ca-bundle.crt` for people, and
/// `state.json`, what the controller reads back.
pub fn secret(name: &str, ns: &str, s: &State) -> Result<Secret> {
    let state = serde_json::to_string(s)
        .map_err(|e| Error::Webhook(format!("encoding the webhook certificate state: {e}")))?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            annotations: Some(annotations(s)),
            labels: Some(BTreeMap::from([(MANAGED_BY.into(), MANAGER.into())])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(contents(s, state)),
        ..Default::default()
    })
}

fn contents(s: &State, state_json: String) -> BTreeMap<String, ByteString> {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut data = BTreeMap::from([
        (CA_BUNDLE.to_string(), bytes(&s.bundle())),
        (STATE.to_string(), ByteString(state_json.into_bytes())),
    ]);
    if let Some(l) = &s.leaf {
        data.insert("tls.crt".into(), bytes(&l.cert_pem));
        data.insert("tls.key".into(), bytes(&l.key_pem));
    }
    if let Some(ca) = s.issuer() {
        data.insert("ca.crt".into(), bytes(&ca.cert_pem));
    }
    data
}

fn annotations(s: &State) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([(GENERATION.to_string(), s.generation.to_string())]);
    if let Some(l) = &s.leaf {
        annotations.insert(NOT_AFTER.into(), rfc3339(l.not_after));
        annotations.insert(SANS.into(), l.sans.join(","));
    }
    annotations
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sessionguard_core::certs::{Policy, Published, Timing};

    use super::*;
    use crate::face::admission::certs::pki::Rcgen;
    use crate::face::admission::certs::publish::Trusted;
    use crate::face::admission::certs::sans;

    const DAY: Duration = Duration::from_secs(86_400);

    fn first_state() -> State {
        let p = Policy {
            pki: Rcgen,
            timing: Timing {
                leaf_validity: 90 * DAY,
                renew_before: 30 * DAY,
                ca_validity: 1825 * DAY,
                propagation: Duration::from_secs(30),
            },
            sans: sans("sg-webhook", "sg", &["127.0.0.1".into()]),
        };
        let t0 = "2026-11-24T01:00:00Z".parse().unwrap();
        p.next(None, &Published::<Trusted>::default(), t0).unwrap()
    }

    #[test]
    fn the_secret_round_trips() {
        let s = first_state();
        let sec = secret("tls", "sg", &s).unwrap();
        assert_eq!(read_state(&sec), s);
        let ann = sec.metadata.annotations.clone().unwrap();
        assert_eq!(ann[NOT_AFTER], "2027-02-22T01:00:00Z");
        assert_eq!(ann[GENERATION], "1");
        let text = |k: &str| String::from_utf8(data(&sec, k).unwrap().to_vec()).unwrap();
        let leaf = s.leaf.as_ref().unwrap();
        assert_eq!(text("tls.crt"), leaf.cert_pem);
        assert_eq!(text("ca.crt"), s.cas[0].cert_pem);
        assert_eq!(text(CA_BUNDLE), s.bundle());
    }

    #[test]
    fn a_secret_without_readable_state_reads_as_empty() {
        let mut sec = secret("tls", "sg", &first_state()).unwrap();
        let data = sec.data.as_mut().unwrap();
        data.insert(STATE.into(), ByteString(b"{not json".to_vec()));
        assert_eq!(read_state(&sec), State::default());
        assert_eq!(read_state(&Secret::default()), State::default());
    }
}
