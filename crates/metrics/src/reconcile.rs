//! The wrapper every controller's reconcile runs in: a tracing span named
//! `reconcile` with the controller and the object's key, and the
//! per-controller counts, errors, duration and reconciles in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use tracing::Instrument;

use crate::registry::instruments;

/// An object's key as the span shows it: `namespace/name`, or `name` for a
/// cluster-scoped object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        Self { namespace: namespace.filter(|ns| !ns.is_empty()).map(str::to_string), name: name.to_string() }
    }

    pub fn of<K: kube::Resource>(object: &K) -> Self {
        Self::new(object.namespace().as_deref(), &object.name_any())
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Runs one reconcile of `key` by `controller` in its span and counts it.
pub async fn observe<T, E, F>(controller: &str, key: &ObjectKey, work: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let labels = instruments().controller(controller);
    let in_flight = instruments().reconciles_in_flight.get_or_create(&labels).clone();
    in_flight.inc();
    // Decremented even when the reconcile is cancelled (the controller
    // stopping drops the future).
    let _in_flight = scopeguard(move || {
        in_flight.dec();
    });
    let span = tracing::info_span!("reconcile", controller, key = %key);
    let started = Instant::now();
    let result = work.instrument(span).await;
    instruments().reconcile_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    instruments().reconciles.get_or_create(&labels).inc();
    if result.is_err() {
        instruments().reconcile_errors.get_or_create(&labels).inc();
    }
    result
}

/// `observe` in the shape kube-runtime's `Controller::run` calls a
/// reconciler: `.run(|o, c| flotilla_metrics::reconcile("x", o, c, reconcile), ...)`.
pub async fn reconcile<K, C, T, E, F, Fut>(
    controller: &'static str,
    object: Arc<K>,
    ctx: Arc<C>,
    f: F,
) -> Result<T, E>
where
    K: kube::Resource,
    F: FnOnce(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let key = ObjectKey::of(object.as_ref());
    observe(controller, &key, f(object, ctx)).await
}

struct Guard<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Guard<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

fn scopeguard<F: FnOnce()>(f: F) -> Guard<F> {
    Guard(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_namespace_slash_name() {
        let cases = [
            ("namespaced", ObjectKey::new(Some("apps"), "web"), "apps/web"),
            ("cluster-scoped", ObjectKey::new(None, "m1"), "m1"),
            ("empty namespace is cluster-scoped", ObjectKey::new(Some(""), "m1"), "m1"),
        ];
        for (name, key, want) in cases {
            assert_eq!(key.to_string(), want, "{name}");
        }
    }

    #[tokio::test]
    async fn counts_reconciles_and_errors_per_controller() {
        let labels = instruments().controller("wrapper-test");
        let key = ObjectKey::new(Some("ns"), "a");
        let ok: Result<(), &str> = observe("wrapper-test", &key, async { Ok(()) }).await;
        let err: Result<(), &str> = observe("wrapper-test", &key, async { Err("no") }).await;
        assert!(ok.is_ok() && err.is_err());
        assert_eq!(instruments().reconciles.get_or_create(&labels).get(), 2);
        assert_eq!(instruments().reconcile_errors.get_or_create(&labels).get(), 1);
        assert_eq!(instruments().reconciles_in_flight.get_or_create(&labels).get(), 0);
        assert_eq!(
            crate::encode()
                .unwrap()
                .lines()
                .filter(|l| l
                    .starts_with("flotilla_reconcile_duration_seconds_count{controller=\"wrapper-test\"} 2"))
                .count(),
            1
        );
    }
}
