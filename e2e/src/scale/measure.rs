//! What is measured and how: a process's RSS and CPU time from `/proc/<pid>`,
//! percentiles, and the instants PDBs appear and go as a watch sees them (not polled).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::runtime::watcher;
use sessionguard_core::keys;

/// VmRSS of `pid` in MiB, if it runs.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the last ')': state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// CPU use of a process between two points: cores = CPU seconds / wall seconds.
pub struct CpuWindow {
    pid: u32,
    cpu: f64,
    at: Instant,
}

impl CpuWindow {
    pub fn start(pid: u32) -> Self {
        Self {
            pid,
            cpu: cpu_seconds(pid).unwrap_or(0.0),
            at: Instant::now(),
        }
    }

    pub fn cores(&self) -> f64 {
        let wall = self.at.elapsed().as_secs_f64().max(1e-3);
        (cpu_seconds(self.pid).unwrap_or(self.cpu) - self.cpu) / wall
    }
}

/// Peak RSS of the processes sampled every second while it runs.
#[derive(Clone, Default)]
pub struct Peaks(Arc<Mutex<HashMap<&'static str, f64>>>);

impl Peaks {
    /// Samples `pid` (looked up again every time: the controller restarts) under `name`.
    pub fn sample(&self, name: &'static str, pid: impl Fn() -> Option<u32> + Send + 'static) {
        let peaks = self.0.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(rss) = pid().and_then(rss_mib) {
                    let mut p = peaks.lock().expect("peaks lock");
                    let e = p.entry(name).or_default();
                    *e = e.max(rss);
                }
            }
        });
    }

    pub fn get(&self, name: &str) -> f64 {
        self.0
            .lock()
            .expect("peaks lock")
            .get(name)
            .copied()
            .unwrap_or(0.0)
    }
}

