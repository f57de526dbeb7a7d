//! procfs-core's parsers in the agent's parser shape, for the benches to
//! swap into the real scan loop one file at a time.

#![allow(dead_code)] // each bench uses its own subset

use procfs_core::process::{Stat as CoreStat, Status as CoreStatus};
use procfs_core::{
    ExplicitSystemInfo, FromRead, FromReadSI, KernelStats, ProcError, ProcessCGroups, Uptime,
};
use sessionguard_agent::proc::cgroup::from_path;
use sessionguard_agent::proc::{ParseError, Parsers, PodContainer, Stat, Status};

fn error(file: &'static str, e: ProcError) -> ParseError {
    ParseError::new(file, e.to_string())
}

/// procfs-core's `Stat`, mapped onto the agent's. `comm` is located in the
/// line by hand (two byte searches), since procfs-core hands back an owned
/// copy and the agent's `Stat` borrows; that makes this a slight underestimate
/// of what adopting procfs-core's parser would cost.
pub fn stat(bytes: &[u8]) -> Result<Stat<'_>, ParseError> {
    let s = CoreStat::from_read(bytes).map_err(|e| error("stat", e))?;
    let open = bytes.iter().position(|&b| b == b'(').unwrap_or(0);
    let close = bytes.iter().rposition(|&b| b == b')').unwrap_or(open);
    let num = |v: i32, name: &str| {
        u32::try_from(v).map_err(|_| ParseError::new("stat", format!("{name} {v} is negative")))
    };
    Ok(Stat {
        pid: num(s.pid, "pid")?,
        comm: &bytes[open + 1..close],
        state: u8::try_from(s.state).unwrap_or(b'?'),
        ppid: num(s.ppid, "ppid")?,
        session: u32::try_from(s.session).unwrap_or(0),
        tty_nr: s.tty_nr as u32,
        starttime: s.starttime,
    })
}

pub fn status(bytes: &[u8]) -> Result<Status, ParseError> {
    let text = String::from_utf8_lossy(bytes);
    let s = CoreStatus::from_read(text.as_bytes()).map_err(|e| error("status", e))?;
    let ns_pid = match s.nspid.as_deref().and_then(<[i32]>::last) {
        Some(&p) => {
            Some(u32::try_from(p).map_err(|_| ParseError::new("status", format!("NSpid {p}")))?)
        }
        None => None,
    };
    Ok(Status {
        uid: s.ruid,
        ns_pid,
    })
}

/// procfs-core splits the lines; the path → pod/container decoding is the
/// agent's either way (procfs-core has none).
pub fn cgroup(bytes: &[u8]) -> Result<Option<PodContainer>, ParseError> {
    let text = String::from_utf8_lossy(bytes);
    let groups = ProcessCGroups::from_read(text.as_bytes()).map_err(|e| error("cgroup", e))?;
    Ok(groups.0.iter().find_map(|g| from_path(&g.pathname)))
}

pub fn btime(bytes: &[u8]) -> Result<u64, ParseError> {
    // KernelStats wants the tick rate only for its CPU times, never read here.
    let system = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    KernelStats::from_read(bytes, &system)
        .map(|k| k.btime)
        .map_err(|e| error("/proc/stat", e))
}

pub fn uptime(bytes: &[u8]) -> Result<f64, ParseError> {
    let u = Uptime::from_read(bytes).map_err(|e| error("/proc/uptime", e))?;
    Some(u.uptime)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| ParseError::new("/proc/uptime", "not a number of seconds"))
}

/// The scanner's parsers with procfs-core's wherever it has one (it has none
/// for `cmdline`).
pub fn procfs_core_everywhere() -> Parsers {
    Parsers {
        stat,
        status,
        cgroup,
        btime,
        uptime,
        ..Parsers::default()
    }
}
