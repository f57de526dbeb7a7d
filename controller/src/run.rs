//! Wiring: the named parts of a controller process, started in order.
//!
//! Every replica runs the watches (a standby's cache is warm when it takes
//! over) and serves metrics, health and admission. The Lease holder also runs
//! the two controllers (pods: protection, interactions, eviction;
//! StatefulSets: rollouts), and stops writing the moment its Lease cannot be
//! trusted.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Future, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Client;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use prometheus_client::registry::Registry;
use sessionguard_api::CachedPod;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::face::admission;
use crate::face::blocked::BlockedDrains;
use crate::face::http::Health;
use crate::face::registry;
use crate::io::cache::Cache;
use crate::io::events::Recorder;
use crate::io::lease::Elector;
use crate::io::metrics::Metrics;
use crate::io::policies::{self, NotInForce};
use crate::io::report_index::PathPart;
use crate::io::reports::ReportWatch;
use crate::io::watches::{self, Gate, PodWaker, Wakes};
use crate::io::writer::{WriteGate, Writer};
use crate::reconcile::{self, Context, memory::Memory};
use sessionguard_core::backoff::Backoff;
use sessionguard_core::policy_check::Policy;

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
    let cache = Arc::new(Cache::new(stores, config.agent_grace).within(config.namespaces()));
    if let Some(names) = cache.namespaces().names() {
        tracing::info!(?names, "acting only in these namespaces (--namespaces)");
    }
    let memory = Arc::new(Memory::default());
    let events = Recorder::new(writer.clone(), identity.clone());
    let (pod_tx, pod_rx) = mpsc::unbounded_channel::<ObjectRef<CachedPod>>();
    let (sts_tx, sts_rx) = mpsc::unbounded_channel::<ObjectRef<StatefulSet>>();
    let (node_tx, node_rx) = mpsc::unbounded_channel::<String>();
    let wake_gate = Gate::default();
    let waker = PodWaker::new(cache.clone(), Wakes::new(wake_gate.clone(), pod_tx));
    {
        let memory = memory.clone();
        watches::start(
            &client,
            store_writers,
            cache.clone(),
            waker.clone(),
            Wakes::new(wake_gate.clone(), sts_tx.clone()),
            Wakes::new(wake_gate.clone(), node_tx.clone()),
            metrics.clone(),
            move |uid: &str| memory.forget_pod(uid),
        );
    }
    tokio::spawn(
        ReportWatch {
            client: client.clone(),
            cache: cache.clone(),
            waker: waker.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
        }
        .run(),
    );
    tokio::spawn(log_when_synced(cache.clone()));

    let blocked = Arc::new(BlockedDrains::default());
    let refused = blocked.clone();
    let (registry, webhook_metrics) = registry::build(registry::Sources {
        metrics: &metrics,
        cache: cache.clone(),
        memory: memory.clone(),
        blocked: blocked.clone(),
        rollout_stuck_after: config.rollout_stuck_after,
        webhook: &config.webhook,
    });
    let not_in_force = Arc::new(NotInForce::default());
    // Health and metrics first: whatever follows may wait on the API server,
    // and an outage at start-up must be visible (and the process live) meanwhile.
    serve_health(
        &config,
        registry,
        cache.clone(),
        writer.clone(),
        not_in_force.clone(),
    )
    .await?;
    let mut shutdown: Shutdown = Box::pin(shutdown_signal());
    // Who we are, asked once: the webhook's guard lets our own writes pass,
    // and the admission policies must name this user.
    let me = if webhook_metrics.is_some() || config.require_admission_policies {
        match who_we_are(&client, config.write_timeout, &mut shutdown).await {
            Some(me) => me,
            None => return Ok(()),
        }
    } else {
        String::new()
    };
    // Every replica serves admission, leader or not.
    if let Some(webhook_metrics) = webhook_metrics {
        let shared = admission::Shared {
            client: client.clone(),
            metrics: webhook_metrics,
            identity: &identity,
            user: &me,
            namespace: &config.lease_namespace,
            ttl: config.ttl,
            write_timeout: config.write_timeout,
            write_metrics: metrics.clone(),
            cache: cache.clone(),
            blocked,
        };
        admission::start(&config.webhook, shared).await?;
    }

    let mut elector = config.elector(client.clone(), &identity, metrics.clone());
    // No Lease (so no write) before the policies that narrow our rights are in
    // force: without them RBAC alone lets this token patch any pod.
    // `gone` says when one of them goes later; the sender lives as long as
    // `run`, so a closed channel never reads as a loss.
    let (gone_tx, mut gone) = watch::channel::<Option<String>>(None);
    if config.require_admission_policies {
        let wanted = policies::wanted(&config.admission_policies, &me, cache.namespaces())?;
        if !policies_in_force(
            &client,
            &config,
            &identity,
            &wanted,
            &metrics,
            &not_in_force,
            &mut shutdown,
        )
        .await?
        {
            return Ok(());
        }
        tokio::spawn(
            PolicyWatch {
                client: client.clone(),
                wanted,
                every: config.admission_policies_recheck,
                timeout: config.write_timeout,
                metrics: metrics.clone(),
                not_in_force: not_in_force.clone(),
                lease_namespace: config.lease_namespace.clone(),
                lease_name: config.lease_name.clone(),
                identity: identity.clone(),
                gone: gone_tx.clone(),
            }
            .run(),
        );
    }
    // Writes stop at the renew deadline after the last good renewal, well before
    // a standby may take an unrenewed Lease over (after the full duration).
    let renew_deadline = config.lease_duration * 2 / 3;
    let Some(acquired) = acquire(&mut elector, &gate, &cache, &mut shutdown, &mut gone).await
    else {
        return match gone.borrow().clone() {
            Some(why) => Err(Error::PoliciesGone(why)),
            None => Ok(()),
        };
    };
    gate.open_until(acquired + renew_deadline);
    gate.role_known();
    tracing::info!(%identity, lease = %config.lease_name, "became leader");

    let (stop_tx, stop_rx) = watch::channel(false);
    let lease_cache = cache.clone();
    let ctx = Arc::new(Context {
        cache: cache.clone(),
        writer,
        events,
        metrics,
        settings: config.reconcile_settings(),
        memory,
        statefulsets: sts_tx,
        nodes: node_tx,
    });
    tokio::spawn(reconcile::node::run(ctx.clone(), node_rx));
    if let Some(settings) = config.notice_settings() {
        tokio::spawn(reconcile::notices::run(ctx.clone(), refused, settings));
    }
    // Wake-ups of the standby time were dropped: look at what we have
    // business with (`first_look`), once the caches have listed. Not before:
    // a list still under way at this moment has woken (through the closed
    // gate) pods its store does not show until the list ends, so a look now
    // would miss them until the next resync (a login made while the
    // controller was down, in a run of 3,000 pods, went unprotected).
    wake_gate.open();
    let (caches, sts_tx) = (cache.clone(), ctx.statefulsets.clone());
    tokio::spawn(async move {
        caches.ready().await;
        waker.first_look();
        for sts in caches.stores.statefulsets.state() {
            let _ = sts_tx.send(ObjectRef::from_obj(&*sts));
        }
    });
    let mut controllers = start_controllers(&config, ctx, pod_rx, sts_rx, stop_rx);
    let outcome = hold_lease(
        &mut elector,
        &gate,
        &lease_cache,
        renew_deadline,
        &mut shutdown,
        &mut controllers,
        &mut gone,
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
    drop(gone_tx);
    outcome
}

