//! The one way the controller writes to the API server.
//!
//! Every write goes through [`Writer::write`]: refused unless this replica
//! holds the Lease (the [`WriteGate`]), bounded by the write timeout, counted
//! by operation and outcome, and its error mapped to [`Error`] with the
//! operation's name. A reconcile that lost the Lease half-way gets
//! `NotLeader` instead of landing a write another leader may contradict.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;
use prometheus_client::metrics::gauge::Gauge;

use crate::error::{Error, Result};
use crate::io::metrics::Metrics;

#[derive(Clone)]
pub struct Writer {
    client: Client,
    gate: Arc<WriteGate>,
    timeout: Duration,
    metrics: Metrics,
}

impl Writer {
    pub fn new(client: Client, gate: Arc<WriteGate>, timeout: Duration, metrics: Metrics) -> Self {
        Self {
            client,
            gate,
            timeout,
            metrics,
        }
    }

    /// The client to build an `Api` from; the call itself goes through
    /// [`Writer::write`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_leader(&self) -> bool {
        self.gate.is_open_at(Instant::now())
    }

    /// Whether this replica knows yet if it leads (see [`WriteGate`]).
    pub fn is_role_known(&self) -> bool {
        self.gate.is_role_known()
    }

    /// Runs one write under the leader gate and the write timeout.
    pub async fn write<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        if !self.is_leader() {
            self.metrics.write(op, "not_leader");
            return Err(Error::NotLeader { op });
        }
        timed(&self.metrics, op, self.timeout, fut).await
    }

    /// A write every replica may make, leader or not. Only for writes that
    /// are safe without the Lease (the Lease itself; the interaction record,
    /// a commuting fold guarded by resourceVersion: see
    /// `face/admission/record.rs`).
    pub async fn write_ungated<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        timed(&self.metrics, op, self.timeout, fut).await
    }
}

/// Runs one API call under `timeout`, counting ok/error/timeout by op.
pub async fn timed<T>(
    metrics: &Metrics,
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = kube::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => {
            metrics.write(op, "ok");
            Ok(v)
        }
        Ok(Err(source)) => {
            metrics.write(op, "error");
            Err(Error::Kube { op, source })
        }
        Err(_) => {
            metrics.write(op, "timeout");
            Err(Error::Timeout {
                op,
                secs: timeout.as_secs(),
            })
        }
    }
}

// === impl WriteGate ===

/// Whether this replica may write. Open until an instant: the start of the last
/// successful Lease renewal plus the renew deadline, which is shorter than the
/// Lease duration a standby waits out before taking over. A renewal that hangs
/// therefore closes the gate on its own, before anyone else can lead, without
/// the renew loop having to notice in time.
#[derive(Debug, Default)]
pub struct WriteGate {
    until: Mutex<Option<Instant>>,
    /// `sessionguard_leader`: 1 while the gate is held open by renewals.
    leader: Gauge,
    /// Set once the first Lease attempt has answered: until then this replica
    /// does not know whether it leads, and readiness must not guess.
    role_known: AtomicBool,
}

impl WriteGate {
    pub fn new(leader: Gauge) -> Self {
        Self {
            until: Mutex::default(),
            leader,
            role_known: AtomicBool::new(false),
        }
    }

    /// The first Lease attempt has answered (won: after the gate opened).
    pub fn role_known(&self) {
        self.role_known.store(true, Ordering::SeqCst);
    }

    pub fn is_role_known(&self) -> bool {
        self.role_known.load(Ordering::SeqCst)
    }

    /// Leadership confirmed by a renewal: writes are allowed until `until`.
    pub fn open_until(&self, until: Instant) {
        *self.until.lock().expect("gate lock") = Some(until);
        self.leader.set(1);
    }

    /// Leadership lost or given up: no more writes.
    pub fn close(&self) {
        *self.until.lock().expect("gate lock") = None;
        self.leader.set(0);
    }

    pub fn is_open_at(&self, now: Instant) -> bool {
        self.until
            .lock()
            .expect("gate lock")
            .is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_closes_at_the_deadline_without_being_told() {
        let gate = WriteGate::default();
        let t0 = Instant::now();
        assert!(!gate.is_open_at(t0), "closed until a renewal opens it");
        gate.open_until(t0 + Duration::from_secs(10));
        assert!(gate.is_open_at(t0 + Duration::from_secs(9)));
        assert!(
            !gate.is_open_at(t0 + Duration::from_secs(10)),
            "a hung renewal must not keep writes going"
        );
        gate.open_until(t0 + Duration::from_secs(20));
        assert!(gate.is_open_at(t0 + Duration::from_secs(15)), "renewed");
        gate.close();
        assert!(
            !gate.is_open_at(t0 + Duration::from_secs(15)),
            "stepped down"
        );
    }
}
