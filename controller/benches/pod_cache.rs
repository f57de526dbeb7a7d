//! Bytes per cached pod: what the pod store and the pod index hold for one
//! pod of the scale load's shape (three containers with env, probes and
//! mounts; managedFields; five conditions), measured with jemalloc's
//! `stats.allocated` around filling them. The baseline, in the same run, is
//! the same pods decoded as full k8s-openapi `Pod`s into a store of their own.
//! Byte counts, not times: the figures do not depend on the machine's load.
//!
//! cargo bench -p sessionguard-controller --bench pod_cache [-- PODS]
//! (`cargo test --benches` runs it with 300 pods and checks the ratio)

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};
use sessionguard_api::CachedPod;
use sessionguard_controller::io::pod_index::PodIndex;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn allocated() -> usize {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().expect("jemalloc epoch");
    stats::allocated::read().expect("jemalloc stats")
}

/// Pod `i` of a StatefulSet as the API server sends it in a list.
fn pod_json(i: usize) -> Value {
    let ns = format!("scale-{}", i % 30);
    let set = format!("db-{}", i % 97);
    let container = |name: &str, port: u16| {
        json!({
            "name": name, "image": format!("registry.example.com/team/{name}:1.27.3"),
            "command": ["/bin/app", "--config=/etc/app/config.yaml"],
            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
            "env": (0..10).map(|k| json!({"name": format!("{}_SETTING_{k}", name.to_uppercase()),
                "value": format!("value-{k}-{}", "x".repeat(24))})).collect::<Vec<_>>(),
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                          "limits": {"cpu": "500m", "memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": port, "scheme": "HTTP"},
                "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"},
                {"name": "kube-api-access-abcde", "readOnly": true,
                 "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
        })
    };
    let status = |name: &str, c: usize| {
        json!({"name": name, "state": {"running": {"startedAt": "2026-12-07T10:00:00Z"}},
            "lastState": {}, "ready": true, "restartCount": 0,
            "image": format!("registry.example.com/team/{name}:1.27.3"),
            "imageID": format!("registry.example.com/team/{name}@sha256:{}", "e".repeat(64)),
            "containerID": format!("containerd://{:060x}{c:04x}", i), "started": true})
    };
    let condition = |t: &str| {
        json!({"type": t, "status": "True", "lastProbeTime": null,
               "lastTransitionTime": "2026-12-07T10:00:01Z"})
    };
    let conditions = [
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
        "PodReadyToStartContainers",
    ]
    .map(condition);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{set}-{i}"), "generateName": format!("{set}-"), "namespace": ns,
            "uid": format!("0f1e2d3c-4b5a-6978-8796-{i:012x}"), "resourceVersion": format!("{}", 100_000 + i),
            "creationTimestamp": "2026-12-07T10:00:00Z",
            "labels": {"app": set, "team": "platform", "app.kubernetes.io/part-of": "scale",
                "sessionguard.io/scale-run": "run-1", "controller-revision-hash": format!("{set}-5d4f8b7c9"),
                "statefulset.kubernetes.io/pod-name": format!("{set}-{i}"), "apps.kubernetes.io/pod-index": "0"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9100"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": set,
                "uid": "11111111-2222-3333-4444-555555555555", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-12-07T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}, "f:team": {}},
                    "f:ownerReferences": {".": {}, "k:{\"uid\":\"11111111\"}": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:env": {}, "f:image": {}}}}}},
                {"manager": "kwok", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                 "time": "2026-12-07T10:00:01Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:phase": {}, "f:podIP": {}}}}
            ]
        },
        "spec": {
            "containers": [container("app", 8080), container("log-shipper", 2020), container("metrics", 9100)],
            "volumes": [{"name": "config", "configMap": {"name": "app-config", "defaultMode": 420}},
                {"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 5, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default",
            "nodeName": format!("kwok-node-{}", i % 1000), "hostname": format!("{set}-{i}"),
            "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        },
        "status": {
            "phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.244.0.1",
            "podIPs": [{"ip": "10.244.0.1"}], "startTime": "2026-12-07T10:00:00Z", "qosClass": "Burstable",
            "conditions": conditions,
            "containerStatuses": [status("app", 0), status("log-shipper", 1), status("metrics", 2)]
        }
    })
}

/// Bytes the structures `fill` builds for `n` pods hold once the decoding's
/// transient allocations are gone (the JSON text is made before the first
/// reading and dropped after the last).
fn held<S>(n: usize, mut fill: impl FnMut(&[u8], &mut S), state: S) -> (usize, S) {
    let texts: Vec<Vec<u8>> = (0..n)
        .map(|i| serde_json::to_vec(&pod_json(i)).unwrap())
        .collect();
    let mut state = state;
    let before = allocated();
    for t in &texts {
        fill(t, &mut state);
    }
    let after = allocated();
    (after.saturating_sub(before), state)
}

/// Bytes a reflector store of `K` holds for `n` pods decoded as `K`.
fn store_only<K>(n: usize) -> usize
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone + 'static,
{
    let (_, writer) = reflector::store::<K>();
    let (bytes, _writer) = held(
        n,
        |t, w: &mut Writer<K>| {
            let pod: K = serde_json::from_slice(t).expect("a pod");
            w.apply_watcher_event(&watcher::Event::Apply(pod));
        },
        writer,
    );
    bytes
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a smaller smoke.
    let bench = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 3000 } else { 300 });
    let text_bytes = serde_json::to_vec(&pod_json(0)).unwrap().len();

    let full = store_only::<Pod>(n);
    let alone = store_only::<CachedPod>(n);

    let (store, cached_w) = reflector::store::<CachedPod>();
    let (cached, (cached_w, index)) = held(
        n,
        |t, (w, ix): &mut (Writer<CachedPod>, PodIndex)| {
            let pod: CachedPod = serde_json::from_slice(t).expect("a pod");
            ix.apply(&pod);
            w.apply_watcher_event(&watcher::Event::Apply(pod));
        },
        (cached_w, PodIndex::default()),
    );
    assert_eq!(store.state().len(), n, "every pod is in the store");
    assert!(
        index
            .by_uid(&format!("0f1e2d3c-4b5a-6978-8796-{:012x}", n - 1))
            .is_some()
    );
    let per = |b: usize| b as f64 / n as f64;
    println!("pods: {n}; one pod's JSON: {text_bytes} bytes");
    println!(
        "full Pod, store only:            {:>9.0} bytes/pod ({:.1} MiB)",
        per(full),
        full as f64 / 1048576.0
    );
    println!(
        "CachedPod, store only:           {:>9.0} bytes/pod",
        per(alone)
    );
    println!(
        "CachedPod, store and pod index:  {:>9.0} bytes/pod ({:.1} MiB)",
        per(cached),
        cached as f64 / 1048576.0
    );
    println!("ratio cached/full: {:.3}", cached as f64 / full as f64);
    println!(
        "at 30,000 pods: {:.1} MiB",
        per(cached) * 30_000.0 / 1048576.0
    );
    // Bytes, not time: a cache that grew back to the full pod's size fails.
    assert!(
        cached * 4 < full,
        "the cached pod must stay a small fraction of the full one"
    );
    drop((cached_w, index));
}
