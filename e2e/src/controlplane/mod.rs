//! The control plane as plain processes: etcd, kube-apiserver, kube-controller-manager
//! and kube-scheduler, with a generated PKI and kubeconfigs in one state directory:
//!
//! ```text
//! <dir>/cluster.json        what other processes need to use it (ClusterInfo)
//! <dir>/admin.kubeconfig    system:masters client certificate
//! <dir>/pki/                CA, serving and client certificates, SA key, the API
//!                           server's webhook client certificate (webhook_client)
//! <dir>/logs/<name>.log     component output, kept after a failure
//! <dir>/pids/<name>.pid     "<pid> <start time>" of each component
//! ```

pub mod apiserver;
pub mod certs;
mod component;
pub mod controller_manager;
pub mod etcd;
pub mod kubeconfig;
pub mod process;
pub mod scheduler;
pub mod webhook_client;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use serde::{Deserialize, Serialize};

pub use self::certs::{CertFiles, Pki};
pub use self::kubeconfig::Credentials;
pub use self::process::{Lifetime, Proc};
use crate::error::Context;
use crate::{Error, Result, wait};

/// Components in start order; stopped in reverse.
pub const COMPONENTS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// How to start a control plane.
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub dir: PathBuf,
    pub lifetime: Lifetime,
    pub timeout: Duration,
}

/// What another process needs to use a running control plane (`<dir>/cluster.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub dir: PathBuf,
    pub server: String,
    pub admin_kubeconfig: PathBuf,
}

/// A control plane started by this process.
#[derive(Debug)]
pub struct ControlPlane {
    info: ClusterInfo,
    procs: Vec<Proc>,
    started_in: Duration,
}

// === impl ControlPlane ===

