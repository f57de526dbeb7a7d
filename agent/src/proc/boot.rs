//! `/proc/stat`'s `btime` (boot time, seconds since the epoch) and
//! `/proc/uptime`, used to turn process start ticks into wall-clock times.

use crate::Error;

pub fn parse_btime(proc_stat: &str) -> Result<u64, Error> {
    let line = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or_else(|| Error::parse("/proc/stat", "no btime line"))?;
    line.trim().parse().map_err(|_| {
        Error::parse(
            "/proc/stat",
            format!("btime {:?} is not a number", line.trim()),
        )
    })
}

/// Seconds since boot, the first field of `/proc/uptime`.
pub fn parse_uptime(uptime: &str) -> Result<f64, Error> {
    let first = uptime
        .split_whitespace()
        .next()
        .ok_or_else(|| Error::parse("/proc/uptime", "empty"))?;
    first
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| {
            Error::parse(
                "/proc/uptime",
                format!("{first:?} is not a number of seconds"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btime() {
        let stat = "cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 1764000000\nprocesses 7\n";
        assert_eq!(parse_btime(stat).unwrap(), 1_764_000_000);
        assert!(
            parse_btime("cpu 1\n")
                .unwrap_err()
                .to_string()
                .contains("no btime")
        );
        assert!(parse_btime("btime x\n").is_err());
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime("12345.67 23456.78\n").unwrap(), 12345.67);
        assert!(parse_uptime("").is_err());
        assert!(parse_uptime("-1 2").is_err());
        assert!(parse_uptime("NaN 2").is_err());
    }
}
