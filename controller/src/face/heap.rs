//! `sessionguard_heap_*`: what the allocator holds, read at scrape time, so
//! the controller's memory can be split into what the program uses
//! (`allocated`) and what the allocator keeps around it (`resident` minus
//! `allocated`: fragmentation and pages not yet given back).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// The controller's allocator (jemalloc, set in `main.rs`); under another
/// global allocator (unit tests) the figures are jemalloc's own, near 0.
#[derive(Debug, Default)]
pub struct HeapGauges;

/// One reading of the allocator's statistics, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Heap {
    pub allocated: u64,
    pub active: u64,
    pub resident: u64,
    pub retained: u64,
}

impl Heap {
    /// Reads fresh statistics (jemalloc caches them until the epoch moves).
    /// None when the allocator cannot say.
    pub fn read() -> Option<Self> {
        use tikv_jemalloc_ctl::{epoch, stats};
        epoch::advance().ok()?;
        Some(Self {
            allocated: stats::allocated::read().ok()? as u64,
            active: stats::active::read().ok()? as u64,
            resident: stats::resident::read().ok()? as u64,
            retained: stats::retained::read().ok()? as u64,
        })
    }
}

impl Collector for HeapGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(heap) = Heap::read() else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "heap_allocated_bytes",
                "Bytes the controller has allocated and not freed (jemalloc stats.allocated)",
                heap.allocated,
            ),
            (
                "heap_active_bytes",
                "Bytes in pages the allocator has handed out (stats.active; minus allocated: fragmentation)",
                heap.active,
            ),
            (
                "heap_resident_bytes",
                "Bytes of the allocator's pages resident in memory (stats.resident; minus active: freed pages not yet given back)",
                heap.resident,
            ),
            (
                "heap_retained_bytes",
                "Bytes of virtual memory the allocator kept after giving the pages back (stats.retained; not resident)",
                heap.retained,
            ),
        ] {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value as f64).encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauges_are_encoded_with_their_names() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry
            .sub_registry_with_prefix("sessionguard")
            .register_collector(Box::new(HeapGauges));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for name in [
            "sessionguard_heap_allocated_bytes",
            "sessionguard_heap_active_bytes",
            "sessionguard_heap_resident_bytes",
            "sessionguard_heap_retained_bytes",
        ] {
            assert!(
                out.contains(&format!("# TYPE {name} gauge")),
                "{name} in {out}"
            );
        }
    }
}
