//! The bounded queue between the admission handler and the record writers.
//! Pushing never waits: when it is full the record is shed and counted, so a
//! slow or unreachable API server can never make `kubectl exec` slow. The
//! agent still sees terminal logins, so a shed record is not a blind spot for
//! interactive sessions.

use tokio::sync::mpsc;

use super::interaction::Record;
use super::metrics::Metrics;

#[derive(Clone)]
pub struct Queue {
    tx: mpsc::Sender<Record>,
    metrics: Metrics,
}

pub type Receiver = mpsc::Receiver<Record>;

impl Queue {
    pub fn new(capacity: usize, metrics: Metrics) -> (Self, Receiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self { tx, metrics }, rx)
    }

    /// Queues a record; false when full (counted as `shed`) or closed
    /// (counted as `closed`).
    pub fn push(&self, record: Record) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => {
                self.metrics.queue_depth.inc();
                true
            }
            Err(mpsc::error::TrySendError::Full(r)) => {
                self.metrics.record("shed");
                tracing::warn!(pod = %format!("{}/{}", r.namespace, r.pod), user = %r.user, "interaction record shed: queue full");
                false
            }
            // Only when every record writer has stopped (shutdown, or a
            // panic): a different problem from load, counted apart.
            Err(mpsc::error::TrySendError::Closed(r)) => {
                self.metrics.record("closed");
                tracing::error!(pod = %format!("{}/{}", r.namespace, r.pod), user = %r.user, "interaction record dropped: record writers are gone (queue closed)");
                false
            }
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::admission::interaction::{Record, Via};

    fn record(pod: &str) -> Record {
        Record {
            namespace: "ns".into(),
            pod: pod.into(),
            at: jiff::Timestamp::UNIX_EPOCH,
            user: "alice".into(),
            groups: vec![],
            via: Via::Attach,
            container: None,
            command: vec![],
        }
    }

    #[test]
    fn sheds_instead_of_blocking_when_full() {
        let m = Metrics::default();
        let (q, mut rx) = Queue::new(2, m.clone());
        assert!(q.push(record("a")));
        assert!(q.push(record("b")));
        assert!(!q.push(record("c")), "third push must not wait");
        let shed = m
            .records
            .get_or_create(&crate::face::admission::metrics::OutcomeLabels { outcome: "shed" })
            .get();
        assert_eq!(shed, 1);
        assert_eq!(m.queue_depth.get(), 2);
        assert_eq!(rx.try_recv().unwrap().pod, "a");
    }

    #[test]
    fn a_closed_queue_is_not_called_full() {
        let m = Metrics::default();
        let (q, rx) = Queue::new(2, m.clone());
        drop(rx);
        assert!(!q.push(record("a")));
        let count = |outcome| {
            m.records
                .get_or_create(&crate::face::admission::metrics::OutcomeLabels { outcome })
                .get()
        };
        assert_eq!((count("closed"), count("shed")), (1, 0));
        assert_eq!(m.queue_depth.get(), 0);
    }
}
