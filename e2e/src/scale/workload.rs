//! The load's workloads: per namespace, StatefulSets opted in to protection,
//! Deployments and bare pods, all with a realistic pod spec (three containers with
//! env, resources, probes and mounts; configMap, secret, emptyDir and projected
//! volumes), placed on the kwok nodes only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use super::kwok::{self, PARALLEL};
use super::progress;
use crate::harness::env::E2E_LABEL;
use crate::{Error, Result};

/// Label on every namespace of the load (cleanup finds them by it).
pub const SCALE_LABEL: &str = "sessionguard.io/scale";
/// Replicas per StatefulSet or Deployment (the last of a namespace takes the rest).
const SET_SIZE: usize = 10;

/// A pod of the load that a login can land on: opted in (a StatefulSet's), on a node.
#[derive(Clone, Debug)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
}

/// What was built.
pub struct Workloads {
    pub namespaces: Vec<String>,
    /// Opted-in pods, by node.
    pub protected: Vec<Target>,
    /// Pods that are not opted in (Deployments' and bare ones): exec targets.
    pub others: Vec<Target>,
}

/// Creates `pods` pods over up to 100 namespaces (about 40 % StatefulSets, opted in,
/// 40 % Deployments, 20 % bare pods) and waits until every one runs on a kwok node.
/// Bare pods are bound at creation, round-robin over `nodes` (as a DaemonSet or an
/// operator that picks nodes would): on 2 cores the build is CPU-bound, and each
/// one left to the scheduler also costs a binding and a Scheduled event.
pub async fn create(
    client: &kube::Client,
    run: &str,
    pods: usize,
    nodes: &[String],
) -> Result<Workloads> {
    let started = Instant::now();
    let n_ns = (pods / 30).clamp(1, 100);
    let namespaces: Vec<String> = (0..n_ns).map(|i| format!("{run}-{i:03}")).collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in &namespaces {
        let obj: Namespace = serde_json::from_value(json!({
            "metadata": {"name": ns, "labels": {E2E_LABEL: "true", SCALE_LABEL: run}}
        }))?;
        ns_api.create(&PostParams::default(), &obj).await?;
    }
    // Each namespace's share, split into sets and bare pods.
    let mut creates: Vec<(String, Value)> = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let share = pods / n_ns + usize::from(i < pods % n_ns);
        let sts = share * 2 / 5;
        let deploy = share * 2 / 5;
        let bare = share - sts - deploy;
        for (j, size) in split(sts).into_iter().enumerate() {
            creates.push((ns.clone(), statefulset(&format!("db-{j}"), size, run)));
        }
        for (j, size) in split(deploy).into_iter().enumerate() {
            creates.push((ns.clone(), deployment(&format!("web-{j}"), size, run)));
        }
        for j in 0..bare {
            let node = nodes
                .get(creates.len() % nodes.len().max(1))
                .map(String::as_str);
            creates.push((ns.clone(), bare_pod(&format!("debug-{j}"), run, node)));
        }
    }
    let objects = creates.len();
    stream::iter(creates)
        .map(|(ns, obj)| create_one(client.clone(), ns, obj))
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    progress(format!(
        "{objects} workload objects in {n_ns} namespaces created in {:.1}s; waiting for {pods} pods to run",
        started.elapsed().as_secs_f64()
    ));
    // A watch, not a list per poll: a full list of the load's pods every 200 ms (the
    // first harness) kept the API server serialising tens of MB per poll, and was most
    // of the cluster build's time at 3,000 pods. The watch's initial list is paged.
    let timeout = Duration::from_secs(300 + pods as u64 / 10);
    let seen = tokio::time::timeout(timeout, running_pods(client, run, pods))
        .await
        .map_err(|_| Error::Timeout {
            what: "every pod of the load to run".into(),
            after: timeout,
        })??;
    progress(format!(
        "{pods} pods running after {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    let (mut protected, mut others) = (Vec::new(), Vec::new());
    for (target, sts) in seen.into_values() {
        if sts {
            protected.push(target)
        } else {
            others.push(target)
        }
    }
    Ok(Workloads {
        namespaces,
        protected,
        others,
    })
}

fn is_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Watches the load's pods until `want` of them run; returns each running pod (by
/// UID) as a target, with whether a StatefulSet owns it. Progress every 10 s.
async fn running_pods(
    client: &kube::Client,
    run: &str,
    want: usize,
) -> Result<HashMap<String, (Target, bool)>> {
    let all: Api<Pod> = Api::all(client.clone());
    let cfg = watcher::Config::default().labels(&format!("{SCALE_LABEL}={run}"));
    let mut events = std::pin::pin!(watcher(all, cfg).default_backoff());
    let mut running: HashMap<String, (Target, bool)> = HashMap::new();
    let mut created: HashSet<String> = HashSet::new();
    let mut last_print = Instant::now();
    while let Some(ev) = events.next().await {
        let pod = match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
            Ok(watcher::Event::Delete(p)) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                running.remove(&uid);
                created.remove(&uid);
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                progress(format!("pods watch: {e}; retrying"));
                continue;
            }
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        created.insert(uid.clone());
        if is_running(&pod) {
            running.insert(uid, (target_of(&pod), owned_by_statefulset(&pod)));
        } else {
            running.remove(&uid);
        }
        if running.len() >= want {
            return Ok(running);
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            progress(format!(
                "pods: {} created, {} running of {want}",
                created.len(),
                running.len()
            ));
        }
    }
    Err(Error::Invalid("the pods watch ended".into()))
}

