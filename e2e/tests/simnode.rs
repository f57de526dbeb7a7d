//! The local Kubernetes behaves like a real one where sessionguard depends on it: the
//! seed's StatefulSet runs on a simulated node in the kubelet's cgroup layout, evictions
//! and drains go through the real eviction API and PodDisruptionBudgets, and sessions
//! are real ptys in the container's cgroup.

use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{DeleteParams, EvictParams, PostParams};
use serde_json::json;
use sessionguard_e2e::harness::{TestEnv, await_, procfs};
use sessionguard_e2e::simnode::cgroup;
use sessionguard_e2e::simnode::container::{STAND_IN, parse_container_id};
use sessionguard_e2e::wait;
use tokio::io::AsyncBufReadExt;

const TARGET_STS: &str = include_str!("../fixtures/target-sts.yaml");
const POD: &str = "target-sts-0";

/// Creates the seed's StatefulSet unchanged and waits for its pod to be Running and Ready.
async fn target_sts(env: &TestEnv) -> Pod {
    let sts: StatefulSet = env
        .create_yaml(TARGET_STS)
        .await
        .expect("create target-sts");
    assert_eq!(sts.metadata.name.as_deref(), Some("target-sts"));
    await_::pod_ready(&env.api(), POD)
        .await
        .expect("target-sts-0 ready")
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().expect("pod uid")
}

/// The cgroup directory of each container, from the pod's status, as the agent will derive it.
fn container_dirs(env: &TestEnv, pod: &Pod) -> Vec<(String, std::path::PathBuf)> {
    let slice = env
        .node()
        .cgroup_parent()
        .join(cgroup::pod_slice(cgroup::Qos::BestEffort, &uid(pod)));
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .expect("container statuses")
        .into_iter()
        .map(|c| {
            let id = c.container_id.expect("containerID");
            let id = parse_container_id(&id)
                .expect("containerd://<64 hex>")
                .to_string();
            (c.name, slice.join(cgroup::container_scope(&id)))
        })
        .collect()
}

