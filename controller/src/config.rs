//! Command-line flags; every one also reads an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sessionguard_core::duration::{flag as duration, positive_flag as positive};
use sessionguard_core::scope::Namespaces;
use sessionguard_core::{cap, pod_plan};

use crate::face::admission::WebhookConfig;
use crate::io::lease::Elector;
use crate::io::metrics::Metrics;
use crate::reconcile::{self, evict};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// sessionguard controller: protects logged-in pods, holds back OnDelete
/// StatefulSet updates, records interactions and evicts drifted pods.
#[derive(Clone, Debug, Parser)]
#[command(name = "sessionguard-controller", version)]
pub struct Config {
    /// Without a subcommand: run the controller.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "SESSIONGUARD_LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,

    #[arg(
        long,
        global = true,
        env = "SESSIONGUARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// How long a node's sessions stay trusted after its agent's last report.
    /// Protection an agent established is kept this long when it goes silent,
    /// then released with an event.
    #[arg(long, env = "SESSIONGUARD_AGENT_GRACE", value_parser = positive, default_value = "2m")]
    pub agent_grace: Duration,

    /// Keep the PDB this long after the last session ends (covers a quick re-login).
    #[arg(long, env = "SESSIONGUARD_RELEASE_GRACE", value_parser = duration, default_value = "0s")]
    pub release_grace: Duration,

    /// Release protection after this long even if sessions continue (Warning event).
    /// Off unless set.
    #[arg(long, env = "SESSIONGUARD_MAX_PROTECTION", value_parser = positive)]
    pub max_protection: Option<Duration>,

    /// Warning event when protection has lasted this fraction of its cap
    /// (--max-protection or a namespace's lower one): `80%` or `0.8`; `0` off.
    #[arg(long, env = "SESSIONGUARD_MAX_PROTECTION_WARN_AT", value_parser = cap::warn_at_flag, default_value = "80%")]
    pub max_protection_warn_at: u8,
    /// A login idle this long stops counting for protection (Warning event when
    /// that releases a pod); activity brings protection back. Off unless set.
    #[arg(long, env = "SESSIONGUARD_IDLE_RELEASE", value_parser = positive)]
    pub idle_release: Option<Duration>,

    /// Publish terminal notices (a drain waiting on a login, protection nearing
    /// its cap) in each node's SessionReport status, for agents run with
    /// --notify-terminal to write into the session's terminal. Needs `patch`
    /// on sessionreports/status.
    #[arg(long, env = "SESSIONGUARD_NOTIFY_TERMINAL", default_value_t = false, action = clap::ArgAction::Set)]
    pub notify_terminal: bool,

    /// With --notify-terminal: a drain is told in the terminal once its
    /// evictions of the pod have been refused for this long.
    #[arg(long, env = "SESSIONGUARD_NOTIFY_TERMINAL_AFTER", value_parser = duration, default_value = "2m")]
    pub notify_terminal_after: Duration,

    /// Record interactions (label + annotations) for terminal logins the agents see.
    #[arg(long, env = "SESSIONGUARD_RECORD_INTERACTIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub record_interactions: bool,

    /// Evict interacted pods once their evict-at time passes (drift eviction).
    #[arg(long, env = "SESSIONGUARD_EVICT_INTERACTED", default_value_t = false, action = clap::ArgAction::Set)]
    pub evict_interacted: bool,

    /// Time from first interaction to eviction (recorded on the pod at first interaction).
    #[arg(long, env = "SESSIONGUARD_TTL", value_parser = positive, default_value = "10m")]
    pub ttl: Duration,

    /// The only namespaces sessionguard acts in (comma-separated): protects,
    /// records, evicts and rolls out there and nowhere else; empty: every
    /// namespace. The chart's admission policies hold the controller's token
    /// to the same list (`controller.namespaces`).
    #[arg(long, env = "SESSIONGUARD_NAMESPACES", value_delimiter = ',', value_parser = namespace_name)]
    pub namespaces: Vec<String>,

