//! The kubelet's pod loop: run the containers of pods bound to this node, report them
//! Running and Ready, and on deletion stop them within the grace period, remove their
//! cgroups and delete the pod with grace 0 so evictions, drains and rollouts finish.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::cgroup::{self, Qos};
use super::container::Container;
use crate::Result;

/// Pods this node runs, by UID.
#[derive(Debug, Default)]
pub(crate) struct Pods {
    by_uid: HashMap<String, RunningPod>,
    next_ip: u8,
}

#[derive(Debug)]
pub(crate) struct RunningPod {
    slice: PathBuf,
    /// Directories created for this pod (outermost first): removed when it goes.
    made: Vec<PathBuf>,
    containers: Vec<Container>,
    ip: String,
    terminating: bool,
}

/// What the pod loop needs to know about its node.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub node: String,
    /// `<cgroup root>/<prefix>`: where `kubepods.slice` goes.
    pub kubepods_parent: PathBuf,
    pub cgroup_root: PathBuf,
    pub pod_subnet: u8,
    pub pods: Arc<Mutex<Pods>>,
}

/// Watches pods bound to `ctx.node` forever.
pub(crate) async fn run(client: kube::Client, ctx: Ctx) {
    let api: Api<Pod> = Api::all(client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node));
    let mut events = watcher(api, cfg).default_backoff().boxed();
    // UIDs listed since the watch (re)started: pods we run that are not among them were
    // deleted while the watch was down.
    let mut listed = std::collections::HashSet::new();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitDone) => {
                let gone: Vec<RunningPod> = {
                    let mut pods = ctx.pods.lock().expect("pods lock");
                    let stale: Vec<String> = pods
                        .by_uid
                        .keys()
                        .filter(|u| !listed.contains(*u))
                        .cloned()
                        .collect();
                    stale.iter().filter_map(|u| pods.by_uid.remove(u)).collect()
                };
                for p in gone {
                    let _ = teardown(p, Duration::ZERO).await;
                }
            }
            Ok(watcher::Event::InitApply(pod)) => {
                listed.extend(pod.metadata.uid.clone());
                if let Err(e) = sync(&client, &ctx, pod).await {
                    tracing::warn!(node = %ctx.node, error = %e, "pod sync failed");
                }
            }
            Ok(watcher::Event::Apply(pod)) => {
                if let Err(e) = sync(&client, &ctx, pod).await {
                    tracing::warn!(node = %ctx.node, error = %e, "pod sync failed");
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                // Gone without our grace-0 delete (force-deleted): stop at once.
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    let gone = ctx.pods.lock().expect("pods lock").by_uid.remove(uid);
                    if let Some(p) = gone {
                        let _ = teardown(p, Duration::ZERO).await;
                    }
                }
            }
            Err(e) => tracing::warn!(node = %ctx.node, error = %e, "pod watch error"),
        }
    }
}

async fn sync(client: &kube::Client, ctx: &Ctx, pod: Pod) -> Result<()> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());

    if pod.metadata.deletion_timestamp.is_some() {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64;
        let running = {
            let mut pods = ctx.pods.lock().expect("pods lock");
            match pods.by_uid.get_mut(&uid) {
                Some(p) if p.terminating => return Ok(()),
                Some(p) => {
                    p.terminating = true;
                    true
                }
                None => false,
            }
        };
        let ctx = ctx.clone();
        // Terminations run concurrently: one pod's grace period must not hold up others.
        tokio::spawn(async move {
            if running {
                let p = ctx.pods.lock().expect("pods lock").by_uid.remove(&uid);
                if let Some(p) = p
                    && let Err(e) = teardown(p, Duration::from_secs(grace)).await
                {
                    tracing::warn!(pod = %name, error = %e, "cgroup cleanup failed");
                }
            }
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => tracing::info!(pod = %name, "pod terminated"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => tracing::warn!(pod = %name, error = %e, "final delete failed"),
            }
        });
        return Ok(());
    }
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return Ok(());
    }

    let known = ctx
        .pods
        .lock()
        .expect("pods lock")
        .by_uid
        .contains_key(&uid);
    if !known {
        start(ctx, &pod, &uid)?;
    }
    let reported = pod
        .status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.container_statuses.is_some());
    if !known || !reported {
        report_running(&api, ctx, &pod, &uid).await?;
    }
    Ok(())
}

