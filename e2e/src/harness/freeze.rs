//! Freezing a control-plane component with SIGSTOP, for the fault tests: an
//! API server or etcd that stops answering without closing a connection, the
//! way a stalled node or a long GC pause looks to clients.
//!
//! Only components this test binary started may be frozen (never a reused
//! dev cluster other work depends on), and a frozen one is thawed on drop,
//! also when the test fails.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::controlplane::process::{parse_pidfile, start_time};
use crate::harness::SharedCluster;
use crate::{Error, Result};

/// A stopped component; SIGCONT on drop.
#[derive(Debug)]
pub struct Frozen {
    name: String,
    pid: i32,
    start: u64,
}

/// Stops `component` (a name from `controlplane::COMPONENTS`).
pub fn freeze(cluster: &SharedCluster, component: &str) -> Result<Frozen> {
    if cluster.reused {
        return Err(Error::Invalid(format!(
            "will not freeze {component} of a control plane this test binary did not start ({})",
            cluster.info.dir.display()
        )));
    }
    let pidfile = cluster
        .info
        .dir
        .join("pids")
        .join(format!("{component}.pid"));
    let text = std::fs::read_to_string(&pidfile)
        .map_err(|e| Error::Invalid(format!("reading {}: {e}", pidfile.display())))?;
    let (pid, start) = parse_pidfile(&text)
        .filter(|(pid, start)| start_time(*pid) == Some(*start))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{component} is not running ({})",
                pidfile.display()
            ))
        })?;
    kill(Pid::from_raw(pid), Signal::SIGSTOP)
        .map_err(|e| Error::Invalid(format!("SIGSTOP {component} (pid {pid}): {e}")))?;
    eprintln!("e2e: froze {component} (pid {pid})");
    Ok(Frozen {
        name: component.to_string(),
        pid,
        start,
    })
}

/// Stops a process this test started (an agent: one still in its retry
/// backoff when the API server comes back).
pub fn freeze_child(name: &str, pid: u32) -> Result<Frozen> {
    let pid = pid as i32;
    let start = start_time(pid)
        .ok_or_else(|| Error::Invalid(format!("{name} (pid {pid}) is not running")))?;
    kill(Pid::from_raw(pid), Signal::SIGSTOP)
        .map_err(|e| Error::Invalid(format!("SIGSTOP {name} (pid {pid}): {e}")))?;
    eprintln!("e2e: froze {name} (pid {pid})");
    Ok(Frozen {
        name: name.to_string(),
        pid,
        start,
    })
}

impl Frozen {
    /// Lets the component run again.
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Only the process we stopped: a pid reused since would be a stranger.
        if start_time(self.pid) == Some(self.start) {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGCONT);
            eprintln!("e2e: thawed {} (pid {})", self.name, self.pid);
        }
    }
}
