//! Command line and environment. Every flag has an `env` twin so the
//! DaemonSet can be configured without a shell.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sessionguard-agent",
    version,
    about = "Finds terminal sessions in this node's pods and reports them"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "SESSIONGUARD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter in tracing-subscriber syntax (e.g. `info`, `sessionguard_agent=debug`).
    #[arg(long, env = "SESSIONGUARD_LOG", default_value = "info", global = true)]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan once, print the sessions and exit: how an operator debugs a node.
    Scan(ScanArgs),
    /// Run the daemon: scan on an interval, serve metrics and /sessions, report.
    Run(RunArgs),
    /// Write notice lines into sessions' terminals for the agent (`run
    /// --notify-terminal`): the one process that holds the rights to, in its
    /// own container.
    Notifier(NotifierArgs),
}

/// Where the agent asks the notifier (a directory only the agent pod's
/// containers mount).
pub const NOTIFY_SOCKET: &str = "/run/sessionguard/notify.sock";

#[derive(Debug, Args)]
pub struct NotifierArgs {
    /// Where the host's proc filesystem is mounted (`/host/proc` in a pod).
    #[arg(long, env = "SESSIONGUARD_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// The Unix socket to listen on (a stale socket there is replaced; any
    /// other file is an error).
    #[arg(long, env = "SESSIONGUARD_NOTIFY_SOCKET", default_value = NOTIFY_SOCKET)]
    pub socket: PathBuf,
    /// Answer only callers with this uid (the agent's), as the kernel reports
    /// it for the connection; unset: any caller that can reach the socket.
    #[arg(long, env = "SESSIONGUARD_NOTIFY_CLIENT_UID")]
    pub client_uid: Option<u32>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Json,
    Table,
}

