//! A real Prometheus server (Debian's `prometheus`) for a test: loopback only, its own
//! temp dir and free port, 1 s scrape and rule evaluation, stopped on Drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sessionguard_e2e::harness::{Child, await_};
use sessionguard_e2e::{Result, wait};

use super::{free_addr, http_get, invalid, run};

/// One scrape job: `job` label and a static target.
pub struct Job<'a> {
    pub name: &'a str,
    pub target: SocketAddr,
    /// Extra target labels (e.g. `node`, as the chart's monitors add).
    pub labels: &'a [(&'a str, &'a str)],
}

pub struct Prometheus {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Prometheus {
    /// Writes prometheus.yml (scrape `jobs`, load `rules`) into a temp dir, checks it with
    /// promtool and starts the server; returns once it is ready.
    pub async fn start(
        env: &sessionguard_e2e::harness::TestEnv,
        prometheus: &Path,
        promtool: &Path,
        rules: &str,
        jobs: &[Job<'_>],
    ) -> Result<Self> {
        let dir = env.scratch_dir().join("prometheus");
        std::fs::create_dir_all(dir.join("data"))
            .map_err(|e| invalid(format!("creating {}: {e}", dir.display())))?;
        let rules_path = dir.join("sessionguard-alerts.yaml");
        write(&rules_path, rules)?;
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - sessionguard-alerts.yaml\nscrape_configs:\n",
        );
        for j in jobs {
            // honor_labels, as the chart's monitors set it: the metrics' own
            // namespace/pod labels (the session's pod) win over target labels.
            cfg.push_str(&format!(
                "  - job_name: {}\n    honor_labels: true\n    static_configs:\n      - targets: ['{}']\n",
                j.name, j.target
            ));
            if !j.labels.is_empty() {
                cfg.push_str("        labels:\n");
                for (k, v) in j.labels {
                    cfg.push_str(&format!("          {k}: '{v}'\n"));
                }
            }
        }
        let cfg_path = dir.join("prometheus.yml");
        write(&cfg_path, &cfg)?;
        let cfg_s = cfg_path.display().to_string();
        run(promtool, &["check", "config", &cfg_s])?;

        let addr = free_addr()?;
        let data = format!("--storage.tsdb.path={}", dir.join("data").display());
        let child = Child::spawn(
            prometheus,
            &[
                &format!("--config.file={cfg_s}"),
                &data,
                &format!("--web.listen-address={addr}"),
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            &[],
            &dir.join("prometheus.log"),
        )?;
        eprintln!(
            "prometheus: pid {}, http://{addr}, dir {}",
            child.pid(),
            dir.display()
        );
        let mut p = Self {
            child: Some(child),
            addr,
            dir,
        };
        let cell = std::cell::RefCell::new(&mut p);
        wait::until("prometheus to be ready", await_::TIMEOUT, || async {
            if let Some(c) = cell.borrow_mut().child.as_mut() {
                c.check_running()?;
            }
            Ok(http_get(addr, "/-/ready").await.ok().map(|_| ()))
        })
        .await?;
        Ok(p)
    }

    /// `GET /api/v1/<path>`, the `data` member of a successful answer.
    pub async fn api(&self, path_and_query: &str) -> Result<Value> {
        let body = http_get(self.addr, &format!("/api/v1/{path_and_query}")).await?;
        let v: Value = serde_json::from_str(&body)?;
        if v["status"] != "success" {
            return Err(invalid(format!("prometheus {path_and_query}: {v}")));
        }
        Ok(v["data"].clone())
    }

    /// An instant query: the result vector as (labels, value).
    pub async fn query(&self, promql: &str) -> Result<Vec<(Value, f64)>> {
        let data = self.api(&format!("query?query={}", encode(promql))).await?;
        Ok(data["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                let v = r["value"][1].as_str()?.parse().ok()?;
                Some((r["metric"].clone(), v))
            })
            .collect())
    }

    /// Active alerts (pending and firing) named `name`.
    pub async fn alerts(&self, name: &str) -> Result<Vec<Value>> {
        let data = self.api("alerts").await?;
        Ok(data["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .collect())
    }

    /// How many times the rule group has been evaluated is not exposed; its last
    /// evaluation time is: waits until a full evaluation happened after `after`.
    pub async fn evaluated_since(&self, after: jiff::Timestamp) -> Result<()> {
        wait::until(
            "the sessionguard rule group to be evaluated",
            await_::TIMEOUT,
            || async {
                let data = self.api("rules").await?;
                let last = data["groups"]
                    .as_array()
                    .and_then(|g| g.iter().find(|g| g["name"] == "sessionguard"))
                    .and_then(|g| g["lastEvaluation"].as_str())
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok());
                Ok(last.filter(|t| *t > after).map(|_| ()))
            },
        )
        .await
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- prometheus log tail ---\n{}", self.log_tail());
        }
        if let Some(c) = self.child.take() {
            c.stop(std::time::Duration::from_secs(5));
        }
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| invalid(format!("writing {}: {e}", path.display())))
}

/// Percent-encodes a query parameter.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
