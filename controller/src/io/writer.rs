//! The one way the controller writes to the API server.
//!
//! Every write goes through [`Writer::write`]: refused unless this replica
//! holds the Lease (the [`WriteGate`]), bounded by the write timeout, counted
//! by operation and outcome, and its error mapped to [`Error`] with the
//! operation's name. A reconcile that lost the Lease half-way gets
//! `NotLeader` instead of landing a write another leader may contradict.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;

use crate::error::{Error, Result};
use crate::io::lease::WriteGate;
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
