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

/// Connects to `addr` over TLS trusting only the CAs in `bundle_pem` for
/// `server_name`, as the API server's webhook client does, and returns the
/// certificate served (DER). The e2e tests use it to show that no replica
/// ever serves a certificate the published caBundle does not trust.
pub async fn probe(
    addr: std::net::SocketAddr,
    server_name: &str,
    bundle_pem: &str,
) -> Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()).flatten() {
        roots
            .add(c)
            .map_err(|e| Error::Webhook(format!("caBundle certificate: {e}")))?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| Error::Webhook(format!("server name {server_name:?}: {e}")))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Error::Webhook(format!("connecting to {addr}: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Webhook(format!("TLS handshake with {addr}: {e}")))?;
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| Error::Webhook(format!("{addr} served no certificate")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::admission::certs;

    #[tokio::test]
    async fn probe_accepts_only_a_certificate_the_bundle_trusts() {
        let now = jiff::Timestamp::now();
        let hour = std::time::Duration::from_secs(3600);
        let g = certs::generate(&["127.0.0.1".into()], hour, now).unwrap();
        let other = certs::generate(&["127.0.0.1".into()], hour, now).unwrap();
        let resolver = Arc::new(Resolver::default());
        resolver.set(&g.cert_pem, &g.key_pem).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(resolver));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let a = acceptor.clone();
                tokio::spawn(async move { a.accept(s).await.map(drop) });
            }
        });
        let served = probe(addr, "127.0.0.1", &g.ca_pem).await.unwrap();
        assert_eq!(served, certs::ders(&g.cert_pem)[0]);
        let e = probe(addr, "127.0.0.1", &other.ca_pem).await.unwrap_err();
        assert!(e.to_string().contains("TLS handshake"), "{e}");
        // Both CAs in the bundle: trusted.
        let both = format!("{}{}", other.ca_pem, g.ca_pem);
        assert!(probe(addr, "127.0.0.1", &both).await.is_ok());
    }
}
