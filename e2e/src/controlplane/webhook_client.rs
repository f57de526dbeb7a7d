//! The API server's client certificate for admission webhooks, as a cluster
//! admin would configure it: an AdmissionConfiguration whose
//! `WebhookAdmissionConfiguration.kubeConfigFile` gives every webhook (user
//! `*`) a client certificate, signed by a CA of its own (not the cluster's, so
//! no other client certificate of the cluster passes a webhook that trusts it).
//! A webhook server that does not ask for a client certificate never sees it,
//! so every other test is unaffected; `--webhook-client-ca` makes the
//! controller demand it.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

use crate::Result;
use crate::error::Context;

/// The CA that signs the API server's webhook client certificate.
pub const CA: &str = "webhook-client-ca.crt";
/// The certificate and key the API server presents to webhooks.
pub const CERT: &str = "webhook-client.crt";
pub const KEY: &str = "webhook-client.key";

/// Writes the CA, the client certificate, the kubeconfig and the
/// AdmissionConfiguration into `pki`; returns the AdmissionConfiguration's path.
pub fn write(pki: &Path) -> Result<PathBuf> {
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "sessionguard-e2e-webhook-client-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name
        .push(DnType::CommonName, "kube-apiserver-webhook-client");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;

    let put = |name: &str, text: String| {
        let p = pki.join(name);
        std::fs::write(&p, text).ctx(|| format!("writing {}", p.display()))?;
        Ok::<_, crate::Error>(p)
    };
    put(CA, ca_cert.pem())?;
    let cert_path = put(CERT, cert.pem())?;
    let key_path = put(KEY, key.serialize_pem())?;
    let kubeconfig = put(
        "webhook-client.kubeconfig",
        json!({
            "apiVersion": "v1", "kind": "Config",
            "users": [{"name": "*", "user": {
                "client-certificate": cert_path, "client-key": key_path
            }}]
        })
        .to_string(),
    )?;
    let webhook = json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": kubeconfig,
    });
    put(
        "admission.json",
        json!({
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {"name": "ValidatingAdmissionWebhook", "configuration": webhook},
                {"name": "MutatingAdmissionWebhook", "configuration": webhook},
            ]
        })
        .to_string(),
    )
}