impl ControlPlane {
    /// Starts all four components and returns once the API server is ready, the
    /// controller-manager has created the `default` ServiceAccount and the scheduler is
    /// healthy.
    pub async fn start(opts: &StartOptions) -> Result<Self> {
        let begin = Instant::now();
        let dir = &opts.dir;
        for sub in ["logs", "pids"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
        let pki = Pki::create(&dir.join("pki"))?;
        let [etcd_port, peer_port, api_port, kcm_port, sched_port] = free_ports()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let info = ClusterInfo {
            dir: dir.clone(),
            server: server.clone(),
            admin_kubeconfig: dir.join("admin.kubeconfig"),
        };
        let admin = pki.client("admin", "sessionguard-admin", &["system:masters"])?;
        kubeconfig::write(
            &info.admin_kubeconfig,
            &server,
            &pki.ca_cert(),
            "admin",
            Credentials::Cert(&admin),
        )?;
        let mut cp = Self {
            info,
            procs: Vec::new(),
            started_in: Duration::ZERO,
        };

        cp.spawn(
            "etcd",
            etcd::command(&dir.join("etcd"), etcd_port, peer_port)?,
            opts,
        )?;
        cp.spawn(
            "kube-apiserver",
            apiserver::command(&pki, api_port, etcd_port)?,
            opts,
        )?;
        let client = kubeconfig::client(&cp.info.admin_kubeconfig).await?;
        cp.await_healthy(
            &client,
            api_port,
            "/readyz",
            "kube-apiserver /readyz",
            opts.timeout,
        )
        .await?;

        let kcm_kc = cp.component_kubeconfig(&pki, "kube-controller-manager")?;
        let sched_kc = cp.component_kubeconfig(&pki, "kube-scheduler")?;
        cp.spawn(
            "kube-controller-manager",
            controller_manager::command(&pki, &kcm_kc, kcm_port)?,
            opts,
        )?;
        cp.spawn(
            "kube-scheduler",
            scheduler::command(&pki, &sched_kc, sched_port)?,
            opts,
        )?;
        let sched = insecure_client(sched_port)?;
        cp.await_healthy(
            &sched,
            sched_port,
            "/healthz",
            "kube-scheduler /healthz",
            opts.timeout,
        )
        .await?;
        let sas: Api<ServiceAccount> = Api::namespaced(client, "default");
        let procs = &mut cp.procs;
        wait::until(
            "kube-controller-manager to create ServiceAccount default/default",
            opts.timeout,
            || {
                let res = procs.iter_mut().try_for_each(Proc::check_running);
                let sas = sas.clone();
                async move {
                    res?;
                    Ok(sas.get_opt("default").await?.map(|_| ()))
                }
            },
        )
        .await?;

        let json = serde_json::to_string_pretty(&cp.info)?;
        let path = dir.join("cluster.json");
        std::fs::write(&path, json).ctx(|| format!("writing {}", path.display()))?;
        cp.started_in = begin.elapsed();
        Ok(cp)
    }

    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    /// Wall time from start until everything was ready.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Stops every component, newest first.
    pub fn stop(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Leaves detached components running (`make dev-up`); `stop_dir` stops them later.
    pub fn release(mut self) {
        for p in self.procs.drain(..) {
            p.release();
        }
    }

    fn spawn(&mut self, name: &str, cmd: std::process::Command, opts: &StartOptions) -> Result<()> {
        let log = opts.dir.join("logs").join(format!("{name}.log"));
        let p = Proc::spawn(name, cmd, &log, opts.lifetime)?;
        p.write_pidfile(&pidfile(&opts.dir, name))?;
        self.procs.push(p);
        Ok(())
    }

    fn component_kubeconfig(&self, pki: &Pki, name: &str) -> Result<PathBuf> {
        let user = format!("system:{name}");
        let files = pki.client(name, &user, &[])?;
        let path = self.info.dir.join(format!("{name}.kubeconfig"));
        kubeconfig::write(
            &path,
            &self.info.server,
            &pki.ca_cert(),
            &user,
            Credentials::Cert(&files),
        )?;
        Ok(path)
    }

    async fn await_healthy(
        &mut self,
        client: &kube::Client,
        port: u16,
        path: &str,
        what: &str,
        timeout: Duration,
    ) -> Result<()> {
        let procs = &mut self.procs;
        wait::until(what, timeout, || {
            let res = procs.iter_mut().try_for_each(Proc::check_running);
            let client = client.clone();
            let req = http::Request::get(path).body(Vec::new());
            async move {
                res?;
                let req = req.map_err(|e| Error::Invalid(e.to_string()))?;
                // Until the port listens, the client would log every refused connection.
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
                // Connection refused and 500s just mean "not yet".
                Ok(match client.request_text(req).await {
                    Ok(body) if body.trim() == "ok" => Some(()),
                    _ => None,
                })
            }
        })
        .await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Whatever was not released (a failed start, a test run) stops, newest first.
        self.stop();
    }
}

// === impl ClusterInfo ===

impl ClusterInfo {
    /// Reads `<dir>/cluster.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("cluster.json");
        let text = std::fs::read_to_string(&path).ctx(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    pub fn pki(&self) -> Pki {
        Pki::open(&self.dir.join("pki"))
    }

    /// Whether every component recorded in the pidfiles is still running.
    pub fn is_running(&self) -> bool {
        COMPONENTS
            .iter()
            .all(|c| process::pidfile_alive(&pidfile(&self.dir, c)))
    }

    /// A client authenticated as a member of `system:masters`.
    pub async fn admin_client(&self) -> Result<kube::Client> {
        kubeconfig::client(&self.admin_kubeconfig).await
    }

    /// A kubeconfig for node `name` (user `system:node:<name>` in `system:nodes`), as a
    /// kubelet would have after TLS bootstrap; the Node authoriser and NodeRestriction
    /// then limit it to its own Node and pods.
    pub fn node_kubeconfig(&self, name: &str) -> Result<PathBuf> {
        let pki = self.pki();
        let user = format!("system:node:{name}");
        let files = pki.client(&format!("node-{name}"), &user, &["system:nodes"])?;
        let path = self.dir.join("nodes").join(format!("{name}.kubeconfig"));
        kubeconfig::write(
            &path,
            &self.server,
            &pki.ca_cert(),
            &user,
            Credentials::Cert(&files),
        )?;
        Ok(path)
    }

    /// Writes a kubeconfig for this cluster that authenticates with a token file.
    pub fn write_token_kubeconfig(&self, path: &Path, user: &str, token_file: &Path) -> Result<()> {
        kubeconfig::write(
            path,
            &self.server,
            &self.pki().ca_cert(),
            user,
            Credentials::TokenFile(token_file),
        )
    }
}

/// Stops the components recorded under `dir` (newest first). Returns how many ran.
pub fn stop_dir(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for c in COMPONENTS.iter().rev() {
        if process::stop_pidfile(&pidfile(dir, c), Duration::from_secs(10))? {
            n += 1;
        }
    }
    Ok(n)
}

fn pidfile(dir: &Path, name: &str) -> PathBuf {
    dir.join("pids").join(format!("{name}.pid"))
}

/// Ports picked by binding to port 0 on loopback; all held until every one is chosen
/// so none repeats.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .ctx(|| "finding free loopback ports".to_string())?;
    let mut ports = [0; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l
            .local_addr()
            .ctx(|| "reading a bound port".to_string())?
            .port();
    }
    Ok(ports)
}

/// A client for a component's self-signed health endpoint (loopback only).
fn insecure_client(port: u16) -> Result<kube::Client> {
    let uri: http::Uri = format!("https://127.0.0.1:{port}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| Error::Invalid(e.to_string()))?;
    let mut config = kube::Config::new(uri);
    config.accept_invalid_certs = true;
    Ok(kube::Client::try_from(config)?)
}
