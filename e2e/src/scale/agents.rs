//! One agent per kwok node, played through the agent's own report code: a
//! [`ReportWriter`] per node, fed snapshots the way the agent's scanner feeds it, writing
//! with a ServiceAccount token bound to an agent pod on that node (as the DaemonSet's
//! projected token), so the API server's SessionReport admission policy checks each
//! write against the node for real. Heartbeats come from the writer itself, on the
//! agent's schedule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use prometheus_client::registry::Registry;
use serde_json::json;
use sessionguard_agent::metrics::Metrics;
use sessionguard_agent::report::ReportWriter;
use sessionguard_agent::snapshot::{self, Snapshot, SnapshotTx};
use sessionguard_core::{ContainerId, PodUid, Session};

use super::kwok::{self, PARALLEL};
use super::progress;
use super::workload::Target;
use crate::controlplane::kubeconfig;
use crate::harness::{TestEnv, identity, tokens};
use crate::{Error, Result};

struct NodeAgent {
    tx: SnapshotTx,
    sessions: Vec<Session>,
    sequence: u64,
}

/// The agents of every kwok node.
pub struct Agents {
    nodes: Mutex<HashMap<String, NodeAgent>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    next_pid: Mutex<u32>,
}

// === impl Agents ===

impl Agents {
    /// Creates an agent pod on every node, requests a token bound to it, and starts
    /// each node's report writer, staggered over one heartbeat (as a DaemonSet's pods
    /// start at different times) so heartbeats do not all fall in the same second.
    pub async fn start(env: &TestEnv, nodes: &[String], heartbeat: Duration) -> Result<Arc<Self>> {
        let started = Instant::now();
        let sa = identity::chart_agent(env).await?;
        let pods: Api<Pod> = env.api();
        let dir = env.scratch_dir().join("agents");
        let clients: Vec<(String, kube::Client)> = stream::iter(nodes.iter().cloned())
            .map(|node| {
                let (pods, sa, dir) = (pods.clone(), sa.clone(), dir.clone());
                async move {
                    let mut spec = json!({
                        "nodeName": node, "serviceAccountName": sa,
                        "containers": [{"name": "agent", "image": "sessionguard/agent:dev"}],
                    });
                    if let (Some(s), serde_json::Value::Object(p)) =
                        (spec.as_object_mut(), kwok::placement())
                    {
                        s.insert("tolerations".into(), p["tolerations"].clone());
                    }
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": format!("agent-{node}"),
                                     "labels": {"app": "sessionguard-agent"}},
                        "spec": spec,
                    }))?;
                    let pod = pods.create(&PostParams::default(), &pod).await?;
                    let token = tokens::pod_token(env.client(), &sa, &pod, &[], 7200).await?;
                    let kc = tokens::write_token_kubeconfig(
                        &env.cluster().info,
                        &dir,
                        &format!("agent-{node}"),
                        &token,
                    )?;
                    Ok::<_, Error>((node, kubeconfig::client(&kc).await?))
                }
            })
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        progress(format!(
            "{} agent pods and tokens in {:.1}s",
            clients.len(),
            started.elapsed().as_secs_f64()
        ));
        let stagger = heartbeat.min(Duration::from_millis(30) * nodes.len() as u32);
        let step = stagger / clients.len().max(1) as u32;
        let mut map = HashMap::new();
        let mut tasks = Vec::new();
        for (node, client) in clients {
            let (tx, rx) = snapshot::channel(&node);
            let metrics = Metrics::register(&mut Registry::default(), rx.clone());
            tasks.push(tokio::spawn(
                ReportWriter::new(client, heartbeat, Duration::from_secs(60), metrics).run(rx),
            ));
            let mut agent = NodeAgent {
                tx,
                sessions: Vec::new(),
                sequence: 0,
            };
            agent.publish(&node);
            map.insert(node, agent);
            tokio::time::sleep(step).await;
        }
        Ok(Arc::new(Self {
            nodes: Mutex::new(map),
            tasks,
            next_pid: Mutex::new(1000),
        }))
    }

    /// A login on `pod`: its node's agent reports a new session at once (the writer
    /// writes when the sessions change). Returns the session's pid.
    pub fn login(&self, pod: &Target) -> Result<u32> {
        let pid = {
            let mut n = self.next_pid.lock().expect("pid lock");
            *n += 1;
            *n
        };
        let session = Session {
            pod_uid: PodUid::parse(&pod.uid).map_err(|e| Error::Invalid(e.to_string()))?,
            container_id: ContainerId::parse(&format!("{:064x}", u128::from(pid)))
                .map_err(|e| Error::Invalid(e.to_string()))?,
            tty: format!("pts/{}", pid % 64),
            pid,
            command: "bash".into(),
            argv: vec!["bash".into(), "-l".into()],
            uid: 1000,
            started_at: jiff::Timestamp::now(),
            processes: 1,
            console: false,
            init: false,
            idle_seconds: 0,
            namespace: Some(pod.namespace.clone()),
            pod_name: Some(pod.name.clone()),
            container_name: Some("app".into()),
        };
        let mut nodes = self.nodes.lock().expect("agents lock");
        let agent = nodes
            .get_mut(&pod.node)
            .ok_or_else(|| Error::Invalid(format!("no agent on node {}", pod.node)))?;
        agent.sessions.push(session);
        agent.publish(&pod.node);
        Ok(pid)
    }

    /// The session `pid` on `pod`'s node ends.
    pub fn logout(&self, pod: &Target, pid: u32) {
        let mut nodes = self.nodes.lock().expect("agents lock");
        if let Some(agent) = nodes.get_mut(&pod.node) {
            agent.sessions.retain(|s| s.pid != pid);
            agent.publish(&pod.node);
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

// === impl NodeAgent ===

impl NodeAgent {
    /// What the agent's scan loop does after a scan: a new snapshot on the channel.
    fn publish(&mut self, node: &str) {
        self.sequence += 1;
        self.tx.send_replace(Arc::new(Snapshot {
            node: node.to_string(),
            sequence: self.sequence,
            generated_at: jiff::Timestamp::now(),
            sessions: self.sessions.clone(),
            ready: true,
            ..Snapshot::default()
        }));
    }
}
