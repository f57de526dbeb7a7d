//! The node's current sessions: what `/sessions` serves, what metrics are
//! computed from, and what is reported to the controller (with idle times
//! rounded to their steps by the report writer).

use std::sync::Arc;

use sessionguard_core::{Report, Session};
use tokio::sync::watch;

use crate::proc::Filtered;
use crate::scan::ScanStats;

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub node: String,
    pub sequence: u64,
    pub generated_at: jiff::Timestamp,
    pub sessions: Vec<Session>,
    pub stats: ScanStats,
    /// False until the first scan completes.
    pub ready: bool,
    /// Set while the proc root hides processes. The sessions are then the
    /// last trusted scan's, served but never reported: the controller sees
    /// the node fall silent instead of its logins ending.
    pub filtered: Option<Filtered>,
}

impl Snapshot {
    /// Whether these sessions may be reported: a scan finished and the
    /// latest one saw every process.
    pub fn trusted(&self) -> bool {
        self.ready && self.filtered.is_none()
    }

    pub fn report(&self) -> Report {
        Report {
            node: self.node.clone(),
            generated_at: self.generated_at,
            sequence: self.sequence,
            sessions: self.sessions.clone(),
        }
    }
}

pub type SnapshotTx = watch::Sender<Arc<Snapshot>>;
pub type SnapshotRx = watch::Receiver<Arc<Snapshot>>;

pub fn channel(node: &str) -> (SnapshotTx, SnapshotRx) {
    watch::channel(Arc::new(Snapshot {
        node: node.to_string(),
        ..Snapshot::default()
    }))
}
