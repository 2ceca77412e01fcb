//! Flotilla's Prometheus metrics (prometheus-client, OpenMetrics text).
//!
//! One registry per process, as controller-runtime keeps: every controller
//! of the process counts into it and one `/metrics` endpoint serves it.
//!
//! - `registry`: the process's registry, the instruments events update
//!   (reconciles, queue depths, Work apply latency, failovers, evictions)
//!   and the encoding of a scrape;
//! - `reconcile`: the wrapper every controller's reconcile runs in (a
//!   tracing span with the controller and the object's key, counts, errors,
//!   duration, in flight);
//! - `state`: gauges read from controllers' caches at scrape time (clusters
//!   by condition, heartbeat age, etcd health, certificate expiry), so a
//!   scrape shows the caches as they are and nothing goes stale;
//! - `server`: the HTTP endpoint (`GET /metrics`);
//! - `events`: publishing a decision's Notice as a Kubernetes Event.

pub mod events;
pub mod reconcile;
pub mod registry;
pub mod server;
pub mod state;

/// The gauge type of `Instruments::queue`.
pub use prometheus_client::metrics::gauge::Gauge as QueueGauge;
pub use reconcile::{observe, reconcile, ObjectKey};
pub use registry::{encode, instruments, Instruments};
pub use server::{serve, serving, Error, MetricsServer};
pub use state::{register_certificate, register_source, ClientCertificate, Gauge, Sample, StateSource};