fn relative_to_root(dir: &Path) -> String {
    let root = cgroup::CgroupRoot::detect().expect("cgroup2");
    format!("/{}", dir.strip_prefix(root.path()).unwrap().display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_statefulset_runs_in_kubelet_cgroup_layout() {
    let Some(env) = TestEnv::start("sts-cgroups").await.expect("test env") else {
        return;
    };
    let pod = target_sts(&env).await;
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(env.node_name()));
    assert_eq!(
        pod.status.as_ref().unwrap().qos_class.as_deref(),
        Some("BestEffort")
    );

    let dirs = container_dirs(&env, &pod);
    assert_eq!(
        dirs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["main", "tty-exporter"]
    );
    let pids = env.node().container_pids(&uid(&pod));
    for (name, dir) in &dirs {
        assert!(dir.is_dir(), "{name}: no cgroup {}", dir.display());
        let in_cgroup = cgroup::procs(dir);
        assert_eq!(
            in_cgroup.len(),
            1,
            "{name}: one process in {}",
            dir.display()
        );
        let pid = in_cgroup[0] as u32;
        assert!(
            pids.contains(&(name.clone(), pid)),
            "{name}: pid {pid} is the node's"
        );
        assert_eq!(procfs::cmdline(pid), STAND_IN);
        assert_eq!(
            procfs::cgroup_v2(pid).as_deref(),
            Some(relative_to_root(dir).as_str())
        );
        assert!(
            !procfs::tty_nr(pid).is_some_and(procfs::is_pts),
            "containers have no tty"
        );
    }
    env.finish().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_recreates_the_pod_and_a_zero_pdb_refuses_it() {
    let Some(env) = TestEnv::start("evict-pdb").await.expect("test env") else {
        return;
    };
    let pods: Api<Pod> = env.api();
    let first = target_sts(&env).await;
    let old_dirs = container_dirs(&env, &first);

    pods.evict(POD, &EvictParams::default())
        .await
        .expect("eviction accepted");
    let second = await_::pod_replaced(&pods, POD, &uid(&first))
        .await
        .expect("recreated");
    assert_ne!(uid(&first), uid(&second));
    for (name, dir) in &old_dirs {
        assert!(
            !dir.exists(),
            "{name}: old cgroup {} removed",
            dir.display()
        );
    }
    for (name, dir) in container_dirs(&env, &second) {
        assert_eq!(cgroup::procs(&dir).len(), 1, "{name}: new container runs");
    }

    let pdbs: Api<PodDisruptionBudget> = env.api();
    create_zero_pdb(&pdbs).await;
    let err = pods
        .evict(POD, &EvictParams::default())
        .await
        .expect_err("eviction must be refused");
    match err {
        kube::Error::Api(s) => assert_eq!(s.code, 429, "refused with 429: {s:?}"),
        other => panic!("expected a 429, got {other}"),
    }
    let still = pods.get(POD).await.expect("pod");
    assert_eq!(uid(&still), uid(&second));
    assert!(still.metadata.deletion_timestamp.is_none());
    env.finish().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_blocked_by_the_pdb_and_completes_without_it() {
    let Some(env) = TestEnv::start("drain").await.expect("test env") else {
        return;
    };
    let pods: Api<Pod> = env.api();
    let pod = target_sts(&env).await;
    let pdbs: Api<PodDisruptionBudget> = env.api();
    create_zero_pdb(&pdbs).await;

    let bin = sessionguard_e2e::paths::tool("kubectl").expect("kubectl");
    let mut drain = tokio::process::Command::new(bin)
        .arg(format!("--kubeconfig={}", env.kubeconfig().display()))
        .args([
            "drain",
            env.node_name(),
            "--ignore-daemonsets",
            "--timeout=120s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl drain");
    let output = Arc::new(Mutex::new(String::new()));
    for stream in [
        Box::new(drain.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(drain.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                output.lock().unwrap().push_str(&(l + "\n"));
            }
        });
    }

    // kubectl retries every 5s; seeing the refusal twice shows it is blocked, not slow.
    let out = output.clone();
    wait::until(
        "kubectl drain to be refused by the PDB twice",
        await_::TIMEOUT,
        || {
            let text = out.lock().unwrap().clone();
            async move { Ok((text.matches("disruption budget").count() >= 2).then_some(())) }
        },
    )
    .await
    .expect("drain blocked");
    assert!(drain.try_wait().unwrap().is_none(), "drain still waiting");
    let node = Api::<Node>::all(env.client().clone())
        .get(env.node_name())
        .await
        .unwrap();
    assert_eq!(node.spec.unwrap().unschedulable, Some(true), "cordoned");
    let still = pods.get(POD).await.unwrap();
    assert_eq!(uid(&still), uid(&pod));
    assert!(await_::is_running_ready(&still));

    pdbs.delete("target-sts", &DeleteParams::default())
        .await
        .expect("delete PDB");
    let status = tokio::time::timeout(await_::TIMEOUT, drain.wait())
        .await
        .expect("drain finishes")
        .unwrap();
    let text = output.lock().unwrap().clone();
    assert!(status.success(), "drain failed:\n{text}");
    assert!(
        text.contains("drained"),
        "kubectl reports the node drained:\n{text}"
    );
    await_::gone(&pods, POD, &uid(&pod))
        .await
        .expect("old pod gone");

    // Cordoned, the replacement cannot be scheduled; uncordoned, it runs again.
    let (ok, out) = env.kubectl(&["uncordon", env.node_name()]).await.unwrap();
    assert!(ok, "uncordon: {out}");
    let back = await_::pod_replaced(&pods, POD, &uid(&pod))
        .await
        .expect("rescheduled");
    assert_eq!(
        back.spec.unwrap().node_name.as_deref(),
        Some(env.node_name())
    );
    env.finish().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_is_a_pty_process_in_the_container_cgroup() {
    let Some(env) = TestEnv::start("session").await.expect("test env") else {
        return;
    };
    let pod = target_sts(&env).await;
    let dirs = container_dirs(&env, &pod);
    let main_dir = &dirs.iter().find(|(n, _)| n == "main").unwrap().1;

    let session = env.session(POD, "main", &["sh"]).await.expect("session");
    let pid = session.pid();
    assert_eq!(session.cgroup(), main_dir.as_path());
    assert_eq!(
        procfs::cgroup_v2(pid).as_deref(),
        Some(relative_to_root(main_dir).as_str())
    );
    assert!(cgroup::procs(main_dir).contains(&(pid as i32)));
    let tty = procfs::tty_nr(pid).expect("stat");
    assert!(procfs::is_pts(tty), "tty_nr {tty:#x} is a pts");
    assert_eq!(
        session.tty(),
        Path::new(&format!("/dev/pts/{}", procfs::pts_number(tty)))
    );
    // Session leader with the pty as its controlling terminal, like a login shell.
    assert_eq!(
        nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid as i32)))
            .unwrap()
            .as_raw(),
        pid as i32
    );

    // Closing drops the master (the shell may read EOF and exit 0) and sends
    // SIGHUP: either ends it, and which comes first is a race.
    session.close().expect("close");
    assert!(
        procfs::cgroup_v2(pid).is_none(),
        "session process {pid} is gone"
    );
    assert_eq!(
        cgroup::procs(main_dir).len(),
        1,
        "only the container remains"
    );
    env.finish().await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guaranteed_and_burstable_pods_get_their_qos_slices() {
    let Some(env) = TestEnv::start("qos").await.expect("test env") else {
        return;
    };
    let pods: Api<Pod> = env.api();
    let cases = [
        (
            "guaranteed",
            json!({ "requests": { "cpu": "100m", "memory": "32Mi" }, "limits": { "cpu": "100m", "memory": "32Mi" } }),
            "Guaranteed",
            "kubepods.slice/kubepods-pod",
        ),
        (
            "burstable",
            json!({ "requests": { "cpu": "100m" } }),
            "Burstable",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod",
        ),
    ];
    for (name, resources, _, _) in &cases {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "containers": [{ "name": "c", "image": "busybox", "resources": resources }] },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    for (name, _, class, slice) in &cases {
        let pod = await_::pod_ready(&pods, name).await.expect("ready");
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.qos_class.as_deref(), Some(*class));
        let id = status.container_statuses.as_ref().unwrap()[0]
            .container_id
            .clone()
            .unwrap();
        let dir = env.node().cgroup_parent().join(format!(
            "{slice}{}.slice/cri-containerd-{}.scope",
            uid(&pod).replace('-', "_"),
            parse_container_id(&id).unwrap()
        ));
        assert_eq!(
            cgroup::procs(&dir).len(),
            1,
            "{name}: process in {}",
            dir.display()
        );
    }
    env.finish().await.expect("cleanup");
}

async fn create_zero_pdb(pdbs: &Api<PodDisruptionBudget>) {
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": { "name": "target-sts" },
        "spec": { "maxUnavailable": 0, "selector": { "matchLabels": { "name": "target-sts" } } },
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb)
        .await
        .expect("create PDB");
    // The disruption controller must have seen the pod before the PDB means anything.
    await_::object(
        pdbs,
        "target-sts",
        "observed with 1 healthy pod",
        |p: &PodDisruptionBudget| {
            let generation = p.metadata.generation;
            p.status.as_ref().is_some_and(|s| {
                s.observed_generation == generation
                    && s.current_healthy == 1
                    && s.disruptions_allowed == 0
            })
        },
    )
    .await
    .expect("PDB observed");
}