    /// Namespaces whose pods are never drift-evicted (comma-separated).
    #[arg(long, env = "SESSIONGUARD_NAMESPACE_ALLOWLIST", value_delimiter = ',')]
    pub namespace_allowlist: Vec<String>,

    /// Replace outdated pods of protected OnDelete StatefulSets.
    #[arg(long, env = "SESSIONGUARD_ROLLOUT", default_value_t = true, action = clap::ArgAction::Set)]
    pub rollout: bool,

    /// A rollout blocked on the same pod (terminating, never Ready, eviction
    /// refused by a PDB not ours) this long is stuck: Warning event, gauge.
    #[arg(long, env = "SESSIONGUARD_ROLLOUT_STUCK_AFTER", value_parser = positive, default_value = "15m")]
    pub rollout_stuck_after: Duration,

    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        global = true,
        env = "POD_NAMESPACE",
        default_value = "sessionguard-system"
    )]
    pub lease_namespace: String,

    #[arg(
        long,
        global = true,
        env = "SESSIONGUARD_LEASE_NAME",
        default_value = "sessionguard-controller"
    )]
    pub lease_name: String,

    /// How long a leader's Lease is honoured without renewal.
    #[arg(long, global = true, env = "SESSIONGUARD_LEASE_DURATION", value_parser = positive, default_value = "15s")]
    pub lease_duration: Duration,

    /// This replica's name in the Lease (defaults to hostname-pid).
    #[arg(long, global = true, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Upper bound on every write to the API server.
    #[arg(long, global = true, env = "SESSIONGUARD_WRITE_TIMEOUT", value_parser = positive, default_value = "10s")]
    pub write_timeout: Duration,

    /// Parallel pod reconciles.
    #[arg(long, env = "SESSIONGUARD_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// The release whose admission policies narrow this controller's rights:
    /// they are named `<this>-controller-pods`, `-pdbs`, `-webhooks` and
    /// `-statefulsets`.
    #[arg(
        long,
        env = "SESSIONGUARD_ADMISSION_POLICIES",
        default_value = "sessionguard"
    )]
    pub admission_policies: String,

    /// Act only while those policies are in force as this version ships them
    /// (otherwise: NotReady, a Warning event, `sessionguard_admission_policies_missing`).
    /// false accepts running without them: RBAC alone then lets this
    /// controller's token patch any pod and delete any PodDisruptionBudget.
    #[arg(long, env = "SESSIONGUARD_REQUIRE_ADMISSION_POLICIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub require_admission_policies: bool,

    /// How often policies found in force are read again. One deleted or changed
    /// later stops the controller (it exits; restarted, it waits for them).
    #[arg(long, env = "SESSIONGUARD_ADMISSION_POLICIES_RECHECK", value_parser = positive, default_value = "30s")]
    pub admission_policies_recheck: Duration,

    #[command(flatten)]
    pub webhook: WebhookConfig,
}

#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Uninstall: take the Lease from the running controller, delete every
    /// PodDisruptionBudget of ours, remove our labels and annotations from
    /// every pod and restore the autoscaler annotations, then keep the Lease
    /// so no replica leads again before the release is deleted. Idempotent.
    /// Uses the global Lease, identity and write-timeout flags.
    Cleanup(CleanupArgs),
    /// Uninstall, after the release is deleted: wait until the agents' pods
    /// are gone, then delete every SessionReport, so no session data outlives
    /// the release. Idempotent. Uses the global namespace and write-timeout flags.
    DeleteReports(DeleteReportsArgs),
}

#[derive(Clone, Debug, Args)]
pub struct DeleteReportsArgs {
    /// Label selector of the agents' pods in the release namespace
    /// (`--lease-namespace`); the reports are deleted once none is left.
    #[arg(long, env = "SESSIONGUARD_AGENT_SELECTOR")]
    pub agent_selector: String,

