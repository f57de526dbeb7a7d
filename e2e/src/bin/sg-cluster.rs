//! sg-cluster: the local Kubernetes for `make dev-up`, `make demo` and manual poking.
//!
//! - `up` / `down` / `status`: control plane + simulated nodes in the background;
//! - `node`: one simulated node in the foreground (what `up` runs per node);
//! - `exec`: an interactive pty session in a pod's container (our `kubectl exec -it`).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sessionguard_e2e::controlplane::ClusterInfo;
use sessionguard_e2e::controlplane::kubeconfig;
use sessionguard_e2e::simnode::{Session, SimNode, SimNodeConfig};
use sessionguard_e2e::{devcluster, paths};

#[derive(Parser)]
#[command(
    version,
    about = "Local control plane and simulated nodes for sessionguard"
)]
struct Args {
    /// State directory of the dev cluster (pidfiles, logs, PKI, kubeconfigs).
    #[arg(long, global = true, env = "SG_CLUSTER_DIR", default_value_os_t = paths::dev_dir().join("cluster"))]
    dir: PathBuf,

    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "SG_LOG_JSON")]
    log_json: bool,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the control plane and simulated nodes in the background (idempotent).
    Up {
        /// Simulated nodes to run.
        #[arg(
            long = "node",
            env = "SG_NODES",
            value_delimiter = ',',
            default_value = "sim-dev"
        )]
        nodes: Vec<String>,
        /// Where to copy the admin kubeconfig.
        #[arg(long, env = "SG_KUBECONFIG_OUT", default_value_os_t = paths::dev_dir().join("kubeconfig"))]
        kubeconfig_out: PathBuf,
    },
    /// Stop everything `up` (and dev.sh) started and remove its cgroups (idempotent).
    Down,
    /// Show processes and nodes; exits 1 when the control plane is not running.
    Status,
    /// Run one simulated node in the foreground until SIGTERM/SIGINT.
    Node {
        /// Node name.
        #[arg(long, env = "SG_NODE_NAME")]
        name: String,
        /// Put kubepods.slice at the cgroup root instead of below sessionguard-sim-<name>.slice.
        #[arg(long, env = "SG_NODE_NO_PREFIX")]
        no_prefix: bool,
    },
    /// Open a pty session in a pod's container; stdin is typed into it, its output is
    /// printed. Closes (hangs up) on stdin EOF, SIGINT or SIGTERM.
    Exec {
        /// Namespace of the pod.
        #[arg(long, short, env = "SG_EXEC_NAMESPACE", default_value = "default")]
        namespace: String,
        /// Container name (default: the first container).
        #[arg(long, short, env = "SG_EXEC_CONTAINER")]
        container: Option<String>,
        /// kubeconfig to read the pod with (default: the dev cluster's admin kubeconfig).
        #[arg(long, env = "SG_EXEC_KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// Pod name.
        #[arg(env = "SG_EXEC_POD")]
        pod: String,
        /// Command to run (default: sh).
        #[arg(last = true, env = "SG_EXEC_COMMAND", value_delimiter = ' ')]
        command: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_json);
    match args.cmd {
        Cmd::Up {
            nodes,
            kubeconfig_out,
        } => {
            devcluster::up(&args.dir, &nodes, &kubeconfig_out).await?;
            println!("kubeconfig: {}", kubeconfig_out.display());
        }
        Cmd::Down => devcluster::down(&args.dir).await?,
        Cmd::Status => {
            if !devcluster::status(&args.dir).await? {
                std::process::exit(1);
            }
        }
        Cmd::Node { name, no_prefix } => run_node(&args.dir, &name, no_prefix).await?,
        Cmd::Exec {
            namespace,
            container,
            kubeconfig,
            pod,
            command,
        } => {
            let kc = kubeconfig.unwrap_or_else(|| args.dir.join("admin.kubeconfig"));
            exec(&kc, &namespace, &pod, container, command).await?;
        }
    }
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| // Readiness polling makes kube log every refused probe as an error; we report our own.
        tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off,kube_client::client::tls=error"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        fmt.json().init();
    } else {
        fmt.init();
    }
}

async fn run_node(dir: &std::path::Path, name: &str, no_prefix: bool) -> anyhow::Result<()> {
    let info = ClusterInfo::load(dir).context("is the control plane up? (make dev-up)")?;
    let client = kubeconfig::client(&info.node_kubeconfig(name)?).await?;
    let mut cfg = SimNodeConfig::new(name)?;
    cfg.prefixed = !no_prefix;
    let node = SimNode::start(client, cfg).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(
        node = name,
        "stopping: killing containers, removing cgroups"
    );
    node.stop().await?;
    Ok(())
}

async fn exec(
    kc: &std::path::Path,
    ns: &str,
    pod: &str,
    container: Option<String>,
    command: Vec<String>,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let client = kubeconfig::client(kc).await?;
    let container = match container {
        Some(c) => c,
        None => kube::Api::<Pod>::namespaced(client.clone(), ns)
            .get(pod)
            .await?
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .map(|c| c.name)
            .context("pod has no containers")?,
    };
    let argv: Vec<&str> = if command.is_empty() {
        vec!["sh"]
    } else {
        command.iter().map(String::as_str).collect()
    };
    let session = Session::open_in_pod(&client, ns, pod, &container, &argv).await?;
    eprintln!(
        "session pid={} tty={} cgroup={}",
        session.pid(),
        session.tty().display(),
        session.cgroup().display()
    );
    let master = session.master().context("session has no pty")?.as_raw_fd();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(2);
    // Blocking relays on plain threads: pty output to stdout, stdin into the pty.
    // SAFETY: `master` stays open until `session.close()` below; the relays only use it
    // through dup'd descriptors they own.
    let out_fd = nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(master) })?;
    let in_fd = nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(master) })?;
    let tx_out = tx.clone();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(out_fd);
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        // EIO once the session's last process has closed the terminal.
        while let Ok(n @ 1..) = f.read(&mut buf) {
            let _ = stdout.write_all(&buf[..n]);
            let _ = stdout.flush();
        }
        let _ = tx_out.blocking_send("the session ended");
    });
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(in_fd);
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        while let Ok(n @ 1..) = stdin.read(&mut buf) {
            if f.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = tx.blocking_send("stdin closed");
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let why = tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        Some(why) = rx.recv() => why,
    };
    let status = session.close()?;
    eprintln!("session closed ({why}): {status}");
    std::process::exit(0);
}
