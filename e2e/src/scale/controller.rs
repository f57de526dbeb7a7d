//! The real controller binary under the chart's identity (ServiceAccount and RBAC with
//! the webhook's rules, rendered from the chart), with its webhooks on a loopback port.
//! Stopped with kill -9 for the restart measurement and started again with the same
//! identity, as a kubelet restarts a crashed container.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::progress;
use super::writes::Calls;
use crate::Result;
use crate::harness::http::{free_addr, http_get, until_leader};
use crate::harness::identity::ControllerIdentity;
use crate::harness::{Child, TestEnv, await_, identity, workspace_bin};

/// The holder identity every start uses: a restarted controller takes its own Lease
/// over at once, as a restarted pod of the same name would.
const IDENTITY: &str = "scale-controller";

/// The Lease the controller holds in this rig (see `spawn`).
const LEASE_DURATION: &str = "60s";

pub struct Controller {
    child: Option<Child>,
    id: ControllerIdentity,
    bin: PathBuf,
    pub addr: SocketAddr,
    pub webhook: SocketAddr,
    ns: String,
    log: PathBuf,
}

// === impl Controller ===

impl Controller {
    pub async fn start(env: &TestEnv) -> Result<Self> {
        let id = identity::chart_controller(env, true).await?;
        let bin = workspace_bin("sessionguard-controller", "sessionguard-controller")?;
        let mut c = Self {
            child: None,
            id,
            bin,
            addr: free_addr()?,
            webhook: free_addr()?,
            ns: env.ns().to_string(),
            log: env.scratch_dir().join("controller.log"),
        };
        c.spawn()?;
        Ok(c)
    }

    /// Starts the process (not waiting for it).
    pub fn spawn(&mut self) -> Result<()> {
        let (addr, webhook) = (self.addr.to_string(), self.webhook.to_string());
        let secret = self.id.webhook_secret.clone();
        let args: Vec<&str> = vec![
            "--listen-addr",
            &addr,
            "--lease-namespace",
            &self.ns,
            "--lease-name",
            &self.id.lease,
            // The rig's API server shares two cores with etcd, kwok and 1,000 played
            // agents; at full size a renewal can wait longer than the default 10 s
            // renew deadline (15 s Lease), and the controller then steps down and
            // exits, as it must. A 60 s Lease (40 s deadline) keeps the measurement
            // going; it changes nothing but how long a hung API server is waited for.
            "--lease-duration",
            LEASE_DURATION,
            "--identity",
            IDENTITY,
            "--webhook",
            "true",
            "--webhook-addr",
            &webhook,
            "--webhook-extra-sans",
            "127.0.0.1",
            "--webhook-secret",
            &secret,
            "--webhook-validating-config",
            &self.id.fullname,
            "--webhook-mutating-config",
            &self.id.fullname,
        ];
        let kubeconfig = self.id.kubeconfig.display().to_string();
        let child = Child::spawn(
            &self.bin,
            &args,
            &[
                ("KUBECONFIG", &kubeconfig),
                ("RUST_LOG", "info,kube=warn"),
                ("SESSIONGUARD_ADMISSION_POLICIES", &self.id.fullname),
            ],
            &self.log,
        )?;
        progress(format!(
            "controller: pid {}, log {}",
            child.pid(),
            self.log.display()
        ));
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::pid)
    }

    /// kill -9: nothing is released or finished.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            c.stop(Duration::from_millis(100));
        }
    }

    /// Until it leads with every cache listed (`/readyz` names the leader).
    pub async fn until_leader(&mut self, timeout: Duration) -> Result<()> {
        let child = &mut self.child;
        until_leader(self.addr, timeout, || {
            child.as_mut().map_or(Ok(()), Child::check_running)
        })
        .await
    }

    /// Every API call the controller's writer has counted, by operation and outcome.
    pub async fn calls(&self) -> Result<Calls> {
        let text = http_get(self.addr, "/metrics").await?;
        Ok(Calls::parse(&text))
    }

    /// Interaction records that have an outcome (written, corrected, pod gone, failed,
    /// shed): one per admitted CONNECT review once the record writers are done.
    pub async fn records_done(&self) -> Result<f64> {
        let text = http_get(self.addr, "/metrics").await?;
        Ok(sum_of(&text, "sessionguard_webhook_records_total"))
    }

    /// The controller's metrics, as text.
    pub async fn metrics(&self) -> Result<String> {
        http_get(self.addr, "/metrics").await
    }

    /// The webhook serving certificate's CA (the Secret the controller keeps).
    pub async fn webhook_ca(&self, env: &TestEnv) -> Result<Vec<u8>> {
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = env.api();
        let s = await_::object(&secrets, &self.id.webhook_secret, "with a CA", |s| {
            s.data.as_ref().is_some_and(|d| d.contains_key("ca.crt"))
        })
        .await?;
        Ok(s.data
            .and_then(|mut d| d.remove("ca.crt"))
            .map(|b| b.0)
            .unwrap_or_default())
    }

    /// The exec webhook's path with the per-install token, as the controller
    /// keeps it in its Secret's `state.json` (`pathToken`; the webhook
    /// configurations carry the same path). Without it the webhook answers 404:
    /// only the API server may call it, and this load plays the API server.
    pub async fn webhook_path(&self, env: &TestEnv) -> Result<String> {
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> = env.api();
        let token_of = |s: &k8s_openapi::api::core::v1::Secret| -> Option<String> {
            let state = s.data.as_ref()?.get("state.json")?;
            let v: serde_json::Value = serde_json::from_slice(&state.0).ok()?;
            v["pathToken"].as_str().map(str::to_string)
        };
        let s = await_::object(
            &secrets,
            &self.id.webhook_secret,
            "with a path token",
            |s| token_of(s).is_some(),
        )
        .await?;
        Ok(format!(
            "/s/{}/validate/connect",
            token_of(&s).unwrap_or_default()
        ))
    }

    pub fn log(&self) -> &std::path::Path {
        &self.log
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            c.stop(Duration::from_secs(5));
        }
    }
}

