//! A metric that declares itself (`# HELP`, `# TYPE`) before its first sample.
//!
//! prometheus-client leaves a labelled family out of the exposition until it
//! has a series, so a scrape could not tell "none yet" from "not in this
//! version" (an `absent()` alert fires on both), and a fresh registry could
//! not be held to the README's metric tables. Wrapping a family in
//! [`Declared`] keeps its HELP and TYPE lines in every scrape.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;

#[derive(Debug)]
pub struct Declared<M>(pub M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::registry::Registry;

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Kind {
        kind: &'static str,
    }

    #[test]
    fn an_empty_family_is_declared_and_its_series_still_appear() {
        let (plain, declared) = (
            Family::<Kind, Counter>::default(),
            Family::<Kind, Counter>::default(),
        );
        let mut registry = Registry::default();
        registry.register("plain", "Left out while empty", plain.clone());
        registry.register("declared", "Always declared", Declared(declared.clone()));
        let text = |r: &Registry| {
            let mut s = String::new();
            prometheus_client::encoding::text::encode(&mut s, r).unwrap();
            s
        };
        let empty = text(&registry);
        assert!(empty.contains("# TYPE declared counter"), "{empty}");
        assert!(!empty.contains("plain"), "{empty}");
        declared.get_or_create(&Kind { kind: "x" }).inc();
        let one = text(&registry);
        assert!(one.contains("declared_total{kind=\"x\"} 1"), "{one}");
    }
}
