//! Agent metrics. Scan counters are updated by the scan loop; per-session
//! gauges (and whether the proc root is filtered) are computed at scrape time
//! from the snapshot, so a session that ended can never leave a stale series
//! behind.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sessionguard_http::Declared;

use crate::proc::Reason;
use crate::scan::ScanStats;
use crate::snapshot::SnapshotRx;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FullLabel {
    pub full: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    pub scan_duration: Family<FullLabel, Histogram>,
    pub scan_errors: Family<KindLabel, Counter>,
    pub processes: Gauge,
    pub stat_reads: Counter,
    pub terminal_processes: Gauge,
    pub idle_from_terminal: Gauge,
    pub vanished: Counter,
    pub unlisted_scans: Counter,
    pub cursor_misses: Counter,
    /// Lines written into sessions' terminals (`--notify-terminal`), by outcome.
    pub terminal_notices: Family<OutcomeLabel, Counter>,
    pub reports: Family<OutcomeLabel, Counter>,
    pub report_cuts: Family<KindLabel, Counter>,
    pub reports_refused: Family<CodeLabel, Counter>,
    pub foreign_sessions: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry, snapshot: SnapshotRx) -> Self {
        let m = Self {
            scan_duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ])
            }),
            scan_errors: Family::default(),
            processes: Gauge::default(),
            stat_reads: Counter::default(),
            terminal_processes: Gauge::default(),
            idle_from_terminal: Gauge::default(),
            vanished: Counter::default(),
            unlisted_scans: Counter::default(),
            cursor_misses: Counter::default(),
            terminal_notices: Family::default(),
            reports: Family::default(),
            report_cuts: Family::default(),
            reports_refused: Family::default(),
            foreign_sessions: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("sessionguard_agent");
        r.register_with_unit(
            "scan_duration",
            "Time to scan the proc root, by full/incremental",
            Unit::Seconds,
            Declared(m.scan_duration.clone()),
        );
        r.register(
            "scan_errors",
            "Unreadable or malformed proc entries skipped, by kind",
            Declared(m.scan_errors.clone()),
        );
        r.register(
            "processes_scanned",
            "Processes seen by the last scan",
            m.processes.clone(),
        );
        r.register(
            "stat_reads",
            "/proc/<pid>/stat files read",
            m.stat_reads.clone(),
        );
        r.register(
            "terminal_processes",
            "Processes with a controlling terminal in the last scan",
            m.terminal_processes.clone(),
        );
        r.register(
            "idle_from_terminal_sessions",
            "Sessions in the last scan whose idle time came from their terminal's access time (the rest: from their processes' activity)",
            m.idle_from_terminal.clone(),
        );
        r.register(
            "vanished_pids",
            "Pids that exited while being read (normal churn)",
            m.vanished.clone(),
        );
        r.register(
            "unlisted_scans",
            "Scans that read only the pids the pid cursor named, without listing the proc root",
            m.unlisted_scans.clone(),
        );
        r.register(
            "pid_cursor_misses",
            "New processes a listing found outside the pid cursor's interval; after one the cursor is off",
            m.cursor_misses.clone(),
        );
        r.register(
            "terminal_notices",
            "Notice lines for sessions' terminals (--notify-terminal), by outcome: written, or why not (no_session, no_tty, open_failed, write_failed, partial, bad_request, notifier_unavailable, notifier_error)",
            Declared(m.terminal_notices.clone()),
        );
        r.register(
            "reports",
            "Session reports written to the API server, by outcome",
            Declared(m.reports.clone()),
        );
        r.register(
            "report_cuts",
            "Fields and sessions cut from written reports to fit the SessionReport schema and size bound, by kind",
            Declared(m.report_cuts.clone()),
        );
        r.register(
            "reports_refused",
            "Report writes the API server refused as invalid (a bug: the agent's bounds and the installed CRD disagree), by HTTP code",
            Declared(m.reports_refused.clone()),
        );
        r.register(
            "foreign_sessions",
            "Distinct sessions dropped because their pod is not on this node per the API server",
            m.foreign_sessions.clone(),
        );
        r.register_collector(Box::new(SessionCollector(snapshot)));
        m
    }

    pub fn observe(&self, stats: &ScanStats) {
        let full = FullLabel {
            full: stats.full.to_string(),
        };
        self.scan_duration
            .get_or_create(&full)
            .observe(stats.duration.as_secs_f64());
        for (kind, n) in &stats.errors {
            self.scan_errors
                .get_or_create(&KindLabel {
                    kind: kind.to_string(),
                })
                .inc_by(*n);
        }
        self.processes.set(stats.pids as i64);
        self.stat_reads.inc_by(stats.stat_reads as u64);
        self.terminal_processes.set(stats.terminal_processes as i64);
        self.idle_from_terminal.set(stats.idle_from_terminal as i64);
        self.vanished.inc_by(stats.vanished as u64);
        if !stats.listed {
            self.unlisted_scans.inc();
        }
        self.cursor_misses.inc_by(stats.cursor_misses as u64);
    }
}

