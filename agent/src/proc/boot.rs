//! `/proc/stat`'s `btime` (boot time, seconds since the epoch) and
//! `/proc/uptime`, and the conversion of a process's start ticks into a
//! wall-clock time. Boot time and tick rate are passed in ([`SystemInfo`]),
//! never read from the running system, so a test can date a process on any
//! clock it likes. The two files are parsed by procfs-core.

use procfs_core::{ExplicitSystemInfo, FromRead, FromReadSI, KernelStats, Uptime};

use super::ParseError;

/// What dating a process needs to know about the system it ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    /// Boot time, nanoseconds since the epoch.
    pub boot_ns: i128,
    /// `CLK_TCK`, the unit of `stat`'s `starttime`.
    pub ticks_per_second: u64,
}

/// Boot time in seconds since the epoch, from `/proc/stat`.
pub fn parse_btime(proc_stat: &[u8]) -> Result<u64, ParseError> {
    // KernelStats wants the tick rate and page size only to convert CPU
    // times, which the agent never reads; these stand-ins change nothing here.
    let unused = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    KernelStats::from_read(proc_stat, &unused)
        .map(|k| k.btime)
        .map_err(|e| ParseError::from_procfs_core("/proc/stat", e))
}

/// Seconds since boot, the first field of `/proc/uptime`.
pub fn parse_uptime(uptime: &[u8]) -> Result<f64, ParseError> {
    let up = Uptime::from_read(uptime)
        .map_err(|e| ParseError::from_procfs_core("/proc/uptime", e))?
        .uptime;
    if up.is_finite() && up >= 0.0 {
        Ok(up)
    } else {
        Err(ParseError::new(
            "/proc/uptime",
            format!("{up} is not a number of seconds"),
        ))
    }
}

/// When a process started, from `stat`'s `starttime` (ticks after boot).
/// Only a corrupt stat line or boot time lands past year 9999; that is an
/// error, never a date of 1970.
pub fn start_time(starttime: u64, system: &SystemInfo) -> Result<jiff::Timestamp, ParseError> {
    let tick_ns = 1_000_000_000 / i128::from(system.ticks_per_second.max(1));
    let ns = system.boot_ns + i128::from(starttime) * tick_ns;
    jiff::Timestamp::from_nanosecond(ns)
        .map_err(|_| ParseError::new("starttime", format!("{starttime} ticks is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  127809 12644 35893 110127 486 0 165 254 0 0\n\
        cpu0 64149 5911 17396 55996 76 0 18 125 0 0\nintr 1764750 0 0 0 0\nctxt 2902700\n\
        btime 1764000000\nprocesses 47014\nprocs_running 9\nprocs_blocked 0\nsoftirq 552741 0 86135\n";

    #[test]
    fn btime() {
        assert_eq!(parse_btime(STAT.as_bytes()).unwrap(), 1_764_000_000);
        for broken in [
            String::new(),
            "cpu 1\n".to_string(),
            STAT.replace("btime 1764000000\n", ""),
            STAT.replace("btime 1764000000", "btime x"),
        ] {
            let e = parse_btime(broken.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), "/proc/stat", "{broken:?}");
        }
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime(b"12345.67 23456.78\n").unwrap(), 12345.67);
        for broken in ["", "12345.67\n", "-1 2", "NaN 2", "inf 2", "x 2"] {
            let e = parse_uptime(broken.as_bytes()).unwrap_err();
            assert_eq!(e.kind(), "/proc/uptime", "{broken:?}");
        }
    }

    #[test]
    fn start_times_count_ticks_from_boot() {
        let system = SystemInfo {
            boot_ns: 1_764_000_000 * 1_000_000_000,
            ticks_per_second: 250,
        };
        let at = start_time(500, &system).unwrap();
        assert_eq!(at.as_nanosecond(), 1_764_000_002 * 1_000_000_000);
        let e = start_time(u64::MAX, &system).unwrap_err();
        assert_eq!(e.kind(), "starttime");
    }
}
