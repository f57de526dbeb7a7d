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
    use sessionguard_core::metric_docs;

    use super::*;
    use crate::config::Config;
    use crate::io::watches;

    #[test]
    fn the_readme_lists_exactly_the_metrics_the_controller_serves() {
        let config = Config::try_parse_from(["c", "--webhook", "true"]).expect("flags");
        let (stores, _writers) = watches::stores();
        let metrics = Metrics::default();
        let (registry, webhook) = build(Sources {
            metrics: &metrics,
            cache: Arc::new(Cache::new(stores, Duration::from_secs(60))),
            memory: Arc::default(),
            blocked: Arc::default(),
            rollout_stuck_after: Duration::from_secs(900),
            webhook: &config.webhook,
        });
        assert!(
            webhook.is_some(),
            "--webhook true registers the webhooks' families"
        );
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
            "README `### Controller metrics` and the registry (face/registry.rs) disagree:\n  {}",
            diff.join("\n  ")
        );
    }
}
