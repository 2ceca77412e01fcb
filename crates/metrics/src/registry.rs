//! The process's registry and the instruments events update.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the per-controller instruments: a controller's name only (a
/// handful of values; never an object's key, which would make one series
/// per object).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// Labels of a work queue's depth.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The instruments the process updates as things happen.
pub struct Instruments {
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ControllerLabels, Counter>,
    pub reconcile_duration: HistogramFamily<ControllerLabels>,
    pub reconciles_in_flight: Family<ControllerLabels, Gauge>,
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// A Work's spec written on the hub → applied in the member (agent).
    pub work_apply_latency: Histogram,
    /// Clusters a binding's replicas left because the cluster failed
    /// (the hub's taints), counted when the binder writes the move.
    pub failovers: Counter,
    /// Graceful evictions the binder started (a cluster leaving a binding
    /// with its replicas kept until the new ones are healthy).
    pub evictions: Counter,
}

impl Instruments {
    pub fn controller(&self, controller: &str) -> ControllerLabels {
        ControllerLabels { controller: controller.to_string() }
    }

    /// The depth gauge of a queue, to set as keys come and go.
    pub fn queue(&self, queue: &str) -> Gauge {
        self.queue_depth.get_or_create(&QueueLabels { queue: queue.to_string() }).clone()
    }
}

fn reconcile_buckets() -> Histogram {
    // 5 ms to ~40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

struct Process {
    registry: Registry,
    instruments: Instruments,
}

fn process() -> &'static Process {
    static PROCESS: OnceLock<Process> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let mut registry = Registry::with_prefix("flotilla");
        let instruments = Instruments {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_buckets),
            reconciles_in_flight: Family::default(),
            queue_depth: Family::default(),
            // Apply latency is read from the Work's managed-fields time,
            // which has one-second resolution: buckets from 1 s.
            work_apply_latency: Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]),
            failovers: Counter::default(),
            evictions: Counter::default(),
        };
        registry.register("reconciles", "Reconciles run, by controller", instruments.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that returned an error, by controller",
            instruments.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took, by controller",
            instruments.reconcile_duration.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now, by controller",
            instruments.reconciles_in_flight.clone(),
        );
        registry.register(
            "queue_depth",
            "Keys waiting in a work queue (the hub's binder and status queues)",
            instruments.queue_depth.clone(),
        );
        registry.register(
            "work_apply_latency_seconds",
            "From a Work's spec written on the hub to its manifests applied in the member (agent)",
            instruments.work_apply_latency.clone(),
        );
        registry.register(
            "failovers",
            "Clusters replicas failed over from (binder writes)",
            instruments.failovers.clone(),
        );
        registry.register(
            "evictions",
            "Graceful evictions started (binder writes)",
            instruments.evictions.clone(),
        );
        registry.register_collector(Box::new(crate::state::Sources));
        Process { registry, instruments }
    })
}

/// The instruments of this process.
pub fn instruments() -> &'static Instruments {
    &process().instruments
}

/// A scrape: every instrument and every live state source, in OpenMetrics
/// text.
pub fn encode() -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &process().registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_names_every_instrument() {
        instruments().reconciles.get_or_create(&instruments().controller("test")).inc();
        let text = encode().unwrap();
        for name in [
            "flotilla_reconciles_total{controller=\"test\"} ",
            "# TYPE flotilla_work_apply_latency_seconds histogram",
            "flotilla_failovers_total 0",
            "flotilla_evictions_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
