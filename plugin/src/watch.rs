//! `-w`: render, then render again whenever something shown may have
//! changed (pods, our PDBs, reports, EvictionBlocked events, nodes), and at
//! least every 30 s (ages move). A render that equals the last one is not
//! printed; renders are separated by an empty line.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt, select_all};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use sessionguard_api::SessionReport;
use sessionguard_core::keys;

use crate::blocking;
use crate::error::Result;

/// Longest time between two renders.
const TICK: Duration = Duration::from_secs(30);
/// Changes arriving together are rendered once.
const SETTLE: Duration = Duration::from_millis(200);

/// What a watch listens to.
pub struct Watched {
    /// Pods and events of this namespace (all for `None`).
    pub namespace: Option<String>,
    /// Only pods with this label (the nodes view needs only protected pods).
    pub pod_label: Option<&'static str>,
    pub nodes: bool,
}

fn changes<K>(api: Api<K>, cfg: watcher::Config) -> BoxStream<'static, ()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    // Errors (a resource the user may not watch) back off and retry: they
    // only cost a render now and then.
    watcher(api, cfg).default_backoff().map(|_| ()).boxed()
}

/// Renders until the process is stopped (or output fails).
pub async fn run<F, Fut>(
    client: &Client,
    w: &Watched,
    out: &mut impl Write,
    mut render: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<String>>,
{
    let c = client.clone();
    let (pods, events): (Api<Pod>, Api<Event>) = match &w.namespace {
        Some(ns) => (
            Api::namespaced(c.clone(), ns),
            Api::namespaced(c.clone(), ns),
        ),
        None => (Api::all(c.clone()), Api::all(c.clone())),
    };
    let pod_cfg = match w.pod_label {
        Some(l) => watcher::Config::default().labels(l),
        None => watcher::Config::default(),
    };
    let mut streams = vec![
        changes(pods, pod_cfg),
        changes(
            Api::<PodDisruptionBudget>::all(c.clone()),
            watcher::Config::default().labels(&format!("{}={}", keys::MANAGED_BY, keys::MANAGER)),
        ),
        changes(
            Api::<SessionReport>::all(c.clone()),
            watcher::Config::default(),
        ),
        changes(
            events,
            watcher::Config::default().fields(&format!("reason={}", blocking::REASON)),
        ),
    ];
    if w.nodes {
        streams.push(changes(Api::<Node>::all(c), watcher::Config::default()));
    }
    let mut all = select_all(streams);
    let mut last: Option<String> = None;
    loop {
        let text = render().await?;
        if last.as_deref() != Some(text.as_str()) {
            if last.is_some() {
                text_out(out, "\n")?;
            }
            text_out(out, &text)?;
            last = Some(text);
        }
        tokio::select! {
            _ = all.next() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        // Let the rest of a burst (a PDB and its pod's patch) arrive.
        while let Ok(Some(())) = tokio::time::timeout(SETTLE, all.next()).await {}
    }
}

fn text_out(out: &mut impl Write, s: &str) -> Result<()> {
    out.write_all(s.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| crate::error::Error::Encode(format!("writing output: {e}")))
}
