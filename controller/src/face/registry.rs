//! The controller's one metrics registry: every family `/metrics` serves is
//! registered here, so what the README's tables list can be checked against
//! a single place (the test below).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::face::admission::{self, WebhookConfig, metrics::Metrics as WebhookMetrics};
use crate::face::blocked::{BlockedDrains, BlockedGauge};
use crate::face::gauges::PodGauges;
use crate::face::heap::HeapGauges;
use crate::face::rollout_gauges::RolloutGauges;
use crate::io::cache::Cache;
use crate::io::metrics::Metrics;
use crate::reconcile::memory::Memory;

/// What the families read: the counters the io and reconcile layers update,
/// and the state the scrape-time gauges are computed from.
pub struct Sources<'a> {
    pub metrics: &'a Metrics,
    pub cache: Arc<Cache>,
    pub memory: Arc<Memory>,
    pub blocked: Arc<BlockedDrains>,
    /// `--rollout-stuck-after`.
    pub rollout_stuck_after: Duration,
    pub webhook: &'a WebhookConfig,
}

/// The registry `/metrics` serves, and the webhooks' metrics when they are on.
pub fn build(s: Sources<'_>) -> (Registry, Option<WebhookMetrics>) {
    let mut registry = Registry::default();
    s.metrics.register(&mut registry);
    let prefixed = registry.sub_registry_with_prefix("sessionguard");
    prefixed.register_collector(Box::new(PodGauges(s.cache.clone())));
    prefixed.register_collector(Box::new(HeapGauges));
    prefixed.register_collector(Box::new(BlockedGauge {
        blocked: s.blocked,
        cache: s.cache.clone(),
    }));
    prefixed.register_collector(Box::new(RolloutGauges {
        cache: s.cache,
        memory: s.memory,
        after: s.rollout_stuck_after,
    }));
    let webhook = admission::register(s.webhook, &mut registry);
    (registry, webhook)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use jiff::Timestamp;
    use sessionguard_core::drain::Refusal;
    use sessionguard_core::metric_docs;

    use super::*;
    use crate::config::Config;
    use crate::face::admission::metrics::{
        OutcomeLabels, ReasonLabels, RequestLabels, WebhookLabels,
    };
    use crate::fixtures::world::world;
    use crate::fixtures::{our_pdb, pod, session, statefulset};
    use crate::io::metrics::{ControllerLabels, ErrorLabels, EvictionLabels, KindLabels, OpLabels};

    /// One sample in every labelled family that is fed as things happen.
    fn feed_each_once(m: &Metrics, w: &WebhookMetrics) {
        let (op, outcome, kind) = ("patch_pod", "ok", "pods");
        m.writes.get_or_create(&OpLabels { op, outcome }).inc();
        m.watcher_errors.get_or_create(&KindLabels { kind }).inc();
        m.report_errors.get_or_create(&KindLabels { kind }).inc();
        m.reconcile_duration
            .get_or_create(&ControllerLabels { controller: "pod" })
            .observe(0.001);
        m.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: "pod",
                kind,
            })
            .inc();
        m.evictions
            .get_or_create(&EvictionLabels {
                reason: "drift",
                outcome,
            })
            .inc();
        let webhook = "connect";
        w.requests
            .get_or_create(&RequestLabels {
                webhook,
                outcome: "allowed",
            })
            .inc();
        w.unauthenticated
            .get_or_create(&ReasonLabels { reason: "no_token" })
            .inc();
        w.duration
            .get_or_create(&WebhookLabels { webhook })
            .observe(0.001);
        w.served
            .get_or_create(&WebhookLabels { webhook })
            .observe(0.001);
        w.records
            .get_or_create(&OutcomeLabels {
                outcome: "recorded",
            })
            .inc();
    }

    #[tokio::test]
    async fn the_readme_lists_exactly_the_metrics_the_controller_serves() {
        let config = Config::try_parse_from(["c", "--webhook", "true"]).expect("flags");
        // A protected pod of an OnDelete set behind its update, with a login,
        // on a cordoned node, and a drain refused: every scrape-time gauge
        // has a series.
        let sts = statefulset("db").protected().build();
        let db = pod("db-0")
            .protected()
            .on_node("node-a")
            .of(&sts, "db-old")
            .build();
        let (ctx, _api) = world()
            .pod(&db)
            .pdb(&our_pdb(&db))
            .statefulset(&sts)
            .cordoned_node("node-a")
            .agent("node-a", vec![session(&db).build()])
            .start();
        let blocked = Arc::new(BlockedDrains::default());
        let now = Timestamp::now();
        let uid = db.metadata.uid.clone().expect("fixture pods have a UID");
        blocked.record(
            "ops",
            "db-0",
            Refusal {
                uid,
                node: "node-a".into(),
                user: "alice".into(),
                requested_by: "kubectl-drain".into(),
                first: now,
                last: now,
            },
            now,
        );
        let metrics = Metrics::default();
        let (registry, webhook) = build(Sources {
            metrics: &metrics,
            cache: ctx.cache.clone(),
            memory: Arc::default(),
            blocked,
            rollout_stuck_after: Duration::from_secs(900),
            webhook: &config.webhook,
        });
        let webhook = webhook.expect("--webhook true registers the webhooks' families");
        feed_each_once(&metrics, &webhook);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let served = metric_docs::served(&text);
        assert!(served.len() > 20, "too few families served:\n{text}");
        let documented = metric_docs::documented(
            include_str!("../../../README.md"),
            "### Controller metrics",
            "sessionguard_",
        );
        let diff = metric_docs::differences(&served, &documented);
        assert!(
            diff.is_empty(),
            "README `### Controller metrics` and the registry (face/registry.rs) disagree (name, type or labels):\n  {}\n{text}",
            diff.join("\n  ")
        );
    }
}
