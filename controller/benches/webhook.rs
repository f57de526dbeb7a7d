//! Admission latency: the handler alone, and the full HTTPS round trip on
//! loopback through the real TLS server (keep-alive connections, as the API
//! server's webhook client uses them).
//!
//! The HTTPS cases run the production path: the record workers
//! (`record::spawn_workers`, 4 as by default) drain the queue into a fake
//! sink that takes 1 ms per record, like a fast API server; the load is
//! paced below what they drain, and every record must arrive (none shed).
//! The overload case stalls the sink (an API server that never answers) and
//! sends as fast as it can: records are shed (and counted) and admission
//! must stay as fast; the smoke run (`cargo test --benches`) gives it a
//! small queue so it overflows there too. Fails (exit 1) if a p99 exceeds 5 ms.
//!
//! cargo bench -p sessionguard-controller --bench webhook

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use sessionguard_controller::face::admission::metrics::{Metrics, OutcomeLabels};
use sessionguard_controller::face::admission::queue::Queue;
use sessionguard_controller::face::admission::record::{self, Sink};
use sessionguard_controller::face::admission::review::{self, Context};
use sessionguard_controller::face::admission::{certs, interaction, server, tls, token};

/// Stands in for the API server: `delay` per record (`None`: never answers).
struct FakeSink {
    delay: Option<Duration>,
    /// How many records were written.
    written: tokio::sync::watch::Sender<usize>,
}

impl Sink for FakeSink {
    async fn write_record(&self, _r: interaction::Record) {
        match self.delay {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
        self.written.send_modify(|n| *n += 1);
    }
}

const TARGET: Duration = Duration::from_millis(5);

/// The path token the API server would send (the server checks it first).
const TOKEN: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn tokens() -> Arc<token::Tokens> {
    let t = token::Tokens::default();
    t.set(vec![TOKEN.into()]);
    Arc::new(t)
}

fn exec_review(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "exec", "name": format!("web-{}", i % 50), "namespace": "team-a",
            "operation": "CONNECT",
            "userInfo": {"username": "oidc:https://idp.example.com#alice@example.com",
                         "groups": ["devs", "system:authenticated"]},
            "object": {"kind": "PodExecOptions", "apiVersion": "v1", "stdin": true, "tty": true,
                       "container": "app", "command": ["sh", "-c", "cat /etc/hostname"]},
            "dryRun": false
        }
    }))
    .unwrap()
}

/// A realistically sized pod (~12 KB: env, volumes, managed fields).
fn pod(annotations: Value) -> Value {
    let env: Vec<Value> = (0..60)
        .map(|i| json!({"name": format!("VAR_{i}"), "value": "x".repeat(40)}))
        .collect();
    let managed: Vec<Value> = (0..8)
        .map(|i| json!({"manager": format!("m{i}"), "operation": "Update", "apiVersion": "v1",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web-0", "namespace": "team-a", "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                        "labels": {"app": "web", "sessionguard.io/interacted": "true"},
                        "annotations": annotations, "managedFields": managed},
           "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "registry.example.com/web:1.2.3", "env": env}]},
           "status": {"phase": "Running"}})
}

fn extend_review() -> Vec<u8> {
    let old = json!({"sessionguard.io/first-interaction": "2026-11-24T01:00:00Z",
                     "sessionguard.io/ttl": "10m0s", "sessionguard.io/interactor": "alice"});
    let mut new = old.clone();
    new["sessionguard.io/extension"] = "30m".into();
    new["sessionguard.io/extended-by"] = "bob".into();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web-0", "namespace": "team-a", "operation": "UPDATE",
            "userInfo": {"username": "bob", "groups": ["devs"]},
            "object": pod(new), "oldObject": pod(old), "dryRun": false
        }
    }))
    .unwrap()
}

