//! The bounded queue between the admission handler and the record writers.
//! Pushing never waits: when it is full the record is shed and counted, so a
//! slow or unreachable API server can never make `kubectl exec` slow. The
//! agent still sees terminal logins, so a shed record is not a blind spot for
//! interactive sessions.

use tokio::sync::mpsc;

use super::metrics::Metrics;
use super::review::Record;

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

    /// Queues a record; false (and counted as shed) when full or closed.
    pub fn push(&self, record: Record) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => {
                self.metrics.queue_depth.inc();
                true
            }
            Err(e) => {
                self.metrics.record("shed");
                let r = match &e {
                    mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
                };
                tracing::warn!(pod = %format!("{}/{}", r.namespace, r.pod), user = %r.user, "interaction record shed: queue full");
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
    use crate::admission::review::{Record, Via};

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
            .get_or_create(&super::super::metrics::OutcomeLabels { outcome: "shed" })
            .get();
        assert_eq!(shed, 1);
        assert_eq!(m.queue_depth.get(), 2);
        assert_eq!(rx.try_recv().unwrap().pod, "a");
    }
}