/// p-th quantile (0..=1) of `v` in milliseconds; 0 for no samples.
pub fn quantile_ms(v: &[Duration], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

/// What a watch of our PDBs has seen: for a pod whose login or logout is awaited,
/// the time from that report write to the PDB appearing or going. A second watch,
/// of the SessionReports, splits each login in two: until the report that carries
/// it is visible to a watcher (the agent's write, the API server, the watch), and
/// from there to its PDB (the controller's watch, queue and reconcile, the PDB's
/// create, the watch again).
#[derive(Clone, Default)]
pub struct PdbTimes {
    inner: Arc<Mutex<PdbInner>>,
}

#[derive(Default)]
struct PdbInner {
    /// (namespace, PDB name) → the login (or logout) awaiting its PDB.
    awaiting_create: HashMap<(String, String), Pending>,
    awaiting_delete: HashMap<(String, String), Instant>,
    /// Pod UID → its awaited login's key, for the report watch.
    by_uid: HashMap<String, (String, String)>,
    present: std::collections::HashSet<(String, String)>,
    pub login: Vec<Duration>,
    pub logout: Vec<Duration>,
    /// Logins whose report was seen before their PDB.
    pub split: Vec<LoginSplit>,
}

struct Pending {
    at: Instant,
    wall: jiff::Timestamp,
    uid: String,
    /// When a report naming the pod was first seen after the login.
    reported: Option<Instant>,
}

/// One login, from the moment the agent reported it to its PDB, in two parts.
#[derive(Clone, Debug)]
pub struct LoginSplit {
    pub key: (String, String),
    pub wall: jiff::Timestamp,
    /// Login → a report carrying it seen by a watch.
    pub to_report: Duration,
    /// That report seen → the PDB seen.
    pub to_pdb: Duration,
}

impl LoginSplit {
    pub fn total(&self) -> Duration {
        self.to_report + self.to_pdb
    }

    /// "ns/pdb logged in at <RFC 3339, ms>: report seen +12 ms, PDB seen +413 ms".
    pub fn describe(&self) -> String {
        let at = self
            .wall
            .round(jiff::Unit::Millisecond)
            .unwrap_or(self.wall);
        let (ms1, ms2) = (
            self.to_report.as_secs_f64() * 1000.0,
            (self.to_report + self.to_pdb).as_secs_f64() * 1000.0,
        );
        format!(
            "{}/{} logged in at {at}: report seen +{ms1:.0} ms, PDB seen +{ms2:.0} ms",
            self.key.0, self.key.1
        )
    }
}

impl PdbTimes {
    /// Starts the watch (every namespace, our PDBs only).
    pub fn watch(client: &kube::Client) -> Self {
        let me = Self::default();
        let api: Api<PodDisruptionBudget> = Api::all(client.clone());
        let cfg =
            watcher::Config::default().labels(&format!("{}={}", keys::MANAGED_BY, keys::MANAGER));
        let inner = me.inner.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, cfg).boxed();
            while let Some(ev) = events.next().await {
                let now = Instant::now();
                let mut s = inner.lock().expect("pdb lock");
                match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                        let key = key_of(&p);
                        if let Some(t) = s.awaiting_create.remove(&key) {
                            s.by_uid.remove(&t.uid);
                            s.login.push(now - t.at);
                            if let Some(r) = t.reported {
                                s.split.push(LoginSplit {
                                    key: key.clone(),
                                    wall: t.wall,
                                    to_report: r - t.at,
                                    to_pdb: now - r,
                                });
                            }
                        }
                        s.present.insert(key);
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        let key = key_of(&p);
                        if let Some(t) = s.awaiting_delete.remove(&key) {
                            s.logout.push(now - t);
                        }
                        s.present.remove(&key);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "PDB watch"),
                }
            }
        });
        me.watch_reports(client);
        me
    }

    /// Marks each awaited login when a report that names its pod is first seen.
    fn watch_reports(&self, client: &kube::Client) {
        let api = crate::harness::install::report_api(client);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default()).boxed();
            while let Some(ev) = events.next().await {
                let now = Instant::now();
                let report = match ev {
                    Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) => r,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "SessionReport watch");
                        continue;
                    }
                };
                let mut s = inner.lock().expect("pdb lock");
                for uid in pod_uids(&report.data) {
                    let Some(key) = s.by_uid.get(uid).cloned() else {
                        continue;
                    };
                    if let Some(p) = s.awaiting_create.get_mut(&key) {
                        p.reported.get_or_insert(now);
                    }
                }
            }
        });
    }

    /// A login on `pod` (UID `uid`) is about to be reported.
    pub fn login(&self, ns: &str, pod: &str, uid: &str, at: Instant) {
        let mut s = self.inner.lock().expect("pdb lock");
        let k = key(ns, pod);
        s.by_uid.insert(uid.to_string(), k.clone());
        s.awaiting_create.insert(
            k,
            Pending {
                at,
                wall: jiff::Timestamp::now(),
                uid: uid.to_string(),
                reported: None,
            },
        );
    }

    /// Its logout was just reported; false if its PDB never appeared (then no
    /// release time is taken for it).
    pub fn logout(&self, ns: &str, pod: &str, at: Instant) -> bool {
        let mut s = self.inner.lock().expect("pdb lock");
        let k = key(ns, pod);
        if let Some(p) = s.awaiting_create.remove(&k) {
            s.by_uid.remove(&p.uid);
        }
        if s.present.contains(&k) {
            s.awaiting_delete.insert(k, at);
            true
        } else {
            false
        }
    }

    pub fn present(&self, ns: &str, pod: &str) -> bool {
        self.inner
            .lock()
            .expect("pdb lock")
            .present
            .contains(&key(ns, pod))
    }

    /// Our PDBs that exist now, and logouts whose release is still awaited.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.inner.lock().expect("pdb lock");
        (s.present.len(), s.awaiting_delete.len())
    }

    /// Logins seen in two parts (report, then PDB) so far.
    pub fn splits(&self) -> Vec<LoginSplit> {
        self.inner.lock().expect("pdb lock").split.clone()
    }

    /// (login→PDB, logout→release) samples so far.
    pub fn samples(&self) -> (Vec<Duration>, Vec<Duration>) {
        let s = self.inner.lock().expect("pdb lock");
        (s.login.clone(), s.logout.clone())
    }
}

/// The pod UIDs a SessionReport's sessions name.
fn pod_uids(report: &serde_json::Value) -> impl Iterator<Item = &str> {
    report["spec"]["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["pod_uid"].as_str())
}

fn key(ns: &str, pod: &str) -> (String, String) {
    (ns.to_string(), sessionguard_core::protection::pdb_name(pod))
}

fn key_of(p: &PodDisruptionBudget) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile_ms(&v, 0.5), 51.0);
        assert_eq!(quantile_ms(&v, 0.99), 99.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn a_reports_sessions_name_their_pods() {
        let r = serde_json::json!({"spec": {"node": "n", "sessions": [
            {"pod_uid": "a", "pid": 1}, {"pid": 2}, {"pod_uid": "b"}]}});
        assert_eq!(pod_uids(&r).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(pod_uids(&serde_json::json!({"spec": {}})).count(), 0);
    }

    #[test]
    fn a_split_login_says_when_each_part_was_seen() {
        let s = LoginSplit {
            key: ("ns".into(), "sessionguard-p".into()),
            wall: "2026-12-07T04:00:01.234Z".parse().unwrap(),
            to_report: Duration::from_millis(12),
            to_pdb: Duration::from_millis(401),
        };
        assert_eq!(s.total(), Duration::from_millis(413));
        assert_eq!(
            s.describe(),
            "ns/sessionguard-p logged in at 2026-12-07T04:00:01.234Z: report seen +12 ms, PDB seen +413 ms"
        );
    }

    #[test]
    fn this_process_has_rss_and_cpu() {
        let me = std::process::id();
        assert!(rss_mib(me).is_some_and(|r| r > 0.0));
        assert!(cpu_seconds(me).is_some());
    }
}
