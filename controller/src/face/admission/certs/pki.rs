//! Keys and certificates made with rcgen, for the policy in
//! [`sessionguard_core::certs`].

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sessionguard_core::certs::{Ca, Leaf, Pki};
use sessionguard_core::interaction::plus;

use crate::error::{Error, Result};

/// The PKI the controller runs: ECDSA P-256 keys (rcgen's default) on ring.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rcgen;

impl Pki for Rcgen {
    type Error = Error;

    fn new_ca(&self, validity: Duration, now: Timestamp) -> Result<Ca> {
        generate_ca(validity, now)
    }

    fn sign(&self, ca: &Ca, sans: &[String], not_after: Timestamp, now: Timestamp) -> Result<Leaf> {
        sign_leaf(ca, sans, not_after, now)
    }

    fn new_token(&self) -> Result<String> {
        new_token()
    }
}

/// 256 bits from the system's CSPRNG (ring's), as 64 hex digits: safe in a
/// URL path, and as unguessable as the CA key next to it.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|e| Error::Webhook(format!("generating the webhook path token: {e:?}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
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
        key_pem: key.serialize_pem(),
        not_after,
        trusted_at: None,
    })
}

/// A serving certificate for `sans` signed by `ca`, valid until `not_after`.
fn sign_leaf(ca: &Ca, sans: &[String], not_after: Timestamp, now: Timestamp) -> Result<Leaf> {
    let issuer = Issuer::new(
        ca_params(&ca.name),
        KeyPair::from_pem(&ca.key_pem).map_err(rc)?,
    );
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

/// The core's policy tests use a fake PKI; these run rotations with real
/// certificates and check them the way the API server's webhook client does.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use sessionguard_core::certs::{Policy, Published, State, Timing, should_serve};

    use super::*;
    use crate::face::admission::certs::fixtures::published;
    use crate::face::admission::certs::publish::Trusted;
    use crate::face::admission::certs::{codec, sans};

    const HOST: &str = "sg-webhook.sg.svc";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn policy(timing: Timing) -> Policy<Rcgen> {
        Policy {
            pki: Rcgen,
            timing,
            sans: sans("sg-webhook", "sg", &["127.0.0.1".into()]),
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

    #[test]
    fn a_ca_read_back_from_the_secret_signs_certificates_its_bundle_verifies() {
        let t0 = ts("2026-11-24T01:00:00Z");
        let p = policy(Timing {
            leaf_validity: Duration::from_secs(90 * 86_400),
            renew_before: Duration::from_secs(30 * 86_400),
            ca_validity: Duration::from_secs(1825 * 86_400),
            propagation: Duration::from_secs(30),
        });
        let s0 = p.next(None, &Published::<Trusted>::default(), t0).unwrap();
        let leaf0 = s0.leaf.clone().unwrap();
        assert!(verifies(&leaf0, &s0.bundle(), t0));
        crate::face::admission::tls::certified_key(&leaf0.cert_pem, &leaf0.key_pem).unwrap();

        // Renewed (29 days left) by the CA as the Secret stores it: trusted
        // by the bundle already published, and by no other CA.
        let round_trip = |s: &State| codec::read_state(&codec::secret("tls", "sg", s).unwrap());
        let seen = t0 + SignedDuration::from_mins(1);
        let s1 = p
            .next(Some(&round_trip(&s0)), &published(&s0), seen)
            .unwrap();
        let later = ts("2027-01-24T01:00:00Z");
        let s2 = p
            .next(Some(&round_trip(&s1)), &published(&s1), later)
            .unwrap();
        let leaf2 = s2.leaf.clone().unwrap();
        assert_ne!(leaf2.cert_pem, leaf0.cert_pem);
        assert!(verifies(&leaf2, &s0.bundle(), later));
        let stranger = generate(&[HOST.into()], Duration::from_secs(86_400), later).unwrap();
        assert!(!verifies(&leaf2, &stranger.ca_pem, later));
    }

    #[test]
    fn real_certificates_stay_trusted_through_short_rotations() {
        // The e2e's settings: CA 60s, serving 30s renewed with 20s left.
        let p = policy(Timing {
            leaf_validity: Duration::from_secs(30),
            renew_before: Duration::from_secs(20),
            ca_validity: Duration::from_secs(60),
            propagation: Duration::from_secs(1),
        });
        let mut now = ts("2026-01-01T00:00:00Z");
        let mut s = p.next(None, &Published::<Trusted>::default(), now).unwrap();
        let mut moves = 0;
        for _ in 0..120 {
            now += SignedDuration::from_secs(1);
            let before = published(&s);
            let next = p.next(Some(&s), &before, now).unwrap();
            let leaf = next.leaf.as_ref().unwrap();
            assert!(verifies(leaf, &next.bundle(), now));
            // What a replica serves, the bundle the API server has already trusts.
            if should_serve(&next, &before, true) {
                assert!(verifies(leaf, &s.bundle(), now));
            }
            moves += usize::from(leaf.issuer != s.leaf.as_ref().unwrap().issuer);
            s = next;
        }
        assert!(moves >= 2, "{moves} moves to a new CA in 120 s");
    }
}
