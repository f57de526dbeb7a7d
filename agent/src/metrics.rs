//! Agent metrics. Scan counters are updated by the scan loop; per-session
//! gauges are computed at scrape time from the snapshot, so a session that
//! ended can never leave a stale series behind.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

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

#[derive(Clone, Debug)]
pub struct Metrics {
    pub scan_duration: Family<FullLabel, Histogram>,
    pub scan_errors: Family<KindLabel, Counter>,
    pub processes: Gauge,
    pub stat_reads: Counter,
    pub terminal_processes: Gauge,
    pub vanished: Counter,
    pub reports: Family<OutcomeLabel, Counter>,
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
            vanished: Counter::default(),
            reports: Family::default(),
            foreign_sessions: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("sessionguard_agent");
        r.register_with_unit(
            "scan_duration",
            "Time to scan the proc root, by full/incremental",
            Unit::Seconds,
            m.scan_duration.clone(),
        );
        r.register(
            "scan_errors",
            "Unreadable or malformed proc entries skipped, by kind",
            m.scan_errors.clone(),
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
            "vanished_pids",
            "Pids that exited while being read (normal churn)",
            m.vanished.clone(),
        );
        r.register(
            "reports",
            "Session reports written to the API server, by outcome",
            m.reports.clone(),
        );
        r.register(
            "foreign_sessions",
            "Sessions dropped because their pod is not on this node per the API server",
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
        self.vanished.inc_by(stats.vanished as u64);
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    namespace: String,
    pod: String,
    container: String,
    pod_uid: String,
    tty: String,
    uid: String,
    console: String,
}

#[derive(Debug)]
struct SessionCollector(SnapshotRx);

impl Collector for SessionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.0.borrow().clone();
        let per_container: Family<ContainerLabels, Gauge> = Family::default();
        let started: Family<SessionLabels, Gauge<f64, std::sync::atomic::AtomicU64>> =
            Family::default();
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
            started
                .get_or_create(&SessionLabels {
                    namespace: ns,
                    pod,
                    container,
                    pod_uid: s.pod_uid.to_string(),
                    tty: s.tty.clone(),
                    uid: s.uid.to_string(),
                    console: s.console.to_string(),
                })
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
        Ok(())
    }
}
