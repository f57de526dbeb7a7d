//! `sessionguard-agent run`: the scan loop, the HTTP server and (when
//! configured) the reporter and, with `--pod-names` only, the node's pod
//! watch, wired over one snapshot channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use crate::Error;
use crate::config::RunArgs;
use crate::metrics::Metrics;
use crate::notify::{self, Notifier};
use crate::report::{ForeignSessions, NodePods, ReportWriter, resolve};
use crate::scan::{ProcFs, Scanner, ScannerConfig};
use crate::server::Server;
use crate::snapshot::{self, Snapshot, SnapshotTx};

pub async fn run(args: RunArgs) -> Result<(), Error> {
    let fs = ProcFs::open(&args.proc.proc_root)?;
    let scanner = Scanner::new(
        fs,
        ScannerConfig {
            resync_every: args.resync_every,
            pid_cursor: args.pid_cursor,
            terminal_idle: args.proc.terminal_idle,
            ..ScannerConfig::default()
        },
    )?;
    let (tx, rx) = snapshot::channel(&args.node_name);
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry, rx.clone());

    let listener = Server::bind(args.listen_addr).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Http(e.to_string()))?;
    tracing::info!(%addr, node = %args.node_name, proc_root = %args.proc.proc_root.display(), "listening");
    let server = tokio::spawn(
        Server::new(
            registry,
            rx.clone(),
            args.sessions_argv,
            args.sessions_remote,
        )
        .serve(listener),
    );

    let client = if args.report || args.pod_names {
        Some(
            kube::Client::try_default()
                .await
                .map_err(|e| Error::Kube(format!("no Kubernetes client: {e}")))?,
        )
    } else {
        None
    };
    let pods = match (&client, args.pod_names) {
        (Some(client), true) => {
            NodePods::check_access(client.clone(), &args.node_name).await?;
            let (pods, driver) = NodePods::watch(client.clone(), &args.node_name);
            tokio::spawn(driver);
            // An empty pod index would make every session look foreign and
            // report the node as logged out, so nothing is reported before it syncs.
            tracing::info!("--pod-names: waiting for this node's pods to sync");
            pods.ready().await?;
            Some(pods)
        }
        _ => None,
    };
    if let (Some(client), true) = (client, args.report) {
        let mut writer = ReportWriter::new(
            client,
            args.report_interval,
            args.idle_resolution,
            metrics.clone(),
        )
        .with_argv(args.report_argv);
        if args.notify_terminal {
            let (tx, notices) = notify::channel();
            writer = writer.with_notices(tx);
            let notifier =
                Notifier::new(&args.notify_socket, args.notify_interval, metrics.clone());
            tokio::spawn(notifier.run(notices, rx.clone()));
            tracing::info!(interval = ?args.notify_interval, socket = %args.notify_socket.display(), "terminal notices on, through the notifier");
        }
        tokio::spawn(writer.run(rx));
    }

    // Scanning is blocking file I/O; it gets its own thread so the runtime
    // stays free for HTTP and the API client.
    let interval = args.interval;
    std::thread::Builder::new()
        .name("scan".into())
        .spawn(move || scan_loop(scanner, tx, metrics, pods, interval))
        .map_err(|e| Error::Http(format!("cannot start scan thread: {e}")))?;

    shutdown_signal().await;
    tracing::info!("shutting down");
    server.abort();
    Ok(())
}

fn scan_loop(
    mut scanner: Scanner,
    tx: SnapshotTx,
    metrics: Metrics,
    pods: Option<NodePods>,
    interval: Duration,
) {
    let mut sequence = 0u64;
    let mut foreign = ForeignSessions::default();
    loop {
        let started = Instant::now();
        match scanner.tick() {
            Ok((mut sessions, stats)) => {
                metrics.observe(&stats);
                if let Some(pods) = &pods {
                    let dropped = resolve(&pods.snapshot(), &mut sessions);
                    metrics
                        .foreign_sessions
                        .inc_by(foreign.newly_dropped(&dropped) as u64);
                }
                sequence += 1;
                let node = tx.borrow().node.clone();
                if let Some(was) = &tx.borrow().filtered {
                    tracing::info!(
                        reason = was.reason.label(),
                        "proc root shows every process again; reporting resumes"
                    );
                }
                tx.send_replace(Arc::new(Snapshot {
                    node,
                    sequence,
                    generated_at: jiff::Timestamp::now(),
                    sessions,
                    stats,
                    ready: true,
                    filtered: None,
                }));
            }
            Err(Error::Filtered { path, filtered }) => {
                let last = tx.borrow().clone();
                if last.filtered.as_ref().map(|f| f.reason) != Some(filtered.reason) {
                    tracing::error!(
                        proc_root = %path.display(),
                        reason = filtered.reason.label(),
                        "not ready, reports stopped: {filtered}"
                    );
                }
                // The last trusted sessions stay as they were; nothing of this scan is kept.
                tx.send_replace(Arc::new(Snapshot {
                    filtered: Some(filtered),
                    ..Snapshot::clone(&last)
                }));
            }
            Err(e) => {
                // Only a broken proc root fails a whole scan; keep serving the last snapshot.
                tracing::error!(error = %e, "scan failed");
                metrics
                    .scan_errors
                    .get_or_create(&crate::metrics::KindLabel {
                        kind: e.kind().into(),
                    })
                    .inc();
            }
        }
        if tx.is_closed() {
            return;
        }
        // Pacing, not synchronisation: the next scan is due one interval after this one started.
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
