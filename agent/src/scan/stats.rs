//! What one scan did: the figures behind the agent's scan metrics and logs.

use std::collections::BTreeMap;
use std::time::Duration;

/// What one scan did, for metrics and logs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanStats {
    pub full: bool,
    /// Whether this tick listed the proc root; if not, `pids` is the last
    /// listing's count and the cursor chose what to read.
    pub listed: bool,
    pub pids: usize,
    pub stat_reads: usize,
    /// Of `stat_reads`, re-reads of known pids without a terminal that are
    /// still young (see [`ScannerConfig::young_for`]).
    pub young: usize,
    pub terminal_processes: usize,
    /// Pids that vanished while being read: churn, not errors. A pid the
    /// cursor named whose process had already gone (or that no process
    /// took) is neither.
    pub vanished: usize,
    /// Sessions whose idle time came from their terminal's access time
    /// (the others': from their processes).
    pub idle_from_terminal: usize,
    /// Session leaders gone on a tick without a listing: such a tick is
    /// redone as a listing, which alone can tell a logout from a filter.
    pub lost_leaders: usize,
    /// Processes a listing found that the cursor should have named: after
    /// one, the cursor is off for good.
    pub cursor_misses: usize,
    pub errors: BTreeMap<&'static str, u64>,
    pub duration: Duration,
}
