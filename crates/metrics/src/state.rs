//! Gauges read from controllers' caches at scrape time.
//!
//! A controller registers a `StateSource` (holding its reflector stores)
//! and keeps the `Arc`; the registry holds only a weak reference, so a
//! stopped controller's gauges leave the scrape with it, and a source never
//! keeps a cache alive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// One gauge family: its name (without the `flotilla_` prefix), its help
/// and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Gauge {
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Self { name, help, samples: Vec::new() }
    }

    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push(Sample { labels, value });
    }
}

/// Something that reads gauges from what it holds (no I/O: a scrape must
/// stay fast at 1,000 clusters).
pub trait StateSource: Send + Sync + 'static {
    fn gauges(&self) -> Vec<Gauge>;
}

fn sources() -> &'static Mutex<Vec<Weak<dyn StateSource>>> {
    static SOURCES: Mutex<Vec<Weak<dyn StateSource>>> = Mutex::new(Vec::new());
    &SOURCES
}

fn lock() -> std::sync::MutexGuard<'static, Vec<Weak<dyn StateSource>>> {
    // The list stays whole whatever panicked while holding it.
    sources().lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds `source` to every scrape while the caller keeps it.
pub fn register_source(source: &Arc<dyn StateSource>) {
    let mut list = lock();
    list.retain(|s| s.strong_count() > 0);
    list.push(Arc::downgrade(source));
}

/// The expiry of a process's own client certificate (the member agent's,
/// a node agent's), for as long as the process holds the certificate.
pub struct ClientCertificate {
    /// `agent` or `node-agent`.
    pub component: &'static str,
    /// The cluster's or the Machine's name.
    pub name: String,
    /// When the certificate stops being valid, in seconds since the epoch.
    pub not_after: i64,
}

impl StateSource for ClientCertificate {
    fn gauges(&self) -> Vec<Gauge> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut gauge = Gauge::new(
            "client_certificate_expiry_seconds",
            "Seconds until this process's own client certificate expires (it renews at 70% of its life)",
        );
        gauge.push(
            vec![("component", self.component.to_string()), ("name", self.name.clone())],
            self.not_after.saturating_sub(now) as f64,
        );
        vec![gauge]
    }
}

/// Registers `certificate` for scrapes while the caller keeps the handle.
pub fn register_certificate(certificate: ClientCertificate) -> Arc<dyn StateSource> {
    let source: Arc<dyn StateSource> = Arc::new(certificate);
    register_source(&source);
    source
}

/// The registry's collector over every live source. Families of the same
/// name from several sources (two hubs in one test process) are merged, so
/// the exposition never repeats a metric's descriptor.
#[derive(Debug)]
pub(crate) struct Sources;

impl prometheus_client::collector::Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let live: Vec<Arc<dyn StateSource>> = lock().iter().filter_map(Weak::upgrade).collect();
        let mut families: BTreeMap<&'static str, Gauge> = BTreeMap::new();
        for source in live {
            for gauge in source.gauges() {
                match families.get_mut(gauge.name) {
                    Some(family) => family.samples.extend(gauge.samples),
                    None => {
                        families.insert(gauge.name, gauge);
                    }
                }
            }
        }
        for family in families.into_values() {
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, MetricType::Gauge)?;
            for sample in &family.samples {
                ConstGauge::new(sample.value).encode(metric.encode_family(&sample.labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<Gauge>);

    impl StateSource for Fixed {
        fn gauges(&self) -> Vec<Gauge> {
            self.0.clone()
        }
    }

    fn gauge(name: &'static str, cluster: &str, value: f64) -> Gauge {
        let mut g = Gauge::new(name, "test gauge");
        g.push(vec![("cluster", cluster.to_string())], value);
        g
    }

    #[test]
    fn a_client_certificate_reports_seconds_to_its_expiry() {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let cert = ClientCertificate { component: "agent", name: "m1".into(), not_after: now + 3_600 };
        let gauges = cert.gauges();
        let sample = &gauges[0].samples[0];
        assert_eq!(sample.labels, vec![("component", "agent".to_string()), ("name", "m1".to_string())]);
        assert!((3_590.0..=3_600.0).contains(&sample.value), "{}", sample.value);
    }

    #[test]
    fn sources_are_scraped_while_kept_and_merged_by_name() {
        let a: Arc<dyn StateSource> = Arc::new(Fixed(vec![gauge("state_test", "a", 1.0)]));
        let b: Arc<dyn StateSource> = Arc::new(Fixed(vec![gauge("state_test", "b", 2.5)]));
        register_source(&a);
        register_source(&b);
        let text = crate::encode().unwrap();
        assert_eq!(text.matches("# TYPE flotilla_state_test gauge").count(), 1, "{text}");
        assert!(text.contains("flotilla_state_test{cluster=\"a\"} 1"), "{text}");
        assert!(text.contains("flotilla_state_test{cluster=\"b\"} 2.5"), "{text}");
        drop(b);
        let text = crate::encode().unwrap();
        assert!(text.contains("flotilla_state_test{cluster=\"a\"} 1"), "{text}");
        assert!(!text.contains("cluster=\"b\""), "a dropped source leaves the scrape: {text}");
    }
}
