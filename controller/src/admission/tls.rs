//! The serving certificate, swappable at runtime: new TLS handshakes pick up a
//! renewed or reloaded certificate without restarting the listener.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub struct Resolver {
    current: RwLock<Option<(Arc<CertifiedKey>, String)>>,
}

/// Parses a PEM chain and key into what rustls serves.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Webhook(format!("serving certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Webhook("serving certificate PEM is empty".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| Error::Webhook(format!("serving key PEM: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| Error::Webhook(format!("serving certificate and key: {e}")))
}

impl Resolver {
    /// Installs a certificate; returns true if it differs from the current one.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<bool> {
        if self
            .current
            .read()
            .expect("resolver lock")
            .as_ref()
            .is_some_and(|(_, pem)| pem == cert_pem)
        {
            return Ok(false);
        }
        let ck = certified_key(cert_pem, key_pem)?;
        *self.current.write().expect("resolver lock") = Some((Arc::new(ck), cert_pem.to_string()));
        Ok(true)
    }

    pub fn is_set(&self) -> bool {
        self.current.read().expect("resolver lock").is_some()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .expect("resolver lock")
            .as_ref()
            .map(|(k, _)| k.clone())
    }
}

/// TLS 1.2/1.3 with the ring provider, HTTP/1.1 (the API server's webhook
/// client keeps connections alive).
pub fn server_config(resolver: Arc<Resolver>) -> Arc<ServerConfig> {
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}