fn start(ctx: &Ctx, pod: &Pod, uid: &str) -> Result<()> {
    let qos = pod
        .status
        .as_ref()
        .and_then(|s| s.qos_class.as_deref())
        .and_then(Qos::from_class)
        .unwrap_or(Qos::BestEffort);
    let slice = ctx.kubepods_parent.join(cgroup::pod_slice(qos, uid));
    let made = cgroup::create(&ctx.cgroup_root, &slice)?;
    let ip = {
        let mut pods = ctx.pods.lock().expect("pods lock");
        pods.next_ip = pods.next_ip.wrapping_add(1).max(2);
        format!("10.244.{}.{}", ctx.pod_subnet, pods.next_ip)
    };
    let mut running = RunningPod {
        slice,
        made,
        containers: Vec::new(),
        ip,
        terminating: false,
    };
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        match Container::start(&c.name, &running.slice) {
            Ok(c) => running.containers.push(c),
            Err(e) => {
                let _ = kill_now(running);
                return Err(e);
            }
        }
    }
    let mut pods = ctx.pods.lock().expect("pods lock");
    pods.by_uid.insert(uid.to_string(), running);
    Ok(())
}

async fn report_running(api: &Api<Pod>, ctx: &Ctx, pod: &Pod, uid: &str) -> Result<()> {
    let now = Timestamp::now().to_string();
    let (ids, ip) = {
        let pods = ctx.pods.lock().expect("pods lock");
        let Some(p) = pods.by_uid.get(uid) else {
            return Ok(());
        };
        let ids: HashMap<String, String> = p
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.id.clone()))
            .collect();
        (ids, p.ip.clone())
    };
    // Keep the IP and start time once reported, as the kubelet does.
    let status = pod.status.clone().unwrap_or_default();
    let ip = status.pod_ip.clone().unwrap_or(ip);
    let started = status
        .start_time
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.clone());
    let statuses: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "containerID": ids.get(&c.name).map(|id| format!("containerd://{id}")),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": now } },
            })
        })
        .collect();
    let cond = |t: &str| json!({ "type": t, "status": "True", "lastTransitionTime": now });
    let patch = json!({ "status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "hostIPs": [{ "ip": "127.0.0.1" }],
        "podIP": ip,
        "podIPs": [{ "ip": ip }],
        "startTime": started,
        "conditions": [
            cond("PodReadyToStartContainers"),
            cond("Initialized"),
            cond("ContainersReady"),
            cond("Ready"),
            cond("PodScheduled"),
        ],
        "containerStatuses": statuses,
    }});
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(pod = %name, node = %ctx.node, "pod running");
    Ok(())
}

/// Stops a pod's containers (SIGTERM, SIGKILL after `grace`) and removes its cgroups.
async fn teardown(p: RunningPod, grace: Duration) -> Result<()> {
    let stops = p.containers.into_iter().map(|c| c.stop(grace));
    let results = futures::future::join_all(stops).await;
    remove_made(&p.slice, &p.made)?;
    results.into_iter().collect()
}

/// Synchronous teardown for Drop: SIGKILL everything and remove the cgroups.
pub(crate) fn kill_now(p: RunningPod) -> Result<()> {
    let mut first_err = None;
    for c in p.containers {
        if let Err(e) = c.kill_now() {
            first_err.get_or_insert(e);
        }
    }
    remove_made(&p.slice, &p.made)?;
    first_err.map_or(Ok(()), Err)
}

/// Removes the pod slice (and whatever is left below it, e.g. a session's scope) plus
/// the parents created for it that are now empty.
fn remove_made(slice: &std::path::Path, made: &[PathBuf]) -> Result<()> {
    cgroup::remove_tree(slice)?;
    for dir in made.iter().rev().filter(|d| d.as_path() != slice) {
        // A sibling pod may still use a shared parent (kubepods.slice): that's fine.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

impl Pods {
    pub(crate) fn drain(&mut self) -> Vec<RunningPod> {
        self.by_uid.drain().map(|(_, p)| p).collect()
    }

    /// Pids of the running containers of a pod, by container name.
    pub(crate) fn pids(&self, uid: &str) -> Vec<(String, u32)> {
        self.by_uid
            .get(uid)
            .map(|p| {
                p.containers
                    .iter()
                    .filter_map(|c| Some((c.name.clone(), c.pid()?)))
                    .collect()
            })
            .unwrap_or_default()
    }
}
