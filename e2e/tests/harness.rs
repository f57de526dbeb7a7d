//! The harness helpers other crates' e2e tests build on: pod-bound tokens that name the
//! node, token kubeconfigs, and workspace binaries run as children.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use sessionguard_e2e::controlplane::kubeconfig;
use sessionguard_e2e::harness::{Child, TestEnv, await_, tokens, workspace_bin};
use sessionguard_e2e::simnode::cgroup::{CgroupRoot, node_prefix};
use sessionguard_e2e::wait;

const TARGET_STS: &str = include_str!("../fixtures/target-sts.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_bound_token_names_pod_and_node_and_works_from_a_kubeconfig() {
    let Some(env) = TestEnv::start("pod-token").await.expect("test env") else {
        return;
    };
    let _: k8s_openapi::api::apps::v1::StatefulSet = env.create_yaml(TARGET_STS).await.unwrap();
    let pod = await_::pod_ready(&env.api(), "target-sts-0").await.unwrap();
    let token = tokens::pod_token(env.client(), "default", &pod, &[], 600)
        .await
        .expect("token");

    let review: TokenReview =
        serde_json::from_value(json!({ "spec": { "token": token } })).unwrap();
    let review = Api::<TokenReview>::all(env.client().clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    let status = review.status.expect("review status");
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.expect("user");
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{}:default", env.ns()).as_str())
    );
    let extra = user.extra.unwrap_or_default();
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["target-sts-0".to_string()])
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/node-name"),
        Some(&vec![env.node_name().to_string()]),
        "the node-name claim ties a token to its node: {extra:?}"
    );

    // The same token through a tokenFile kubeconfig: authenticated, and RBAC applies.
    let dir = env.scratch_dir();
    let kc =
        tokens::write_token_kubeconfig(&env.cluster().info, &dir, "default-sa", &token).unwrap();
    let sa_client = kubeconfig::client(&kc).await.unwrap();
    let err = Api::<Pod>::namespaced(sa_client, env.ns())
        .list(&Default::default())
        .await
        .expect_err("the default ServiceAccount may not list pods");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    env.finish().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cli_as_child_registers_and_removes_its_cgroups_when_stopped() {
    if let Some(reason) = sessionguard_e2e::harness::skip_reason() {
        assert!(
            std::env::var_os("CI").is_none(),
            "cannot run in CI: {reason}"
        );
        eprintln!("SKIPPED node_cli_as_child: {reason}");
        return;
    }
    let cluster = sessionguard_e2e::harness::shared().expect("cluster");
    let bin = workspace_bin("sessionguard-e2e", "sg-cluster").expect("sg-cluster built");
    let name = format!("sim-cli-{}", std::process::id());
    let log = cluster.info.dir.join(format!("{name}.log"));
    let dir = cluster.info.dir.to_string_lossy().into_owned();
    let mut child = Child::spawn(&bin, &["node", "--name", &name, "--dir", &dir], &[], &log)
        .expect("spawn node");

    let client = cluster.info.admin_client().await.unwrap();
    let nodes: Api<Node> = Api::all(client);
    let node = wait::until(&format!("node {name} Ready"), await_::TIMEOUT, || {
        let alive = child.check_running();
        let (nodes, name) = (nodes.clone(), name.clone());
        async move {
            alive?;
            Ok(nodes.get_opt(&name).await?.filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            }))
        }
    })
    .await
    .expect("node ready");
    assert_eq!(
        node.status.unwrap().node_info.unwrap().kubelet_version,
        sessionguard_e2e::simnode::node::kubelet_version()
    );
    let prefix = CgroupRoot::detect()
        .unwrap()
        .path()
        .join(node_prefix(&name));
    assert!(prefix.is_dir(), "{} made", prefix.display());

    child.stop(Duration::from_secs(10));
    assert!(!prefix.exists(), "{} removed on SIGTERM", prefix.display());
    nodes.delete(&name, &Default::default()).await.unwrap();
    let _ = std::fs::remove_file(&log);
}
