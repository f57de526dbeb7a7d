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

/// The CAs of `--webhook-client-ca` (PEM, one or more certificates).
pub fn client_roots(path: &std::path::Path) -> Result<Arc<rustls::RootCertStore>> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::Webhook(format!("reading {}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| Error::Webhook(format!("{}: {e}", path.display())))?;
        roots
            .add(c)
            .map_err(|e| Error::Webhook(format!("{}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(Error::Webhook(format!(
            "{}: no CA certificate in it",
            path.display()
        )));
    }
    Ok(Arc::new(roots))
}

/// TLS 1.2/1.3 with the ring provider, HTTP/1.1 (the API server's webhook
/// client keeps connections alive). With `client_cas`, a client certificate
/// is verified against them when one is offered (a bad one fails the
/// handshake); a client without one still connects, and the handler refuses
/// it like a request without the path token: 404, counted, nothing recorded
/// (so the kubelet's probes of `/healthz` need no certificate).
pub fn server_config(
    resolver: Arc<Resolver>,
    client_cas: Option<Arc<rustls::RootCertStore>>,
) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match client_cas {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| Error::Webhook(format!("--webhook-client-ca: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
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
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(resolver, None).unwrap());
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

    /// Answers whether the connection came with a verified client certificate.
    struct Echo;

    impl sessionguard_http::Handler for Echo {
        async fn handle(
            &self,
            req: hyper::Request<hyper::body::Incoming>,
        ) -> hyper::Response<sessionguard_http::Body> {
            let cert = req
                .extensions()
                .get::<sessionguard_http::ClientCertificate>();
            sessionguard_http::text(hyper::StatusCode::OK, format!("{cert:?}"))
        }
    }

    /// A CA and a client certificate it signed (PEM: CA, cert, key).
    fn client_pki() -> (String, String, String) {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        };
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let mut leaf = CertificateParams::default();
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &Issuer::new(ca, ca_key)).unwrap();
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    /// GET / as `client` (certificate, key); the body, or the error.
    async fn get(
        addr: std::net::SocketAddr,
        server_ca: &str,
        client: Option<(&str, &str)>,
    ) -> std::result::Result<String, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let cfg = match client {
            None => cfg.with_no_client_auth(),
            Some((cert, key)) => cfg
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .map(|c| c.unwrap())
                        .collect(),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let read = tls.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        match text.split_once("\r\n\r\n") {
            Some((_, body)) => Ok(body.to_string()),
            None => Err(format!("no response ({read:?})")),
        }
    }

    #[tokio::test]
    async fn with_a_client_ca_only_its_certificates_pass_and_none_is_marked() {
        let now = jiff::Timestamp::now();
        let hour = std::time::Duration::from_secs(3600);
        let serving = certs::generate(&["127.0.0.1".into()], hour, now).unwrap();
        let (ca, cert, key) = client_pki();
        let (_, other_cert, other_key) = client_pki();
        let dir = std::env::temp_dir().join(format!("sg-client-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, &ca).unwrap();
        let resolver = Arc::new(Resolver::default());
        resolver.set(&serving.cert_pem, &serving.key_pem).unwrap();
        let cfg = server_config(resolver, Some(client_roots(&ca_file).unwrap())).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
        tokio::spawn(sessionguard_http::serve(
            "test",
            listener,
            Some(acceptor),
            Arc::new(Echo),
        ));
        let ca_pem = serving.ca_pem.as_str();
        assert_eq!(
            get(addr, ca_pem, Some((&cert, &key))).await.as_deref(),
            Ok("Some(ClientCertificate(true))")
        );
        assert_eq!(
            get(addr, ca_pem, None).await.as_deref(),
            Ok("Some(ClientCertificate(false))"),
            "no certificate: heard, marked, for the handler to refuse"
        );
        let other = get(addr, ca_pem, Some((&other_cert, &other_key))).await;
        assert!(other.is_err(), "another CA's certificate: {other:?}");
        std::fs::write(&ca_file, "not a certificate").unwrap();
        assert!(client_roots(&ca_file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