/// The kubelet's termination contract, which drains, evictions and rollouts wait on:
/// SIGTERM, the pod stays Terminating with its process running through the grace
/// period, SIGKILL at its end, then the pod object goes. A second delete with a
/// shorter grace period cuts the wait short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_honours_the_grace_period_and_a_shorter_redelete() {
    use sessionguard_e2e::simnode::IGNORE_SIGTERM_ANNOTATION;
    use std::time::{Duration, Instant};

    let Some(env) = TestEnv::start("grace").await.expect("test env") else {
        return;
    };
    let pods: Api<Pod> = env.api();
    let stubborn = |name: &str, grace: i64| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {IGNORE_SIGTERM_ANNOTATION: "true"}},
            "spec": {
                "terminationGracePeriodSeconds": grace,
                "containers": [{"name": "main", "image": "debian:12"}]
            }
        }))
        .expect("pod")
    };
    for (name, grace) in [("stubborn", 4), ("cut-short", 600)] {
        pods.create(&PostParams::default(), &stubborn(name, grace))
            .await
            .expect("create");
    }
    let a = await_::pod_ready(&pods, "stubborn").await.expect("ready");
    let b = await_::pod_ready(&pods, "cut-short").await.expect("ready");
    let pid_of = |p: &Pod| env.node().container_pids(&uid(p))[0].1;
    let (pid_a, pid_b) = (pid_of(&a), pid_of(&b));

    // --- the whole grace period: SIGTERM is ignored, SIGKILL ends it ---
    let delete = |name: &'static str| {
        let pods = pods.clone();
        async move {
            pods.delete(name, &DeleteParams::default())
                .await
                .expect("delete");
            await_::object(&pods, name, "terminating", |p| {
                p.metadata.deletion_timestamp.is_some()
            })
            .await
            .expect("terminating");
        }
    };
    let deleted = Instant::now();
    delete("stubborn").await;
    assert!(
        procfs::cmdline(pid_a) == STAND_IN,
        "the container still runs after SIGTERM"
    );
    wait::until("the pod object to go", await_::TIMEOUT, || async {
        Ok(pods.get_opt("stubborn").await?.is_none().then_some(()))
    })
    .await
    .expect("deleted");
    let took = deleted.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "the pod went after {took:?}, before its 4 s grace period"
    );
    assert!(
        procfs::cmdline(pid_a).is_empty(),
        "SIGKILL at the end of the grace period"
    );

    // --- a 600 s grace period, then a delete with grace 1 s: gone at once ---
    delete("cut-short").await;
    let shortened = Instant::now();
    let now = DeleteParams {
        grace_period_seconds: Some(1),
        ..DeleteParams::default()
    };
    pods.delete("cut-short", &now).await.expect("re-delete");
    wait::until(
        "the pod object to go after the shorter delete",
        await_::TIMEOUT,
        || async { Ok(pods.get_opt("cut-short").await?.is_none().then_some(())) },
    )
    .await
    .expect("deleted");
    assert!(
        shortened.elapsed() < Duration::from_secs(20),
        "the shorter grace period was ignored ({:?})",
        shortened.elapsed()
    );
    assert!(procfs::cmdline(pid_b).is_empty(), "killed");
    assert!(
        !env.node()
            .cgroup_parent()
            .join(cgroup::pod_slice(cgroup::Qos::BestEffort, &uid(&b)))
            .exists(),
        "cgroups removed"
    );
    env.finish().await.expect("cleanup");
}
