//! Reading one pid's file during a scan, with the outcome counted: a vanished
//! pid is churn, anything else an error by kind.

use super::procfs::ProcFs;
use super::stats::ScanStats;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fetched {
    Read,
    /// The pid vanished: churn.
    Gone,
    /// Counted in `stats.errors`.
    Failed,
}

impl Fetched {
    pub(super) fn is_read(self) -> bool {
        self == Self::Read
    }
}

/// Reads one pid file; a vanished pid is counted as churn, any other failure
/// by kind.
pub(super) fn fetch(
    fs: &mut ProcFs,
    pid: u32,
    file: &'static str,
    buf: &mut Vec<u8>,
    stats: &mut ScanStats,
) -> Fetched {
    fetch_at_most(fs, pid, file, usize::MAX, buf, stats)
}

pub(super) fn fetch_at_most(
    fs: &mut ProcFs,
    pid: u32,
    file: &'static str,
    max: usize,
    buf: &mut Vec<u8>,
    stats: &mut ScanStats,
) -> Fetched {
    let fetched = read_at_most(fs, pid, file, max, buf, stats);
    if fetched == Fetched::Gone {
        stats.vanished += 1;
    }
    fetched
}

/// [`fetch_at_most`] that leaves a vanished pid to the caller to count.
pub(super) fn read_at_most(
    fs: &mut ProcFs,
    pid: u32,
    file: &'static str,
    max: usize,
    buf: &mut Vec<u8>,
    stats: &mut ScanStats,
) -> Fetched {
    match fs.read_at_most(pid, file, max, buf) {
        Ok(true) => Fetched::Read,
        Ok(false) => Fetched::Gone,
        Err(e) => {
            *stats.errors.entry(e.kind()).or_default() += 1;
            Fetched::Failed
        }
    }
}
