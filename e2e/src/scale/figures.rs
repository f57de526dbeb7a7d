//! The figures of one run: a table for people, then exactly one JSON line (the scale
//! issue's shape) for the closing notes and for comparing runs.

use serde_json::json;

/// p50 and p99 in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub nodes: usize,
    pub pods: usize,
    /// Peak VmRSS of the controller over the run.
    pub controller_rss_mib: f64,
    /// Once the controller leads with every cache listed: its VmRSS, and what its
    /// allocator says the program holds (`sessionguard_heap_allocated_bytes`).
    pub synced_rss_mib: f64,
    pub synced_heap_mib: f64,
    /// Average cores over the churn phase (logins, heartbeats, the webhook minute).
    pub controller_cpu_cores: f64,
    /// Average cores over the quiet window (heartbeats only).
    pub controller_quiet_cpu_cores: f64,
    pub login_to_pdb_ms: Quantiles,
    pub logins: usize,
    /// The same logins in two parts (those whose report a watch saw first):
    /// until the report carrying the login was seen, then until its PDB was.
    pub login_to_report_ms: Quantiles,
    pub report_to_pdb_ms: Quantiles,
    pub split_logins: usize,
    /// The slowest split login with its wall-clock time and both parts.
    pub slowest_login: String,
    /// The controller's own histograms (bucket bounds): a report's scan to its
    /// processing (`sessionguard_report_latency_seconds`), and one pod reconcile.
    pub report_latency_ms: Quantiles,
    pub pod_reconcile_ms: Quantiles,
    pub logout_to_release_ms: Quantiles,
    pub logouts: usize,
    /// Controller API writes per minute over the quiet window: Lease renewals and
    /// reads not counted (see `writes`).
    pub steady_writes_per_min: f64,
    /// The Lease's reads and renewals per minute over the same window.
    pub steady_lease_calls_per_min: f64,
    /// Every call in the quiet window, `op/outcome count`.
    pub steady_calls: String,
    /// Time from the end of the churn's releases until the quiet window started
    /// (the webhook's records written, then no write for a few seconds), and the
    /// writes made in it.
    pub settle_s: f64,
    pub settle_writes: f64,
    pub quiet_secs: f64,
    /// kill -9 to the PDB of a login reported while the controller was down.
    pub restart_to_ready_s: f64,
    /// kill -9 to `/readyz` naming the new process leader.
    pub restart_to_leader_s: f64,
    pub webhook_ms: Quantiles,
    pub webhook_reviews: usize,
    pub webhook_failed: usize,
    pub webhook_rate: f64,
    /// At the webhook (`sessionguard_webhook_duration_seconds{webhook="connect"}`,
    /// bucket upper bounds) over the run, and how many requests it counted.
    pub webhook_server_ms: Quantiles,
    pub webhook_served: f64,
    /// Peak VmRSS of kube-apiserver over the run.
    pub apiserver_rss_mib: f64,
    /// Wall time to build the cluster (nodes, workloads, agents, controller ready).
    pub build_s: f64,
}

fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

// === impl Figures ===

impl Figures {
    /// The issue's JSON line (every key it names, in its order).
    pub fn json_line(&self) -> String {
        let q = |q: Quantiles| json!({"p50": r1(q.p50), "p99": r1(q.p99)});
        json!({
            "nodes": self.nodes,
            "pods": self.pods,
            "controller_rss_mib": r1(self.controller_rss_mib),
            "controller_cpu_cores": r3(self.controller_cpu_cores),
            "login_to_pdb_ms": q(self.login_to_pdb_ms),
            "login_to_report_ms": q(self.login_to_report_ms),
            "report_to_pdb_ms": q(self.report_to_pdb_ms),
            "report_latency_ms": q(self.report_latency_ms),
            "pod_reconcile_ms": q(self.pod_reconcile_ms),
            "logout_to_release_ms": q(self.logout_to_release_ms),
            "steady_writes_per_min": r1(self.steady_writes_per_min),
            "restart_to_ready_s": r1(self.restart_to_ready_s),
            "webhook_ms": q(self.webhook_ms),
            "webhook_server_ms": q(self.webhook_server_ms),
            "synced_rss_mib": r1(self.synced_rss_mib),
            "synced_heap_mib": r1(self.synced_heap_mib),
            "build_s": r1(self.build_s),
            "apiserver_rss_mib": r1(self.apiserver_rss_mib),
        })
        .to_string()
    }

