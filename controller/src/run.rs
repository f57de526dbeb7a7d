//! Wiring: metrics server, leader election, watches, and the two controllers
//! (pods: protection, interactions, eviction; StatefulSets: rollouts).

use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use sessionguard_core::keys;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::leader::Elector;
use crate::metrics::{KindLabels, Metrics, new_registry};
use crate::server::Server;
use crate::state::{State, Stores};

fn channel_stream<T: Send + 'static>(
    rx: UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Runs until SIGTERM/SIGINT (Ok) or until leadership is lost (Err, so the
/// process restarts with clean state).
pub async fn run(config: Config) -> Result<()> {
    let mut kube_config = kube::Config::infer()
        .await
        .map_err(|e| Error::Credentials(format!("no Kubernetes credentials: {e}")))?;
    // kube retries 429/503/504 up to 15 times by default; a PDB answers an
    // eviction with 429, which would then surface minutes later as a write
    // timeout. Every loop here retries with its own backoff instead.
    kube_config.default_retry = false;
    let client = Client::try_from(kube_config).map_err(|source| Error::Kube {
        op: "connect",
        source,
    })?;
    let metrics = Metrics::default();

    let (pods_r, pods_w) = reflector::store::<Pod>();
    let (pdbs_r, pdbs_w) = reflector::store::<PodDisruptionBudget>();
    let (ns_r, ns_w) = reflector::store();
    let (sts_r, sts_w) = reflector::store::<StatefulSet>();
    let (rs_r, rs_w) = reflector::store();
    let (deploy_r, deploy_w) = reflector::store();
    let stores = Stores {
        pods: pods_r.clone(),
        pdbs: pdbs_r,
        namespaces: ns_r,
        statefulsets: sts_r.clone(),
        replicasets: rs_r,
        deployments: deploy_r,
    };
    let (sts_tx, sts_rx) = mpsc::unbounded_channel();
    let (pod_tx, pod_rx) = mpsc::unbounded_channel::<ObjectRef<Pod>>();
    let state = Arc::new(State::new(
        config.clone(),
        client.clone(),
        stores,
        metrics.clone(),
        sts_tx,
    ));

    let mut registry = new_registry(&metrics, &state);
    // Every replica serves admission, leader or not.
    crate::admission::start(&config, client.clone(), &mut registry, &state.identity).await?;
    let server = Server::bind(config.listen_addr, registry, state.clone()).await?;
    tracing::info!(addr = %server.local_addr()?, "serving /metrics, /healthz, /readyz");
    tokio::spawn(server.run());

    let mut elector = Elector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        &state.identity,
        config.lease_duration,
        metrics.clone(),
    );
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    // Writes stop at the renew deadline after the last good renewal, well before
    // a standby may take an unrenewed Lease over (after the full duration).
    let renew_deadline = config.lease_duration * 2 / 3;
    let acquired = loop {
        let attempt = Instant::now();
        match elector.try_acquire_or_renew().await {
            Ok(true) => break attempt,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(elector.retry_period()) => {},
            _ = &mut shutdown => return Ok(()),
        }
    };
    state.lead_until(acquired + renew_deadline);
    tracing::info!(identity = %state.identity, lease = %config.lease_name, "became leader");

    // --- watches feeding the stores (and waking pods when they change) ---
    let count_err = |m: Metrics, kind: &'static str| {
        move |e: &watcher::Error| {
            m.watcher_errors.get_or_create(&KindLabels { kind }).inc();
            tracing::warn!(error = %e, resource = kind, "watch failed; retrying with backoff");
        }
    };
    {
        let api: Api<PodDisruptionBudget> = Api::all(client.clone());
        let cfg =
            watcher::Config::default().labels(&format!("{}={}", keys::MANAGED_BY, keys::MANAGER));
        let on_err = count_err(metrics.clone(), "poddisruptionbudgets");
        let tx = pod_tx.clone();
        tokio::spawn(
            reflector::reflector(pdbs_w, watcher(api, cfg))
                .default_backoff()
                .touched_objects()
                .for_each(move |r| {
                    match r {
                        Ok(pdb) => {
                            let ns = pdb.namespace().unwrap_or_default();
                            for o in pdb.owner_references().iter().filter(|o| o.kind == "Pod") {
                                let _ = tx.send(ObjectRef::new(&o.name).within(&ns));
                            }
                        }
                        Err(e) => on_err(&e),
                    }
                    futures::future::ready(())
                }),
        );
    }
    spawn_meta(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        ns_w,
        state.clone(),
        pod_tx.clone(),
        "namespaces",
    );
    spawn_meta(
        Api::<PartialObjectMeta<ReplicaSet>>::all(client.clone()),
        rs_w,
        state.clone(),
        pod_tx.clone(),
        "replicasets",
    );
    spawn_meta(
        Api::<PartialObjectMeta<Deployment>>::all(client.clone()),
        deploy_w,
        state.clone(),
        pod_tx.clone(),
        "deployments",
    );
    tokio::spawn(crate::reports::watch::run(state.clone(), pod_tx.clone()));

    let pod_stream = {
        let st = state.clone();
        let on_err = count_err(metrics.clone(), "pods");
        let cfg = watcher::Config::default();
        reflector::reflector(
            pods_w,
            watcher(Api::<Pod>::all(client.clone()), cfg)
                .modify(|p| p.managed_fields_mut().clear()),
        )
        .default_backoff()
        .inspect(move |ev| match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                if let Some(uid) = p.uid() {
                    st.pods_by_uid
                        .write()
                        .expect("uid index lock")
                        .insert(uid, ObjectRef::from_obj(p));
                }
            }
            Ok(watcher::Event::Delete(p)) => {
                if let Some(uid) = p.uid() {
                    st.pods_by_uid.write().expect("uid index lock").remove(&uid);
                    st.memory.lock().expect("memory lock").remove(&uid);
                }
            }
            Err(e) => on_err(e),
            _ => {}
        })
        .touched_objects()
    };
    let sts_stream = {
        let tx = pod_tx.clone();
        let st = state.clone();
        let on_err = count_err(metrics.clone(), "statefulsets");
        reflector::reflector(
            sts_w,
            watcher(
                Api::<StatefulSet>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects()
        .inspect(move |r| match r {
            // Opt-in or no-pdb may have changed on the set: look at its pods.
            Ok(sts) => wake_namespace(&st, &tx, sts.namespace().as_deref()),
            Err(e) => on_err(e),
        })
    };

    let started = Instant::now();
    {
        let st = state.clone();
        tokio::spawn(async move {
            st.ready().await;
            st.set_synced();
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "caches synced"
            );
        });
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let ctl_cfg = controller::Config::default().concurrency(config.concurrency);
    let pods_ctl = Controller::for_stream(pod_stream, pods_r)
        .with_config(ctl_cfg.clone())
        .reconcile_on(channel_stream(pod_rx))
        .graceful_shutdown_on(stop(stop_rx.clone()))
        .run(
            crate::protect::reconcile,
            crate::protect::error_policy,
            state.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let sts_ctl = Controller::for_stream(sts_stream, sts_r)
        .with_config(ctl_cfg)
        .reconcile_on(channel_stream(sts_rx))
        .graceful_shutdown_on(stop(stop_rx.clone()))
        .run(
            crate::rollout::reconcile,
            crate::rollout::error_policy,
            state.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let controllers = futures::future::join(pods_ctl, sts_ctl);
    tokio::pin!(controllers);

    // --- renew the Lease; stop writing the moment it cannot be trusted ---
    let outcome = loop {
        tokio::select! {
            _ = tokio::time::sleep(elector.renew_period()) => {
                let attempt = Instant::now();
                match elector.try_acquire_or_renew().await {
                    Ok(true) => state.lead_until(attempt + renew_deadline),
                    Ok(false) => break Err(Error::Leader("another replica holds the Lease".into())),
                    Err(e) => {
                        tracing::warn!(error = %e, "Lease renewal failed");
                        // The gate has closed on its own: stop for good.
                        if !state.is_leader() {
                            break Err(Error::Leader(format!("could not renew the Lease for {renew_deadline:?}")));
                        }
                    }
                }
            }
            _ = &mut shutdown => break Ok(()),
            _ = &mut controllers => break Err(Error::Leader("controllers stopped unexpectedly".into())),
        }
    };
    // Gate writes first: nothing may be written once leadership is in doubt.
    if outcome.is_err() {
        state.step_down();
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(config.write_timeout, &mut controllers).await;
    state.step_down();
    if outcome.is_ok() {
        elector.release().await;
        tracing::info!("shut down; Lease released");
    }
    outcome
}

/// Wakes the pods of a namespace that sessionguard has business with.
fn wake_namespace(state: &State, tx: &UnboundedSender<ObjectRef<Pod>>, ns: Option<&str>) {
    let index = state.index.read().expect("index lock");
    let mut uids: std::collections::HashSet<String> = index
        .nodes()
        .flat_map(|n| n.pods().map(|(u, _)| u.as_str().to_string()))
        .collect();
    drop(index);
    for pod in state.stores.pods.state() {
        let ours = pod.labels().contains_key(keys::POD_UID_LABEL)
            || pod.labels().contains_key(keys::INTERACTED);
        let uid = pod.uid().unwrap_or_default();
        if (ours || uids.remove(&uid)) && (ns.is_none() || pod.namespace().as_deref() == ns) {
            let _ = tx.send(ObjectRef::from_obj(&*pod));
        }
    }
}

fn spawn_meta<K>(
    api: Api<PartialObjectMeta<K>>,
    writer: reflector::store::Writer<PartialObjectMeta<K>>,
    state: Arc<State>,
    tx: UnboundedSender<ObjectRef<Pod>>,
    kind: &'static str,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let metrics = state.metrics.clone();
    tokio::spawn(
        reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .for_each(move |r| {
                match r {
                    Ok(obj) => {
                        let ns = if kind == "namespaces" { obj.metadata.name.clone() } else { obj.metadata.namespace.clone() };
                        wake_namespace(&state, &tx, ns.as_deref());
                    }
                    Err(e) => {
                        metrics.watcher_errors.get_or_create(&KindLabels { kind }).inc();
                        tracing::warn!(error = %e, resource = kind, "watch failed; retrying with backoff");
                    }
                }
                futures::future::ready(())
            }),
    );
}