// === impl SessionCollector ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    namespace: String,
    pod: String,
    container: String,
    pod_uid: String,
    container_id: String,
}

/// One series per session: a terminal number is unique only within one
/// container, and the leader's pid tells a new login on the same terminal
/// from the last one.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    namespace: String,
    pod: String,
    container: String,
    pod_uid: String,
    container_id: String,
    tty: String,
    pid: String,
    uid: String,
    console: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug)]
struct SessionCollector(SnapshotRx);

impl Collector for SessionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.0.borrow().clone();
        let per_container: Family<ContainerLabels, Gauge> = Family::default();
        let started: Family<SessionLabels, Gauge<f64, std::sync::atomic::AtomicU64>> =
            Family::default();
        let idle: Family<SessionLabels, Gauge> = Family::default();
        for s in &snap.sessions {
            let ns = s.namespace.clone().unwrap_or_default();
            let pod = s.pod_name.clone().unwrap_or_default();
            let container = s.container_name.clone().unwrap_or_default();
            if s.is_login() {
                per_container
                    .get_or_create(&ContainerLabels {
                        namespace: ns.clone(),
                        pod: pod.clone(),
                        container: container.clone(),
                        pod_uid: s.pod_uid.to_string(),
                        container_id: s.container_id.to_string(),
                    })
                    .inc();
            }
            let labels = SessionLabels {
                namespace: ns,
                pod,
                container,
                pod_uid: s.pod_uid.to_string(),
                container_id: s.container_id.to_string(),
                tty: s.tty.clone(),
                pid: s.pid.to_string(),
                uid: s.uid.to_string(),
                console: s.console.to_string(),
            };
            idle.get_or_create(&labels).set(i64::from(s.idle_seconds));
            started
                .get_or_create(&labels)
                .set(s.started_at.as_millisecond() as f64 / 1000.0);
        }
        let e = encoder.encode_descriptor(
            "sessions",
            "Login sessions (terminals, consoles excluded) per container",
            None,
            MetricType::Gauge,
        )?;
        per_container.encode(e)?;
        let e = encoder.encode_descriptor(
            "session_start_time_seconds",
            "Start time of each terminal session, seconds since the epoch",
            None,
            MetricType::Gauge,
        )?;
        started.encode(e)?;
        let e = encoder.encode_descriptor(
            "session_idle_seconds",
            "Seconds since each terminal session's last activity (exact, not the report's steps)",
            None,
            MetricType::Gauge,
        )?;
        idle.encode(e)?;
        // One series per reason, all present, so an alert needs no absent().
        let filtered: Family<ReasonLabel, Gauge> = Family::default();
        for reason in Reason::ALL {
            let on = snap.filtered.as_ref().is_some_and(|f| f.reason == reason);
            filtered
                .get_or_create(&ReasonLabel {
                    reason: reason.label().into(),
                })
                .set(i64::from(on));
        }
        let e = encoder.encode_descriptor(
            "proc_filtered",
            "1 while the proc root hides processes from the agent (then it is not ready and does not report), by cause",
            None,
            MetricType::Gauge,
        )?;
        filtered.encode(e)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{self, Snapshot};
    use sessionguard_core::{ContainerId, Session};
    use std::sync::Arc;

    fn session(container: char, pid: u32) -> Session {
        Session {
            container_id: ContainerId::parse(&container.to_string().repeat(64)).unwrap(),
            pid,
            started_at: jiff::Timestamp::from_second(1_764_000_000 + i64::from(pid)).unwrap(),
            namespace: Some("ops".into()),
            pod_name: Some("bastion-0".into()),
            ..crate::testing::session()
        }
    }

    /// Every labelled family gets one sample, so its label names show.
    fn feed_each_once(m: &Metrics) {
        m.observe(&ScanStats {
            errors: [("stat", 1)].into(),
            ..ScanStats::default()
        });
        let outcome = OutcomeLabel {
            outcome: "written".into(),
        };
        m.terminal_notices.get_or_create(&outcome).inc();
        m.reports.get_or_create(&outcome).inc();
        m.report_cuts
            .get_or_create(&KindLabel {
                kind: "command".into(),
            })
            .inc();
        m.reports_refused
            .get_or_create(&CodeLabel { code: "422".into() })
            .inc();
    }

    #[test]
    fn the_readme_lists_exactly_the_metrics_the_agent_serves() {
        let (tx, rx) = snapshot::channel("node-a");
        let mut registry = Registry::default();
        feed_each_once(&Metrics::register(&mut registry, rx));
        // A login, so the per-session gauges have a series to show labels on.
        tx.send_replace(Arc::new(Snapshot {
            sessions: vec![session('a', 10)],
            ready: true,
            ..Snapshot::default()
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let served = sessionguard_core::metric_docs::served(&text);
        assert!(served.len() > 10, "too few families served:\n{text}");
        let documented = sessionguard_core::metric_docs::documented(
            include_str!("../../README.md"),
            "#### Agent metrics",
            "sessionguard_agent_",
        );
        let diff = sessionguard_core::metric_docs::differences(&served, &documented);
        assert!(
            diff.is_empty(),
            "README `#### Agent metrics` and the registry (Metrics::register) disagree (name, type or labels):\n  {}",
            diff.join("\n  ")
        );
    }

    #[test]
    fn two_containers_on_pts_0_are_two_start_time_series() {
        let (tx, rx) = snapshot::channel("node-a");
        let mut registry = Registry::default();
        Metrics::register(&mut registry, rx);
        tx.send_replace(Arc::new(Snapshot {
            sessions: vec![
                session('a', 10),
                Session {
                    idle_seconds: 75,
                    ..session('b', 20)
                },
            ],
            ready: true,
            ..Snapshot::default()
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sessionguard_agent_session_start_time_seconds{"))
            .collect();
        assert_eq!(series.len(), 2, "{text}");
        for (c, pid, at) in [('a', 10, "1764000010"), ('b', 20, "1764000020")] {
            let id = c.to_string().repeat(64);
            assert!(
                series
                    .iter()
                    .any(|l| l.contains(&format!("container_id=\"{id}\""))
                        && l.contains(&format!("pid=\"{pid}\""))
                        && l.contains(at)),
                "{text}"
            );
        }
        let idle: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sessionguard_agent_session_idle_seconds{"))
            .collect();
        assert_eq!(idle.len(), 2, "{text}");
        assert!(
            idle.iter()
                .any(|l| l.contains("pid=\"20\"") && l.ends_with(" 75")),
            "{text}"
        );
    }
}