    /// A table of every figure with its goal, for people.
    pub fn table(&self) -> String {
        let rows: Vec<(String, String, &str)> = vec![
            (
                "nodes / pods".into(),
                format!("{} / {}", self.nodes, self.pods),
                "",
            ),
            ("cluster build".into(), format!("{:.0} s", self.build_s), ""),
            (
                "controller RSS (peak)".into(),
                format!("{:.1} MiB", self.controller_rss_mib),
                "≤ 150 MiB",
            ),
            (
                "controller when synced: RSS, heap allocated".into(),
                format!(
                    "{:.1} MiB, {:.1} MiB ({:.0} bytes per pod)",
                    self.synced_rss_mib,
                    self.synced_heap_mib,
                    self.synced_heap_mib * 1048576.0 / self.pods.max(1) as f64
                ),
                "",
            ),
            (
                "controller CPU (churn)".into(),
                format!("{:.3} cores", self.controller_cpu_cores),
                "< 0.5",
            ),
            (
                "controller CPU (quiet)".into(),
                format!("{:.3} cores", self.controller_quiet_cpu_cores),
                "",
            ),
            (
                format!("login → PDB ({} logins)", self.logins),
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms",
                    self.login_to_pdb_ms.p50, self.login_to_pdb_ms.p99
                ),
                "p99 ≤ 1 s",
            ),
            (
                format!("  login → report seen ({} logins)", self.split_logins),
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms",
                    self.login_to_report_ms.p50, self.login_to_report_ms.p99
                ),
                "",
            ),
            (
                "  report seen → PDB seen".into(),
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms",
                    self.report_to_pdb_ms.p50, self.report_to_pdb_ms.p99
                ),
                "",
            ),
            ("  slowest".into(), self.slowest_login.clone(), ""),
            (
                "  at the controller: scan → report processed".into(),
                format!(
                    "p50 ≤ {:.0} ms, p99 ≤ {:.0} ms",
                    self.report_latency_ms.p50, self.report_latency_ms.p99
                ),
                "",
            ),
            (
                "  at the controller: one pod reconcile".into(),
                format!(
                    "p50 ≤ {:.1} ms, p99 ≤ {:.1} ms",
                    self.pod_reconcile_ms.p50, self.pod_reconcile_ms.p99
                ),
                "",
            ),
            (
                format!("logout → release ({})", self.logouts),
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms",
                    self.logout_to_release_ms.p50, self.logout_to_release_ms.p99
                ),
                "",
            ),
            (
                format!(
                    "steady writes ({:.0} s quiet, Lease aside)",
                    self.quiet_secs
                ),
                format!("{:.1} /min", self.steady_writes_per_min),
                "0",
            ),
            (
                "  calls in the quiet window".into(),
                self.steady_calls.clone(),
                "",
            ),
            (
                "  Lease (get + update)".into(),
                format!("{:.1} /min", self.steady_lease_calls_per_min),
                "",
            ),
            (
                "settle before the quiet window".into(),
                format!(
                    "{:.0} s, {:.0} writes (webhook records and their reconciles)",
                    self.settle_s, self.settle_writes
                ),
                "",
            ),
            (
                "restart → acts on a login".into(),
                format!("{:.1} s", self.restart_to_ready_s),
                "≤ 30 s",
            ),
            (
                "restart → leader, ready".into(),
                format!("{:.1} s", self.restart_to_leader_s),
                "",
            ),
            (
                format!(
                    "webhook ({} reviews, {:.0}/s, {} failed)",
                    self.webhook_reviews, self.webhook_rate, self.webhook_failed
                ),
                format!(
                    "p50 {:.2} ms, p99 {:.2} ms",
                    self.webhook_ms.p50, self.webhook_ms.p99
                ),
                "",
            ),
            (
                format!(
                    "webhook at the server ({:.0} requests, bucket bounds)",
                    self.webhook_served
                ),
                format!(
                    "p50 ≤ {:.2} ms, p99 ≤ {:.2} ms",
                    self.webhook_server_ms.p50, self.webhook_server_ms.p99
                ),
                "p99 ≤ 5 ms",
            ),
            (
                "kube-apiserver RSS (peak)".into(),
                format!("{:.0} MiB", self.apiserver_rss_mib),
                "",
            ),
        ];
        let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (a, b, c) in rows {
            let pad0 = w0 - a.chars().count();
            let pad1 = w1 - b.chars().count();
            out.push_str(&format!(
                "{a}{}  {b}{}  {c}\n",
                " ".repeat(pad0),
                " ".repeat(pad1)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_line_has_the_issues_keys_on_one_line() {
        let f = Figures {
            nodes: 20,
            pods: 300,
            login_to_pdb_ms: Quantiles {
                p50: 120.04,
                p99: 480.0,
            },
            ..Figures::default()
        };
        let line = f.json_line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for k in [
            "nodes",
            "pods",
            "controller_rss_mib",
            "controller_cpu_cores",
            "login_to_pdb_ms",
            "logout_to_release_ms",
            "steady_writes_per_min",
            "restart_to_ready_s",
            "webhook_ms",
            "apiserver_rss_mib",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["login_to_pdb_ms"]["p50"], 120.0);
        assert!(f.table().contains("p99 ≤ 1 s"));
    }
}