pub(crate) async fn connect() -> Result<Client> {
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
    not_in_force: Arc<NotInForce>,
) -> Result<()> {
    let listener = sessionguard_http::bind(config.listen_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let health = Health {
        registry,
        cache,
        writer,
        not_in_force,
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

/// Waits until this controller's admission policies are in force (true), or
/// shutdown is asked for (false). Meanwhile `/readyz` says why, the gauge
/// counts what is missing, and each new reason is announced once.
async fn policies_in_force(
    client: &Client,
    config: &Config,
    identity: &str,
    wanted: &[Policy],
    metrics: &Metrics,
    not_in_force: &NotInForce,
    shutdown: &mut Shutdown,
) -> Result<bool> {
    let mut said: Option<String> = None;
    loop {
        let problems = policies::problems(client, wanted, config.write_timeout)
            .await
            .all();
        metrics.policies_missing.set(problems.len() as i64);
        let Some(why) = policies::summary(&problems) else {
            not_in_force.set(None);
            tracing::info!(policies = %config.admission_policies, "admission policies in force");
            return Ok(true);
        };
        not_in_force.set(Some(why.clone()));
        if said.as_deref() != Some(why.as_str()) {
            policies::announce(
                client,
                &config.lease_namespace,
                &config.lease_name,
                identity,
                &why,
            )
            .await;
            said = Some(why);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLICY_RECHECK) => {},
            _ = shutdown.as_mut() => return Ok(false),
        }
    }
}

/// Asks the API server who this process is until it answers (Some) or
/// shutdown is asked for (None). Each attempt is bounded: a server that
/// accepts the connection and never answers must not hold start-up forever.
async fn who_we_are(client: &Client, timeout: Duration, shutdown: &mut Shutdown) -> Option<String> {
    for attempt in 0.. {
        match tokio::time::timeout(timeout, admission::whoami(client)).await {
            Ok(Ok(me)) => return Some(me),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot learn who we are from the API server; trying again")
            }
            Err(_) => tracing::warn!(
                ?timeout,
                "the API server did not say who we are in time; trying again"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(WHOAMI_BACKOFF.delay(attempt)) => {},
            _ = shutdown.as_mut() => return None,
        }
    }
    None
}

/// Between two attempts to learn who we are: the project's one retry policy.
const WHOAMI_BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// Reads the policies again while the process runs, once they were in force.
/// The first that is gone or changed is said as at start-up (readiness, the
/// gauge, the event) and sent on `gone`, which stops this replica. What
/// cannot be read is only logged: an API server outage must not make every
/// replica exit.
struct PolicyWatch {
    client: Client,
    wanted: Vec<Policy>,
    every: Duration,
    timeout: Duration,
    metrics: Metrics,
    not_in_force: Arc<NotInForce>,
    lease_namespace: String,
    lease_name: String,
    identity: String,
    gone: watch::Sender<Option<String>>,
}

impl PolicyWatch {
    async fn run(self) {
        loop {
            tokio::time::sleep(self.every).await;
            let found = policies::problems(&self.client, &self.wanted, self.timeout).await;
            if let Some(why) = policies::summary(&found.unreadable) {
                tracing::warn!(%why, "could not read the admission policies again; keeping the last answer");
            }
            let Some(why) = policies::summary(&found.absent) else {
                continue;
            };
            self.metrics.policies_missing.set(found.absent.len() as i64);
            self.not_in_force.set(Some(why.clone()));
            policies::announce(
                &self.client,
                &self.lease_namespace,
                &self.lease_name,
                &self.identity,
                &why,
            )
            .await;
            let _ = self.gone.send(Some(why));
            return;
        }
    }
}

/// How often missing policies are looked for again.
const POLICY_RECHECK: Duration = Duration::from_secs(5);

/// Tries for the Lease until it is ours (the instant the winning attempt
/// started) or shutdown is asked for (None).
async fn acquire(
    elector: &mut Elector,
    gate: &WriteGate,
    cache: &Cache,
    shutdown: &mut Shutdown,
    gone: &mut watch::Receiver<Option<String>>,
) -> Option<Instant> {
    loop {
        let attempt = Instant::now();
        let answer = elector.try_acquire_or_renew().await;
        cache.path(PathPart::ApiServer, answer.is_ok());
        match answer {
            // The caller opens the gate before saying the role is known, so
            // readiness never shows a winner as a standby in between.
            Ok(true) => return Some(attempt),
            Ok(false) => gate.role_known(),
            Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(elector.retry_period()) => {},
            _ = shutdown.as_mut() => return None,
            Ok(_) = gone.wait_for(Option::is_some) => return None,
        }
    }
}

/// Renews the Lease until shutdown (Ok) or until it cannot be trusted (Err).
async fn hold_lease(
    elector: &mut Elector,
    gate: &WriteGate,
    cache: &Cache,
    renew_deadline: Duration,
    shutdown: &mut Shutdown,
    controllers: &mut Pin<Box<dyn Future<Output = ()> + Send>>,
    gone: &mut watch::Receiver<Option<String>>,
) -> Result<()> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(elector.renew_period()) => {
                let attempt = Instant::now();
                let answer = elector.try_acquire_or_renew().await;
                // The Lease calls double as the probe of the API server that
                // agents write through (see `io/report_index.rs`).
                cache.path(PathPart::ApiServer, answer.is_ok());
                match answer {
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
            Ok(why) = gone.wait_for(Option::is_some) => {
                return Err(Error::PoliciesGone(why.clone().unwrap_or_default()));
            }
        }
    }
}

/// Starts the two controllers on the wake-ups the watches send; the
/// returned future ends when both have stopped.
fn start_controllers(
    config: &Config,
    ctx: Arc<Context>,
    pods: mpsc::UnboundedReceiver<ObjectRef<CachedPod>>,
    statefulsets: mpsc::UnboundedReceiver<ObjectRef<StatefulSet>>,
    stop: watch::Receiver<bool>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    // The watches run on their own (every replica); the controllers only
    // schedule what they are woken for, looked up in the warm stores.
    let ctl_cfg = controller::Config::default().concurrency(config.concurrency);
    let pod_ctl = Controller::for_stream(no_stream::<CachedPod>(), ctx.cache.stores.pods.clone())
        .with_config(ctl_cfg.clone())
        .reconcile_on(UnboundedReceiverStream::new(pods))
        .graceful_shutdown_on(until_stopped(stop.clone()))
        .run(
            reconcile::pod::reconcile,
            reconcile::pod::error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let sts_ctl = Controller::for_stream(
        no_stream::<StatefulSet>(),
        ctx.cache.stores.statefulsets.clone(),
    )
    .with_config(ctl_cfg)
    .reconcile_on(UnboundedReceiverStream::new(statefulsets))
    .graceful_shutdown_on(until_stopped(stop))
    .run(
        reconcile::rollout::reconcile,
        reconcile::rollout::error_policy,
        ctx,
    )
    .for_each(|_| futures::future::ready(()));
    Box::pin(async move {
        futures::future::join(pod_ctl, sts_ctl).await;
    })
}

fn no_stream<K>() -> futures::stream::Pending<std::result::Result<K, kube::runtime::watcher::Error>>
{
    futures::stream::pending()
}

async fn log_when_synced(cache: Arc<Cache>) {
    let started = Instant::now();
    cache.ready().await;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "caches synced"
    );
}
