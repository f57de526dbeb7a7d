//! `/proc/stat`'s `btime` (boot time, seconds since the epoch) and
//! `/proc/uptime`, and the conversion of a process's start ticks into a
//! wall-clock time. Boot time and tick rate are passed in ([`SystemInfo`]),
//! never read from the running system, so a test can date a process on any
//! clock it likes.

use super::ParseError;

/// What dating a process needs to know about the system it ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    /// Boot time, nanoseconds since the epoch.
    pub boot_ns: i128,
    /// `CLK_TCK`, the unit of `stat`'s `starttime`.
    pub ticks_per_second: u64,
}

pub fn parse_btime(proc_stat: &[u8]) -> Result<u64, ParseError> {
    let text = String::from_utf8_lossy(proc_stat);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or_else(|| ParseError::new("/proc/stat", "no btime line"))?;
    line.trim().parse().map_err(|_| {
        ParseError::new(
            "/proc/stat",
            format!("btime {:?} is not a number", line.trim()),
        )
    })
}

/// Seconds since boot, the first field of `/proc/uptime`.
pub fn parse_uptime(uptime: &[u8]) -> Result<f64, ParseError> {
    let text = String::from_utf8_lossy(uptime);
    let first = text
        .split_whitespace()
        .next()
        .ok_or_else(|| ParseError::new("/proc/uptime", "empty"))?;
    first
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| {
            ParseError::new(
                "/proc/uptime",
                format!("{first:?} is not a number of seconds"),
            )
        })
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

    #[test]
    fn btime() {
        let stat = b"cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1764000000\nprocesses 7\n";
        assert_eq!(parse_btime(stat).unwrap(), 1_764_000_000);
        let e = parse_btime(b"cpu 1\n").unwrap_err();
        assert_eq!(e.kind(), "/proc/stat");
        assert!(e.to_string().contains("no btime"), "{e}");
        assert!(parse_btime(b"btime x\n").is_err());
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime(b"12345.67 23456.78\n").unwrap(), 12345.67);
        assert_eq!(parse_uptime(b"").unwrap_err().kind(), "/proc/uptime");
        assert!(parse_uptime(b"-1 2").is_err());
        assert!(parse_uptime(b"NaN 2").is_err());
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
