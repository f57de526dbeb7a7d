//! The kubelet's pod loop: run the containers of pods bound to this node, report them
//! Running and Ready, and on deletion stop them within the grace period, remove their
//! cgroups and delete the pod with grace 0 so evictions, drains and rollouts finish.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::cgroup::{self, Qos};
use super::container::{Container, Options};
use super::pidns::Ns;
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
    /// The pause process holding the pod's PID namespace (`shareProcessNamespace`),
    /// stopped after the containers: when it goes, the kernel kills the namespace.
    sandbox: Option<Container>,
    containers: Vec<Container>,
    /// `kubectl debug` containers, started when they appear in the spec.
    ephemeral: Vec<Container>,
    ip: String,
    /// Set while the pod terminates: when its grace period ends. A second delete
    /// with a shorter grace (`kubectl delete --grace-period=0`) moves it earlier.
    terminating: Option<tokio::sync::watch::Sender<Instant>>,
}

/// Pod annotation (simulated nodes only): the stand-ins ignore SIGTERM, as a process
/// without a TERM handler in a container with its own init would, so a deletion takes
/// the whole grace period and ends with SIGKILL.
pub const IGNORE_SIGTERM_ANNOTATION: &str = "sim.sessionguard.io/ignore-sigterm";

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
        let deadline = Instant::now() + Duration::from_secs(grace);
        // The entry stays in `by_uid` until teardown is done, so later events for
        // this pod (a shorter re-delete, a re-list, a label change) see it
        // terminating instead of starting a second, immediate teardown.
        let containers = {
            let mut pods = ctx.pods.lock().expect("pods lock");
            match pods.by_uid.get_mut(&uid) {
                Some(p) => match &p.terminating {
                    Some(ends) => {
                        ends.send_if_modified(|at| {
                            let sooner = deadline < *at;
                            if sooner {
                                *at = deadline;
                            }
                            sooner
                        });
                        return Ok(());
                    }
                    None => {
                        let (tx, rx) = tokio::sync::watch::channel(deadline);
                        p.terminating = Some(tx);
                        let mut all = std::mem::take(&mut p.containers);
                        all.append(&mut p.ephemeral);
                        Some((all, p.sandbox.take(), rx))
                    }
                },
                None => None,
            }
        };
        let ctx = ctx.clone();
        // Terminations run concurrently: one pod's grace period must not hold up others.
        tokio::spawn(async move {
            if let Some((containers, sandbox, ends)) = containers {
                let stopped = stop_all(containers, sandbox, ends).await;
                let p = ctx.pods.lock().expect("pods lock").by_uid.remove(&uid);
                let removed = p.map_or(Ok(()), |p| remove_made(&p.slice, &p.made));
                if let Err(e) = stopped.and(removed) {
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
    let debugged = start_ephemeral(ctx, &pod, &uid)?;
    let reported = pod
        .status
        .as_ref()
        .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.container_statuses.is_some());
    if !known || !reported || debugged {
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
        sandbox: None,
        containers: Vec::new(),
        ephemeral: Vec::new(),
        ip,
        terminating: None,
    };
    let ignore_term = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IGNORE_SIGTERM_ANNOTATION))
        .is_some_and(|v| v == "true");
    let shared = pod
        .spec
        .as_ref()
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false);
    let started = (|| -> Result<()> {
        if shared {
            let opts = Options {
                ns: Ns::New,
                tty: false,
                ignore_term: false,
            };
            running.sandbox = Some(Container::start("pause", &running.slice, opts)?);
        }
        for c in pod.spec.iter().flat_map(|s| &s.containers) {
            let ns = match &running.sandbox {
                Some(pause) => pause.ns()?,
                None => Ns::New,
            };
            let opts = Options {
                ns,
                tty: c.tty == Some(true),
                ignore_term,
            };
            running
                .containers
                .push(Container::start(&c.name, &running.slice, opts)?);
        }
        Ok(())
    })();
    if let Err(e) = started {
        let _ = kill_now(running);
        return Err(e);
    }
    let mut pods = ctx.pods.lock().expect("pods lock");
    pods.by_uid.insert(uid.to_string(), running);
    Ok(())
}

