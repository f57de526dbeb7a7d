//! The boot time and uptime that process start times (in clock ticks since
//! boot) are dated against.

use std::time::Instant;

use super::procfs::ProcFs;
use crate::Error;
use crate::proc::Parsers;

/// How far a re-read boot time must move to be taken as a clock step. The
/// kernel computes `btime` from the wall clock and uptime on every read, so it
/// jitters by a second between reads of the same boot.
const BOOT_TIME_STEP_NS: i128 = 2_000_000_000;

/// Boot time, and one reading of uptime to date process start times against.
/// Re-read on every full resync (see [`Clock::resync`]): `btime` moves when
/// the wall clock is stepped, and a daemon lives for months.
pub(super) struct Clock {
    pub(super) boot_ns: i128,
    pub(super) uptime: Option<(f64, Instant)>,
}

// === impl Clock ===

impl Clock {
    pub(super) fn read(fs: &ProcFs, parsers: &Parsers, buf: &mut Vec<u8>) -> Result<Self, Error> {
        let btime = fs
            .read_top("stat", buf)
            .and_then(|()| Ok((parsers.btime)(buf)?));
        let uptime = fs
            .read_top("uptime", buf)
            .and_then(|()| Ok((parsers.uptime)(buf)?));
        let (boot_secs, uptime) = match (btime, uptime) {
            (Ok(b), up) => (b as f64, up.ok()),
            // Without btime, boot time is now minus uptime.
            (Err(_), Ok(up)) => (
                jiff::Timestamp::now().as_nanosecond() as f64 / 1e9 - up,
                Some(up),
            ),
            (Err(_), Err(e)) => return Err(e),
        };
        Ok(Self {
            boot_ns: (boot_secs * 1e9) as i128,
            uptime: uptime.map(|u| (u, Instant::now())),
        })
    }

    /// Takes a resync's reading: always its uptime, but its boot time only if
    /// that moved by more than [`BOOT_TIME_STEP_NS`] (a real clock step), so
    /// the kernel's jitter does not move every start time by a second.
    pub(super) fn resync(&mut self, new: Clock) {
        self.uptime = new.uptime;
        if (new.boot_ns - self.boot_ns).abs() > BOOT_TIME_STEP_NS {
            self.boot_ns = new.boot_ns;
        }
    }

    /// Clock ticks since boot now, in the unit of `stat`'s starttime.
    pub(super) fn uptime_ticks(&self, hz: u64) -> Option<u64> {
        self.uptime
            .map(|(secs, at)| ((secs + at.elapsed().as_secs_f64()) * hz as f64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_adopts_a_clock_step_but_not_btime_jitter() {
        const S: i128 = 1_000_000_000;
        let boot = 1_764_000_000 * S;
        let at = Instant::now();
        let mut clock = Clock {
            boot_ns: boot,
            uptime: Some((1000.0, at)),
        };
        // The kernel recomputed btime a second off: the boot time stays, the
        // uptime reading is new.
        clock.resync(Clock {
            boot_ns: boot + S,
            uptime: Some((1030.0, at)),
        });
        assert_eq!(clock.boot_ns, boot);
        assert_eq!(clock.uptime, Some((1030.0, at)));
        clock.resync(Clock {
            boot_ns: boot - S,
            uptime: None,
        });
        assert_eq!((clock.boot_ns, clock.uptime), (boot, None));
        // The wall clock was stepped by a minute, either way.
        clock.resync(Clock {
            boot_ns: boot + 60 * S,
            uptime: Some((1060.0, at)),
        });
        assert_eq!(clock.boot_ns, boot + 60 * S);
        clock.resync(Clock {
            boot_ns: boot,
            uptime: Some((1090.0, at)),
        });
        assert_eq!(clock.boot_ns, boot);
    }
}
