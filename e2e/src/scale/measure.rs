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
/// the time from that report write to the PDB appearing or going.
#[derive(Clone, Default)]
pub struct PdbTimes {
    inner: Arc<Mutex<PdbInner>>,
}

#[derive(Default)]
struct PdbInner {
    /// (namespace, PDB name) → when the login (or logout) was reported.
    awaiting_create: HashMap<(String, String), Instant>,
    awaiting_delete: HashMap<(String, String), Instant>,
    present: std::collections::HashSet<(String, String)>,
    pub login: Vec<Duration>,
    pub logout: Vec<Duration>,
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
                            s.login.push(now - t);
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
        me
    }

    /// A login on `pod` was just reported.
    pub fn login(&self, ns: &str, pod: &str, at: Instant) {
        let mut s = self.inner.lock().expect("pdb lock");
        s.awaiting_create.insert(key(ns, pod), at);
    }

    /// Its logout was just reported; false if its PDB never appeared (then no
    /// release time is taken for it).
    pub fn logout(&self, ns: &str, pod: &str, at: Instant) -> bool {
        let mut s = self.inner.lock().expect("pdb lock");
        let k = key(ns, pod);
        s.awaiting_create.remove(&k);
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

    /// (login→PDB, logout→release) samples so far.
    pub fn samples(&self) -> (Vec<Duration>, Vec<Duration>) {
        let s = self.inner.lock().expect("pdb lock");
        (s.login.clone(), s.logout.clone())
    }
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
    fn this_process_has_rss_and_cpu() {
        let me = std::process::id();
        assert!(rss_mib(me).is_some_and(|r| r > 0.0));
        assert!(cpu_seconds(me).is_some());
    }
}