fn target_of(p: &Pod) -> Target {
    Target {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        node: p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
    }
}

fn owned_by_statefulset(p: &Pod) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "StatefulSet")
}

/// `n` split into sets of at most [`SET_SIZE`].
fn split(n: usize) -> Vec<usize> {
    let mut out = vec![SET_SIZE; n / SET_SIZE];
    if !n.is_multiple_of(SET_SIZE) {
        out.push(n % SET_SIZE);
    }
    out
}

async fn create_one(client: kube::Client, ns: String, obj: Value) -> Result<()> {
    let pp = PostParams::default();
    let res = match obj["kind"].as_str() {
        Some("StatefulSet") => Api::<StatefulSet>::namespaced(client, &ns)
            .create(&pp, &serde_json::from_value(obj)?)
            .await
            .map(|_| ()),
        Some("Deployment") => Api::<Deployment>::namespaced(client, &ns)
            .create(&pp, &serde_json::from_value(obj)?)
            .await
            .map(|_| ()),
        _ => Api::<Pod>::namespaced(client, &ns)
            .create(&pp, &serde_json::from_value(obj)?)
            .await
            .map(|_| ()),
    };
    match res {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map_err(Error::from),
    }
}

fn labels(app: &str, run: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), app.to_string()),
        ("team".to_string(), "platform".to_string()),
        ("app.kubernetes.io/part-of".to_string(), "scale".to_string()),
        (SCALE_LABEL.to_string(), run.to_string()),
    ])
}

/// A pod template as a real service ships it.
fn template(app: &str, run: &str) -> Value {
    let env = |prefix: &str| -> Vec<Value> {
        (0..10)
            .map(|i| json!({"name": format!("{prefix}_SETTING_{i}"), "value": format!("value-{i}-{}", "x".repeat(24))}))
            .chain([json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})])
            .collect()
    };
    let container = |name: &str, image: &str, port: u16| {
        json!({
            "name": name, "image": image,
            "command": ["/bin/app", "--config=/etc/app/config.yaml"],
            "ports": [{"name": "http", "containerPort": port}],
            "env": env(&name.to_ascii_uppercase().replace('-', "_")),
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                          "limits": {"cpu": "500m", "memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 10},
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/app"},
                {"name": "secrets", "mountPath": "/etc/secrets", "readOnly": true},
                {"name": "cache", "mountPath": "/var/cache/app"},
                {"name": "podinfo", "mountPath": "/etc/podinfo"},
            ],
        })
    };
    let mut spec = json!({
        "containers": [
            container("app", "registry.example.com/team/app:1.27.3", 8080),
            container("log-shipper", "registry.example.com/infra/logs:3.1.0", 2020),
            container("metrics", "registry.example.com/infra/exporter:0.9.1", 9100),
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": format!("{app}-config")}},
            {"name": "secrets", "secret": {"secretName": format!("{app}-secrets"), "optional": true}},
            {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "podinfo", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        ],
        "terminationGracePeriodSeconds": 5,
    });
    if let (Some(s), Value::Object(p)) = (spec.as_object_mut(), kwok::placement()) {
        s.extend(p);
    }
    json!({
        "metadata": {"labels": labels(app, run),
                     "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9100"}},
        "spec": spec,
    })
}

fn statefulset(name: &str, replicas: usize, run: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": {"sessionguard.io/protect": "true"}},
        "spec": {
            "replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, run),
        }
    })
}

fn deployment(name: &str, replicas: usize, run: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template(name, run),
        }
    })
}

fn bare_pod(name: &str, run: &str, node: Option<&str>) -> Value {
    let mut t = template(name, run);
    t["apiVersion"] = "v1".into();
    t["kind"] = "Pod".into();
    t["metadata"]["name"] = name.into();
    if let Some(node) = node {
        t["spec"]["nodeName"] = node.into();
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_split_into_tens_with_the_rest_last() {
        assert_eq!(split(0), Vec::<usize>::new());
        assert_eq!(split(25), vec![10, 10, 5]);
        assert_eq!(split(10), vec![10]);
    }

    #[test]
    fn every_pod_of_the_load_goes_to_kwok_nodes_only() {
        for obj in [
            statefulset("a", 1, "r")["spec"]["template"].clone(),
            bare_pod("b", "r", None),
        ] {
            assert_eq!(obj["spec"]["nodeSelector"][kwok::KWOK_LABEL], "true");
            assert_eq!(obj["spec"]["containers"].as_array().map(Vec::len), Some(3));
            assert_eq!(obj["metadata"]["labels"][SCALE_LABEL], "r");
        }
        assert_eq!(bare_pod("b", "r", Some("n-1"))["spec"]["nodeName"], "n-1");
        assert!(bare_pod("b", "r", None)["spec"].get("nodeName").is_none());
    }
}