    /// How long to wait for the agents' pods to go; then the reports are
    /// deleted anyway and the run exits 1, naming the pods still there.
    #[arg(long, env = "SESSIONGUARD_DELETE_REPORTS_TIMEOUT", value_parser = positive, default_value = "3m")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, Args)]
pub struct CleanupArgs {
    /// How long the Lease is kept at the end (no replica leads meanwhile); the
    /// controller's ServiceAccount becomes its owner, so it goes with the release.
    #[arg(long, env = "SESSIONGUARD_CLEANUP_HOLD_LEASE_FOR", value_parser = positive, default_value = "10m")]
    pub hold_lease_for: Duration,

    /// Upper bound on the whole cleanup (Lease wait included); exceeded: exit 1.
    #[arg(long, env = "SESSIONGUARD_CLEANUP_TIMEOUT", value_parser = positive, default_value = "5m")]
    pub timeout: Duration,
}

impl Config {
    /// Combinations of flags that each parse but together would make the
    /// controller misbehave quietly; refused at start with what to change.
    pub fn check(&self) -> Result<(), String> {
        let w = &self.webhook;
        if w.cert_renew_before >= w.cert_validity {
            return Err(format!(
                "--webhook-cert-renew-before ({}) must be shorter than --webhook-cert-validity ({}): \
                 the certificate would be renewed on every check",
                sessionguard_core::duration::format(w.cert_renew_before),
                sessionguard_core::duration::format(w.cert_validity),
            ));
        }
        if w.ca_validity < w.cert_validity {
            return Err(format!(
                "--webhook-ca-validity ({}) must not be shorter than --webhook-cert-validity ({}): \
                 the serving certificate would outlive its CA",
                sessionguard_core::duration::format(w.ca_validity),
                sessionguard_core::duration::format(w.cert_validity),
            ));
        }
        Ok(())
    }

    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "sessionguard".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// The terminal notices' settings, when they are on.
    pub fn notice_settings(&self) -> Option<reconcile::notices::Settings> {
        self.notify_terminal
            .then_some(reconcile::notices::Settings {
                after: self.notify_terminal_after,
            })
    }

    /// The leader election on `--lease-namespace`/`--lease-name` for `identity`
    /// (the controller's, or the uninstall cleanup's own).
    pub fn elector(&self, client: kube::Client, identity: &str, metrics: Metrics) -> Elector {
        Elector::new(
            client,
            &self.lease_namespace,
            &self.lease_name,
            identity,
            self.lease_duration,
            metrics,
        )
    }

    /// Where sessionguard acts (`--namespaces`; every name was checked when
    /// parsed).
    pub fn namespaces(&self) -> Namespaces {
        Namespaces::parse(&self.namespaces).expect("checked by the flag's parser")
    }