/// Starts the ephemeral containers the spec has and we do not run yet, in the PID
/// namespace the kubelet gives them: the target container's (`kubectl debug
/// --target`), else the pod's shared one, else their own. True if it started any.
fn start_ephemeral(ctx: &Ctx, pod: &Pod, uid: &str) -> Result<bool> {
    let mut pods = ctx.pods.lock().expect("pods lock");
    let Some(running) = pods.by_uid.get_mut(uid) else {
        return Ok(false);
    };
    if running.terminating.is_some() {
        return Ok(false);
    }
    let mut started = false;
    for ec in pod
        .spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
    {
        if running.ephemeral.iter().any(|c| c.name == ec.name) {
            continue;
        }
        let target = ec
            .target_container_name
            .as_deref()
            .and_then(|t| running.containers.iter().find(|c| c.name == t));
        let ns = match (target, &running.sandbox) {
            (Some(t), _) => t.ns()?,
            (None, Some(pause)) => pause.ns()?,
            (None, None) => Ns::New,
        };
        let opts = Options {
            ns,
            tty: ec.tty == Some(true),
            ignore_term: false,
        };
        let c = Container::start(&ec.name, &running.slice, opts)?;
        tracing::info!(pod = %uid, container = %ec.name, "ephemeral container started");
        running.ephemeral.push(c);
        started = true;
    }
    Ok(started)
}

async fn report_running(api: &Api<Pod>, ctx: &Ctx, pod: &Pod, uid: &str) -> Result<()> {
    let now = Timestamp::now().to_string();
    let (ids, debug_ids, ip) = {
        let pods = ctx.pods.lock().expect("pods lock");
        let Some(p) = pods.by_uid.get(uid) else {
            return Ok(());
        };
        let by_name = |cs: &[Container]| -> HashMap<String, String> {
            cs.iter().map(|c| (c.name.clone(), c.id.clone())).collect()
        };
        (by_name(&p.containers), by_name(&p.ephemeral), p.ip.clone())
    };
    // Keep the IP and start time once reported, as the kubelet does.
    let status = pod.status.clone().unwrap_or_default();
    let ip = status.pod_ip.clone().unwrap_or(ip);
    let started = status
        .start_time
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.clone());
    let status_of = |name: &str, image: &Option<String>, ids: &HashMap<String, String>| {
        json!({
            "name": name,
            "image": image,
            "imageID": "",
            "containerID": ids.get(name).map(|id| format!("containerd://{id}")),
            "ready": true,
            "started": true,
            "restartCount": 0,
            "state": { "running": { "startedAt": now } },
        })
    };
    let statuses: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| status_of(&c.name, &c.image, &ids))
        .collect();
    let debug_statuses: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter(|c| debug_ids.contains_key(&c.name))
        .map(|c| status_of(&c.name, &c.image, &debug_ids))
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
        "ephemeralContainerStatuses": debug_statuses,
    }});
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(pod = %name, node = %ctx.node, "pod running");
    Ok(())
}

/// Stops a pod's containers: SIGTERM, then SIGKILL when the grace period in `ends`
/// is over (it may move earlier while waiting); then the sandbox. Removes their scopes.
async fn stop_all(
    containers: Vec<Container>,
    sandbox: Option<Container>,
    ends: tokio::sync::watch::Receiver<Instant>,
) -> Result<()> {
    let stops = containers.into_iter().map(|c| c.stop(ends.clone()));
    let stopped: Result<()> = futures::future::join_all(stops).await.into_iter().collect();
    let paused = match sandbox {
        Some(pause) => pause.stop(ends).await,
        None => Ok(()),
    };
    stopped.and(paused)
}

/// Stops a pod's containers at once and removes its cgroups (pod gone or unlisted).
async fn teardown(p: RunningPod, grace: Duration) -> Result<()> {
    let (_tx, rx) = tokio::sync::watch::channel(Instant::now() + grace);
    let mut all = p.containers;
    all.extend(p.ephemeral);
    let stopped = stop_all(all, p.sandbox, rx).await;
    remove_made(&p.slice, &p.made)?;
    stopped
}

/// Synchronous teardown for Drop: SIGKILL everything and remove the cgroups.
pub(crate) fn kill_now(p: RunningPod) -> Result<()> {
    let mut first_err = None;
    for c in p.containers.into_iter().chain(p.ephemeral).chain(p.sandbox) {
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