#[derive(Debug, Args)]
pub struct ProcArgs {
    /// Where the host's proc filesystem is mounted (`/host/proc` in a pod).
    #[arg(long, env = "SESSIONGUARD_PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Take idle time from the terminal's access time (as `w` does) where the
    /// agent may read it (same uid or CAP_SYS_PTRACE); else, or when false,
    /// from the session's processes' CPU time and context switches.
    #[arg(long, env = "SESSIONGUARD_TERMINAL_IDLE", default_value_t = true, action = clap::ArgAction::Set)]
    pub terminal_idle: bool,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub proc: ProcArgs,
    /// Output format.
    #[arg(
        long,
        short = 'o',
        env = "SESSIONGUARD_OUTPUT",
        value_enum,
        default_value = "table"
    )]
    pub output: Output,
    /// Name the sessions' namespaces, pods and containers by listing pods with
    /// this kubeconfig (it needs `list pods`; the agent's own identity has
    /// none). Without it sessions are shown by pod UID and container ID.
    /// Never taken from `KUBECONFIG`: reading pods is an explicit choice.
    #[arg(long, env = "SESSIONGUARD_SCAN_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// With `--kubeconfig`: list only this node's pods (field selector
    /// `spec.nodeName`); all pods without it. Ignored without `--kubeconfig`.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub proc: ProcArgs,
    /// This node's name (from the downward API in the DaemonSet).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Address for /metrics, /healthz, /readyz and /sessions.
    #[arg(long, env = "SESSIONGUARD_LISTEN_ADDR", default_value = "0.0.0.0:9102")]
    pub listen_addr: SocketAddr,
    /// Time between scans (Go-style duration: 500ms, 1s, 2s).
    #[arg(long, env = "SESSIONGUARD_INTERVAL", default_value = "500ms", value_parser = duration)]
    pub interval: Duration,
    /// Every n-th scan re-reads every process instead of only new ones.
    #[arg(long, env = "SESSIONGUARD_RESYNC_EVERY", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub resync_every: u32,
    /// Between resyncs, skip listing the proc root on ticks where the pid
    /// cursor names the new pids (false: every tick lists).
    #[arg(long, env = "SESSIONGUARD_PID_CURSOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub pid_cursor: bool,
    /// Write this node's SessionReport to the API server (KUBECONFIG or in-cluster credentials).
    #[arg(long, env = "SESSIONGUARD_REPORT", default_value_t = true, action = clap::ArgAction::Set)]
    pub report: bool,
    /// Longest time between two report writes when nothing changes (the heartbeat).
    #[arg(long, env = "SESSIONGUARD_REPORT_INTERVAL", default_value = "30s", value_parser = duration)]
    pub report_interval: Duration,
    /// Smallest idle time the SessionReport tells apart from 0; above it, idle
    /// is reported rounded down to this times a power of two.
    #[arg(long, env = "SESSIONGUARD_IDLE_RESOLUTION", default_value = "1m", value_parser = duration)]
    pub idle_resolution: Duration,
    /// Show each session's argv on `GET /sessions` (off: the command name only;
    /// argv can carry secrets typed on a command line, and the port is open to
    /// whoever may scrape metrics). For the SessionReport see `--report-argv`.
    #[arg(long, env = "SESSIONGUARD_SESSIONS_ARGV", default_value_t = false, action = clap::ArgAction::Set)]
    pub sessions_argv: bool,
    /// Answer `GET /sessions` to callers off loopback too (off: loopback
    /// only, which is where `kubectl port-forward` arrives; the sessions name
    /// users, commands and pods, and the port is also the metrics port).
    #[arg(long, env = "SESSIONGUARD_SESSIONS_REMOTE", default_value_t = false, action = clap::ArgAction::Set)]
    pub sessions_remote: bool,
    /// Put each session's argv into the SessionReport (off: the command
    /// name and the session's facts only; command lines hold passwords and
    /// tokens, and reports are readable by whoever may list them).
    #[arg(long, env = "SESSIONGUARD_REPORT_ARGV", default_value_t = false, action = clap::ArgAction::Set)]
    pub report_argv: bool,
    /// Watch this node's pods to fill namespace, pod and container names into
    /// the report, `/sessions` and metrics, and drop sessions of pods the API
    /// server does not place on this node. Off by default: the agent then
    /// reads no pods at all (its identity has no pod read; the chart grants it
    /// only with `agent.podNames`), reports pod UID and container ID, and the
    /// controller names and checks the pods.
    #[arg(long, env = "SESSIONGUARD_POD_NAMES", default_value_t = false, action = clap::ArgAction::Set)]
    pub pod_names: bool,
    /// Write the controller's notices (a drain waiting on the session, its
    /// protection nearing --max-protection) into the session's terminal, one
    /// line like `wall`, through the notifier listening on --notify-socket
    /// (`sessionguard-agent notifier`, which holds the rights; the agent needs
    /// none for this). The controller must run with --notify-terminal too.
    #[arg(long, env = "SESSIONGUARD_NOTIFY_TERMINAL", default_value_t = false, action = clap::ArgAction::Set)]
    pub notify_terminal: bool,
    /// With --notify-terminal: at most one line per session this often (a
    /// notice that stays is told again after it).
    #[arg(long, env = "SESSIONGUARD_NOTIFY_INTERVAL", default_value = "5m", value_parser = duration)]
    pub notify_interval: Duration,
    /// With --notify-terminal: the notifier's socket.
    #[arg(long, env = "SESSIONGUARD_NOTIFY_SOCKET", default_value = NOTIFY_SOCKET)]
    pub notify_socket: PathBuf,
}

pub use sessionguard_core::duration::positive_flag as duration;

#[cfg(test)]
mod readme {
    use clap::CommandFactory;

    #[test]
    fn the_readme_documents_every_flag_and_its_variable() {
        let readme = include_str!("../../README.md");
        let cmd = super::Cli::command();
        if let Err(e) = sessionguard_core::flag_docs::check(readme, "#### Agent flags", &cmd, 20) {
            panic!("{e}");
        }
    }
}