fn summary(name: &str, mut d: Vec<Duration>) -> bool {
    d.sort();
    let p = |q: f64| d[((d.len() as f64 - 1.0) * q).round() as usize];
    let (p50, p99, max) = (p(0.5), p(0.99), *d.last().unwrap());
    println!(
        "{name:<44} n={:<6} p50={:>9.1?} p99={:>9.1?} max={:>9.1?} {}",
        d.len(),
        p50,
        p99,
        max,
        if p99 <= TARGET { "ok" } else { "OVER 5ms" }
    );
    p99 <= TARGET
}

fn ctx(
    capacity: usize,
) -> (
    Context,
    Metrics,
    tokio::sync::mpsc::Receiver<interaction::Record>,
) {
    let metrics = Metrics::default();
    let (queue, rx) = Queue::new(capacity, metrics.clone());
    (
        Context {
            deny_namespaces: vec![],
            privileged: vec!["system:serviceaccount:sg:controller".into()],
            max_extension: Duration::from_secs(7 * 86_400),
            queue,
            metrics: metrics.clone(),
            evictions: None,
        },
        metrics,
        rx,
    )
}

/// Sends `bodies` one after the other on one keep-alive connection, one per
/// `pace` tick if given (else as fast as answers come), timing each.
async fn round_trips(
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
    path: String,
    bodies: Vec<Vec<u8>>,
    pace: Option<Duration>,
) -> Vec<Duration> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut out = Vec::with_capacity(bodies.len());
    let mut tick = pace.map(|p| {
        let mut i = tokio::time::interval(p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    for body in bodies {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let started = Instant::now();
        let req = hyper::Request::post(path.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        send.ready().await.unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(b.starts_with(b"{"));
        out.push(started.elapsed());
    }
    out
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `cargo test --benches` runs this without `--bench` (and unoptimised):
    // a quick smoke run that checks everything works, without the gate.
    let full = std::env::args().any(|a| a == "--bench");
    let n = |k: usize| if full { k } else { k / 100 };
    let mut ok = true;
    println!(
        "admission latency (target p99 <= 5ms){}",
        if full { "" } else { ": smoke run, not gated" }
    );

    // --- the handler alone ---
    let (c, _, _rx) = ctx(1 << 20);
    let execs: Vec<Vec<u8>> = (0..n(20_000)).map(exec_review).collect();
    let d: Vec<Duration> = execs
        .iter()
        .map(|b| {
            let t = Instant::now();
            review::handle(&c, review::CONNECT_PATH, b).unwrap();
            t.elapsed()
        })
        .collect();
    ok &= summary("handler: exec (record queued)", d);
    let ext = extend_review();
    println!("  (pod update review body: {} bytes)", ext.len());
    for (name, path) in [
        ("handler: extension, guard", review::GUARD_PATH),
        ("handler: extension, mutate", review::MUTATE_PATH),
    ] {
        let d: Vec<Duration> = (0..n(5_000))
            .map(|_| {
                let t = Instant::now();
                review::handle(&c, path, &ext).unwrap();
                t.elapsed()
            })
            .collect();
        ok &= summary(name, d);
    }

    // --- HTTPS round trips on loopback through the real server ---
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let g = certs::generate(
            &["127.0.0.1".to_string()],
            Duration::from_secs(3600),
            jiff::Timestamp::now(),
        )
        .unwrap();
        let resolver = Arc::new(tls::Resolver::default());
        resolver.set(&g.cert_pem, &g.key_pem).unwrap();
        const WORKERS: usize = 4;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(g.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        // A server whose records go to a sink with `delay` (None: stalled).
        let serve = |delay: Option<Duration>, capacity: usize| {
            let resolver = resolver.clone();
            async move {
                let (c, metrics, rx) = ctx(capacity);
                let (written, seen) = tokio::sync::watch::channel(0);
                let sink = Arc::new(FakeSink { delay, written });
                record::spawn_workers(sink, rx, WORKERS, metrics.clone());
                let listener = sessionguard_http::bind("127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap();
                let addr = listener.local_addr().unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(resolver, None).unwrap());
                tokio::spawn(sessionguard_http::serve(
                    "admission",
                    listener,
                    Some(acceptor),
                    Arc::new(server::Admission {
                        ctx: Arc::new(c),
                        tokens: tokens(),
                        require_client_cert: false,
                    }),
                ));
                (addr, metrics, seen)
            }
        };
        let outcome = |m: &Metrics, outcome| m.records.get_or_create(&OutcomeLabels { outcome }).get();

        // --- the normal path: records drained by the workers as they come ---
        let (addr, metrics, mut seen) = serve(Some(Duration::from_millis(1)), 1024).await;
        let one = n(3_000);
        let d = round_trips(
            addr,
            connector.clone(),
            token::with_token(review::CONNECT_PATH, TOKEN),
            (0..one).map(exec_review).collect(),
            Some(Duration::from_millis(1)),
        )
        .await;
        ok &= summary("https: exec, 1 connection, 1000/s, drained", d);
        let (conns, each) = (8, n(500));
        let mut tasks = vec![];
        for w in 0..conns {
            tasks.push(tokio::spawn(round_trips(
                addr,
                connector.clone(),
                token::with_token(review::CONNECT_PATH, TOKEN),
                (0..each).map(|i| exec_review(w * 1_000 + i)).collect(),
                Some(Duration::from_millis(conns as u64)),
            )));
        }
        let mut all = vec![];
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        ok &= summary("https: exec, 8 connections, 1000/s, drained", all);
        let sent = one + conns * each;
        // Every admitted exec reaches the sink (bounded wait, not a sleep).
        tokio::time::timeout(Duration::from_secs(30), seen.wait_for(|w| *w >= sent))
            .await
            .expect("the record workers drain the queue")
            .unwrap();
        let shed = outcome(&metrics, "shed");
        println!(
            "  records: {sent} admitted, {sent} written by {WORKERS} workers (1 ms each), {shed} shed"
        );
        assert_eq!(shed, 0, "the normal path sheds nothing");
        let d = round_trips(
            addr,
            connector.clone(),
            token::with_token(review::GUARD_PATH, TOKEN),
            vec![extend_review(); n(2_000)],
            None,
        )
        .await;
        ok &= summary("https: extension guard (12 KB review)", d);

        // --- overload: the API server never answers, execs as fast as possible ---
        // The smoke run sends 80 execs: a queue of 16 must overflow too.
        let capacity = if full { 1024 } else { 16 };
        let (addr, metrics, _seen) = serve(None, capacity).await;
        let mut tasks = vec![];
        for w in 0..8 {
            tasks.push(tokio::spawn(round_trips(
                addr,
                connector.clone(),
                token::with_token(review::CONNECT_PATH, TOKEN),
                (0..n(1_000)).map(|i| exec_review(w * 1_000 + i)).collect(),
                None,
            )));
        }
        let mut all = vec![];
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let total = all.len();
        ok &= summary("https: exec, 8 connections, sink stalled", all);
        let shed = outcome(&metrics, "shed");
        println!(
            "  record queue (capacity {capacity}, sink stalled): {shed} of {total} records shed, admission unaffected"
        );
        assert!(
            total > capacity + WORKERS,
            "the overload ({total} execs) must exceed the queue ({capacity}) and the {WORKERS} stalled workers"
        );
        // Exactly the records neither queued nor taken by a stalled worker
        // (each takes at most one) are shed; none is lost silently.
        let shed = shed as usize;
        assert!(
            (total - capacity - WORKERS..=total - capacity).contains(&shed),
            "an overloaded queue sheds instead of blocking: {shed} of {total} shed, capacity {capacity}"
        );
    });
    if full && !ok {
        eprintln!("a p99 exceeded 5ms");
        std::process::exit(1);
    }
}