    /// The reconciles' settings: plain values, so nothing below the wiring
    /// depends on the command line.
    pub fn reconcile_settings(&self) -> reconcile::Settings {
        reconcile::Settings {
            plan: pod_plan::Settings {
                release_grace: self.release_grace,
                max_protection: self.max_protection,
                max_protection_warn: self.max_protection_warn_at,
                idle_release: self.idle_release,
                record_interactions: self.record_interactions,
                ttl: self.ttl,
                max_extension: self.webhook.max_extension,
            },
            evict: evict::Settings {
                enabled: self.evict_interacted,
                namespace_allowlist: self.namespace_allowlist.clone(),
            },
            rollout: self.rollout,
            rollout_stuck_after: self.rollout_stuck_after,
        }
    }
}

/// One `--namespaces` entry: a name a namespace can have (or empty).
fn namespace_name(s: &str) -> Result<String, String> {
    Namespaces::parse(&[s]).map(|_| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_lists() {
        let c = Config::try_parse_from([
            "c",
            "--ttl",
            "1h30m",
            "--max-protection",
            "2d",
            "--namespace-allowlist",
            "kube-system,ops",
            "--evict-interacted",
            "true",
            "--idle-release",
            "30m",
        ])
        .unwrap();
        assert_eq!(c.ttl, Duration::from_secs(5400));
        assert_eq!(c.max_protection, Some(Duration::from_secs(172_800)));
        assert!(c.evict_interacted);
        let s = c.reconcile_settings();
        assert!(!s.evict.applies("ops", None));
        assert!(s.evict.applies("default", None));
        assert_eq!(s.plan.max_protection, Some(Duration::from_secs(172_800)));
        assert_eq!(s.plan.idle_release, Some(Duration::from_secs(1800)));
        let off = Config::try_parse_from(["c"]).unwrap().reconcile_settings();
        assert_eq!(off.plan.idle_release, None, "off by default");
        assert_eq!(s.plan.max_extension, Duration::from_secs(7 * 86_400));
        assert_eq!(s.plan.max_protection_warn, 80);
        assert!(
            Config::try_parse_from(["c"])
                .unwrap()
                .notice_settings()
                .is_none(),
            "terminal notices are off by default"
        );
        let n = Config::try_parse_from([
            "c",
            "--notify-terminal",
            "true",
            "--notify-terminal-after",
            "30s",
        ])
        .unwrap()
        .notice_settings()
        .unwrap();
        assert_eq!(n.after, Duration::from_secs(30));
        let c = Config::try_parse_from(["c", "--max-protection-warn-at", "0.5"]).unwrap();
        assert_eq!(c.max_protection_warn_at, 50);
        let e = Config::try_parse_from(["c", "--max-protection-warn-at", "120%"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("below 100%"), "{e}");
        let e = Config::try_parse_from(["c", "--ttl", "3x"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn cleanup_takes_the_global_lease_flags_on_either_side() {
        let c = Config::try_parse_from([
            "c",
            "--lease-duration",
            "5s",
            "cleanup",
            "--lease-name",
            "sg-controller",
            "--hold-lease-for",
            "1m",
        ])
        .unwrap();
        assert_eq!(c.lease_name, "sg-controller");
        assert_eq!(c.lease_duration, Duration::from_secs(5));
        let Some(Command::Cleanup(a)) = c.command else {
            panic!("cleanup parsed: {:?}", c.command)
        };
        assert_eq!(a.hold_lease_for, Duration::from_secs(60));
        assert_eq!(a.timeout, Duration::from_secs(300));
        assert!(Config::try_parse_from(["c"]).unwrap().command.is_none());
        let e = Config::try_parse_from(["c", "cleanup", "--hold-lease-for", "0s"]).unwrap_err();
        assert!(
            e.to_string().contains("0s") || e.to_string().contains("positive"),
            "{e}"
        );
    }

    #[test]
    fn delete_reports_needs_the_agents_selector() {
        let c = Config::try_parse_from([
            "c",
            "--lease-namespace",
            "sg",
            "delete-reports",
            "--agent-selector",
            "app.kubernetes.io/component=agent",
        ])
        .unwrap();
        assert_eq!(c.lease_namespace, "sg");
        let Some(Command::DeleteReports(a)) = c.command else {
            panic!("delete-reports parsed: {:?}", c.command)
        };
        assert_eq!(a.agent_selector, "app.kubernetes.io/component=agent");
        assert_eq!(a.timeout, Duration::from_secs(180));
        let e = Config::try_parse_from(["c", "delete-reports"]).unwrap_err();
        assert!(e.to_string().contains("--agent-selector"), "{e}");
    }
}

#[cfg(test)]
mod readme {
    use clap::CommandFactory;

    #[test]
    fn the_readme_documents_every_flag_and_its_variable() {
        let readme = include_str!("../../README.md");
        let cmd = super::Config::command();
        if let Err(e) =
            sessionguard_core::flag_docs::check(readme, "### Controller flags", &cmd, 40)
        {
            panic!("{e}");
        }
    }
}