/// The sum of every sample of `name` in a Prometheus text exposition.
pub fn sum_of(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `q` quantile of a Prometheus histogram's samples whose labels contain
/// `with` (`webhook="connect"`, say), as the upper bound of the bucket it falls in,
/// and the histogram's count. None while the histogram has no sample.
pub fn bucket_quantile(text: &str, name: &str, with: &str, q: f64) -> Option<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (labels, value) = rest.split_once("} ")?;
            if !labels.contains(with) {
                return None;
            }
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = buckets.last()?.1;
    if count <= 0.0 {
        return None;
    }
    let want = q * count;
    buckets
        .iter()
        .find(|(_, c)| *c >= want)
        .map(|(le, _)| (*le, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_the_upper_bound_of_its_bucket_for_the_chosen_series() {
        let text = "sessionguard_webhook_duration_seconds_bucket{le=\"0.001\",webhook=\"connect\"} 90\n\
            sessionguard_webhook_duration_seconds_bucket{le=\"0.002\",webhook=\"connect\"} 99\n\
            sessionguard_webhook_duration_seconds_bucket{le=\"0.004\",webhook=\"connect\"} 100\n\
            sessionguard_webhook_duration_seconds_bucket{le=\"+Inf\",webhook=\"connect\"} 100\n\
            sessionguard_webhook_duration_seconds_bucket{le=\"0.001\",webhook=\"guard\"} 0\n\
            sessionguard_webhook_duration_seconds_bucket{le=\"+Inf\",webhook=\"guard\"} 5\n";
        let name = "sessionguard_webhook_duration_seconds";
        assert_eq!(
            bucket_quantile(text, name, "webhook=\"connect\"", 0.99),
            Some((0.002, 100.0))
        );
        assert_eq!(
            bucket_quantile(text, name, "webhook=\"connect\"", 0.5),
            Some((0.001, 100.0))
        );
        assert_eq!(
            bucket_quantile(text, name, "webhook=\"guard\"", 0.99),
            Some((f64::INFINITY, 5.0))
        );
        assert_eq!(
            bucket_quantile(text, name, "webhook=\"mutate\"", 0.99),
            None
        );
    }

    #[test]
    fn sums_every_labelled_sample_of_one_metric_only() {
        let text = "# TYPE sessionguard_writes counter\n\
            sessionguard_writes_total{op=\"pdb_create\",outcome=\"ok\"} 3\n\
            sessionguard_writes_total{op=\"event\",outcome=\"ok\"} 4\n\
            sessionguard_writes_totally 100\n\
            sessionguard_writes_created 9\n";
        assert_eq!(sum_of(text, "sessionguard_writes_total"), 7.0);
    }
}
