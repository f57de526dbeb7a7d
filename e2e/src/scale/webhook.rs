//! Webhook load: `pods/exec` CONNECT admission reviews, as the API server sends them
//! for `kubectl exec`, POSTed over TLS (the controller's generated CA) on keep-alive
//! connections at a fixed total rate; each answer is timed from the moment its request
//! is sent. kwok nodes have no kubelet to exec into, so the reviews come from here,
//! naming real pods of the load (the controller's record workers write the interaction
//! to them, as for a real exec).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

use super::workload::Target;
use crate::{Error, Result};

/// Connections the load is spread over (the API server keeps several open too).
const CONNECTIONS: u32 = 8;

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid(msg.into())
}

/// The answers' latencies and how many reviews failed (not 200 or not allowed).
pub struct Outcome {
    pub latencies: Vec<Duration>,
    pub failed: usize,
}

/// Sends `rate` reviews per second for `for_` to `addr` at `path` (the
/// published one, with its token), trusting `ca_pem`.
pub async fn load(
    addr: SocketAddr,
    path: &str,
    ca_pem: &[u8],
    rate: u32,
    for_: Duration,
    pods: &[Target],
) -> Result<Outcome> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| invalid(format!("webhook CA: {e}")))?)
            .map_err(|e| invalid(format!("webhook CA: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let per_conn = Duration::from_secs_f64(f64::from(CONNECTIONS) / f64::from(rate.max(1)));
    let n = (for_.as_secs_f64() / per_conn.as_secs_f64()).ceil() as usize;
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS as usize {
        let bodies: Vec<Vec<u8>> = (0..n)
            .map(|i| review(c * n + i, &pods[(c * n + i) % pods.len().max(1)]))
            .collect::<Result<_>>()?;
        let (connector, path) = (connector.clone(), path.to_string());
        tasks.push(tokio::spawn(async move {
            one_connection(addr, path, connector, bodies, per_conn).await
        }));
    }
    let mut out = Outcome {
        latencies: Vec::new(),
        failed: 0,
    };
    for t in tasks {
        let (lat, failed) = t.await.map_err(|e| invalid(e.to_string()))??;
        out.latencies.extend(lat);
        out.failed += failed;
    }
    Ok(out)
}

async fn one_connection(
    addr: SocketAddr,
    path: String,
    connector: tokio_rustls::TlsConnector,
    bodies: Vec<Vec<u8>>,
    pace: Duration,
) -> Result<(Vec<Duration>, usize)> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| invalid(format!("connect {addr}: {e}")))?;
    tcp.set_nodelay(true)
        .map_err(|e| invalid(format!("nodelay: {e}")))?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| invalid(e.to_string()))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| invalid(format!("TLS to the webhook: {e}")))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| invalid(format!("HTTP handshake: {e}")))?;
    tokio::spawn(conn);
    let mut tick = tokio::time::interval(pace);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut out, mut failed) = (Vec::with_capacity(bodies.len()), 0);
    for body in bodies {
        tick.tick().await;
        let req = hyper::Request::post(path.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| invalid(e.to_string()))?;
        let started = Instant::now();
        send.ready()
            .await
            .map_err(|e| invalid(format!("webhook connection: {e}")))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| invalid(format!("webhook request: {e}")))?;
        let ok = resp.status() == 200;
        let b = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| invalid(format!("webhook answer: {e}")))?
            .to_bytes();
        out.push(started.elapsed());
        let allowed = serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .is_some_and(|v| v["response"]["allowed"] == true);
        if !ok || !allowed {
            failed += 1;
        }
    }
    Ok((out, failed))
}

/// The review the API server sends for `kubectl exec -it <pod> -- sh`.
fn review(i: usize, pod: &Target) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "exec", "name": pod.name, "namespace": pod.namespace,
            "operation": "CONNECT",
            "userInfo": {"username": format!("user-{}@example.com", i % 40),
                         "groups": ["devs", "system:authenticated"]},
            "object": {"kind": "PodExecOptions", "apiVersion": "v1", "stdin": true, "tty": true,
                       "container": "app", "command": ["sh"]},
            "dryRun": false
        }
    }))?)
}
