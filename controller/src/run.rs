//! Wiring: the named parts of a controller process, started in order.
//!
//! Every replica serves metrics, health and admission. The Lease holder also
//! runs the watches and the two controllers (pods: protection, interactions,
//! eviction; StatefulSets: rollouts), and stops writing the moment its Lease
//! cannot be trusted.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Future, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::face::admission;
use crate::face::gauges::PodGauges;
use crate::face::http::Health;
use crate::io::cache::Cache;
use crate::io::events::Recorder;
use crate::io::lease::Elector;
use crate::io::metrics::Metrics;
use crate::io::reports::ReportWatch;
use crate::io::watches::{self, PodWaker, StoreWriters};
use crate::io::writer::{WriteGate, Writer};
use crate::reconcile::{self, Context, memory::Memory};

type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs until SIGTERM/SIGINT (Ok) or until leadership is lost (Err, so the
/// process restarts with clean state).
pub async fn run(config: Config) -> Result<()> {
    let client = connect().await?;
    let identity = config.identity();
    let metrics = Metrics::default();
    let gate = Arc::new(WriteGate::new(metrics.leader.clone()));
    let writer = Writer::new(
        client.clone(),
        gate.clone(),
        config.write_timeout,
        metrics.clone(),
    );
    let (stores, store_writers) = watches::stores();
    let cache = Arc::new(Cache::new(stores, config.agent_grace));

    let mut registry = Registry::default();
    metrics.register(&mut registry);
    registry
        .sub_registry_with_prefix("sessionguard")
        .register_collector(Box::new(PodGauges(cache.clone())));
    // Every replica serves admission, leader or not.
    let shared = admission::Shared {
        client: client.clone(),
        registry: &mut registry,
        identity: &identity,
        namespace: &config.lease_namespace,
        ttl: config.ttl,
        write_timeout: config.write_timeout,
        write_metrics: metrics.clone(),
    };
    admission::start(&config.webhook, shared).await?;
    serve_health(&config, registry, cache.clone(), writer.clone()).await?;

    let mut elector = Elector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        &identity,
        config.lease_duration,
        metrics.clone(),
    );
    let mut shutdown: Shutdown = Box::pin(shutdown_signal());
    // Writes stop at the renew deadline after the last good renewal, well before
    // a standby may take an unrenewed Lease over (after the full duration).
    let renew_deadline = config.lease_duration * 2 / 3;
    let Some(acquired) = acquire(&mut elector, &gate, &mut shutdown).await else {
        return Ok(());
    };
    gate.open_until(acquired + renew_deadline);
    gate.role_known();
    tracing::info!(%identity, lease = %config.lease_name, "became leader");

    let (stop_tx, stop_rx) = watch::channel(false);
    let parts = Parts {
        client,
        cache,
        store_writers,
        writer,
        metrics,
        identity,
    };
    let mut controllers = start_controllers(&config, parts, stop_rx);
    let outcome = hold_lease(
        &mut elector,
        &gate,
        renew_deadline,
        &mut shutdown,
        &mut controllers,
    )
    .await;
    // Gate writes first: nothing may be written once leadership is in doubt.
    if outcome.is_err() {
        gate.close();
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(config.write_timeout, &mut controllers).await;
    gate.close();
    if outcome.is_ok() {
        elector.release().await;
        tracing::info!("shut down; Lease released");
    }
    outcome
}

async fn connect() -> Result<Client> {
    let mut kube_config = kube::Config::infer()
        .await
        .map_err(|e| Error::Credentials(format!("no Kubernetes credentials: {e}")))?;
    // kube retries 429/503/504 up to 15 times by default; a PDB answers an
    // eviction with 429, which would then surface minutes later as a write
    // timeout. Every loop here retries with its own backoff instead.
    kube_config.default_retry = false;
    Client::try_from(kube_config).map_err(|source| Error::Kube {
        op: "connect",
        source,
    })
}

async fn serve_health(
    config: &Config,
    registry: Registry,
    cache: Arc<Cache>,
    writer: Writer,
) -> Result<()> {
    let listener = sessionguard_http::bind(config.listen_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let health = Health {
        registry,
        cache,
        writer,
    };
    tokio::spawn(sessionguard_http::serve(
        "metrics",
        listener,
        None,
        Arc::new(health),
    ));
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Tries for the Lease until it is ours (the instant the winning attempt
/// started) or shutdown is asked for (None).
async fn acquire(
    elector: &mut Elector,
    gate: &WriteGate,
    shutdown: &mut Shutdown,
) -> Option<Instant> {
    loop {
        let attempt = Instant::now();
        match elector.try_acquire_or_renew().await {
            // The caller opens the gate before saying the role is known, so
            // readiness never shows a winner as a standby in between.
            Ok(true) => return Some(attempt),
            Ok(false) => gate.role_known(),
            Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(elector.retry_period()) => {},
            _ = shutdown.as_mut() => return None,
        }
    }
}

/// Renews the Lease until shutdown (Ok) or until it cannot be trusted (Err).
async fn hold_lease(
    elector: &mut Elector,
    gate: &WriteGate,
    renew_deadline: Duration,
    shutdown: &mut Shutdown,
    controllers: &mut Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<()> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(elector.renew_period()) => {
                let attempt = Instant::now();
                match elector.try_acquire_or_renew().await {
                    Ok(true) => gate.open_until(attempt + renew_deadline),
                    Ok(false) => return Err(Error::Leader("another replica holds the Lease".into())),
                    Err(e) => {
                        tracing::warn!(error = %e, "Lease renewal failed");
                        // The gate has closed on its own: stop for good.
                        if !gate.is_open_at(Instant::now()) {
                            return Err(Error::Leader(format!("could not renew the Lease for {renew_deadline:?}")));
                        }
                    }
                }
            }
            _ = shutdown.as_mut() => return Ok(()),
            _ = controllers.as_mut() => return Err(Error::Leader("controllers stopped unexpectedly".into())),
        }
    }
}

/// What the leader's controllers are built from.
struct Parts {
    client: Client,
    cache: Arc<Cache>,
    store_writers: StoreWriters,
    writer: Writer,
    metrics: Metrics,
    identity: String,
}

/// Starts the watches, the report watch and the two controllers; the
/// returned future ends when both controllers have stopped.
fn start_controllers(
    config: &Config,
    parts: Parts,
    stop: watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let cache = parts.cache;
    let (sts_tx, sts_rx) = mpsc::unbounded_channel();
    let (pod_tx, pod_rx) = mpsc::unbounded_channel::<ObjectRef<Pod>>();
    let events = Recorder::new(parts.writer.clone(), parts.identity);
    let ctx = Arc::new(Context {
        cache: cache.clone(),
        writer: parts.writer,
        events: events.clone(),
        metrics: parts.metrics.clone(),
        settings: config.reconcile_settings(),
        memory: Memory::default(),
        statefulsets: sts_tx,
    });
    let waker = PodWaker::new(cache.clone(), pod_tx);
    let forget = {
        let ctx = ctx.clone();
        move |uid: &str| ctx.memory.forget_pod(uid)
    };
    let streams = watches::start(
        &parts.client,
        parts.store_writers,
        cache.clone(),
        waker.clone(),
        parts.metrics.clone(),
        forget,
    );
    let reports = ReportWatch {
        client: parts.client,
        cache: cache.clone(),
        waker,
        events,
        metrics: parts.metrics,
    };
    tokio::spawn(reports.run());
    tokio::spawn(log_when_synced(cache.clone()));

    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let ctl_cfg = controller::Config::default().concurrency(config.concurrency);
    let pods = Controller::for_stream(streams.pods, cache.stores.pods.clone())
        .with_config(ctl_cfg.clone())
        .reconcile_on(UnboundedReceiverStream::new(pod_rx))
        .graceful_shutdown_on(until_stopped(stop.clone()))
        .run(
            reconcile::pod::reconcile,
            reconcile::pod::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let statefulsets =
        Controller::for_stream(streams.statefulsets, cache.stores.statefulsets.clone())
            .with_config(ctl_cfg)
            .reconcile_on(UnboundedReceiverStream::new(sts_rx))
            .graceful_shutdown_on(until_stopped(stop))
            .run(
                reconcile::rollout::reconcile,
                reconcile::rollout::error_policy,
                ctx,
            )
            .for_each(|_| futures::future::ready(()));
    Box::pin(async move {
        futures::future::join(pods, statefulsets).await;
    })
}

async fn log_when_synced(cache: Arc<Cache>) {
    let started = Instant::now();
    cache.ready().await;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "caches synced"
    );
}
