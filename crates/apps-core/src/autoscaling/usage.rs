//! What a member's agent reports about a workload's pods: counts, and the
//! usage (`metrics.k8s.io/v1beta1` PodMetrics) and requests of the ready
//! pods that have metrics, summed.

use std::collections::HashMap;

use flotilla_api::autoscaling::WorkloadUsage;
use flotilla_core::quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use serde_json::Value;

use crate::health::diagnosis::{pod_selection, PodSelection};

/// The pods whose usage counts for a workload a FederatedHPA targets: a
/// built-in workload's (the pods its health detail reads), and for any
/// other kind (a custom workload scaled through its `/scale`, e.g. a
/// CloneSet) the pods its `spec.selector` selects, where scale
/// subresources keep their label selector. None when nothing is selected.
pub fn usage_selection(object: &Value) -> Option<PodSelection> {
    pod_selection(object).or_else(|| {
        let selector: LabelSelector = serde_json::from_value(object["spec"]["selector"].clone()).ok()?;
        let selects_something = selector.match_labels.as_ref().is_some_and(|l| !l.is_empty())
            || selector.match_expressions.as_ref().is_some_and(|e| !e.is_empty());
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
        selects_something.then_some(PodSelection { namespace, selector })
    })
}

/// The summary of `pods` (JSON Pods of one workload) given the PodMetrics
/// of their namespace (`metrics`, any superset).
pub fn summarize(pods: &[Value], metrics: &[Value]) -> WorkloadUsage {
    let by_name: HashMap<&str, &Value> =
        metrics.iter().filter_map(|m| Some((m["metadata"]["name"].as_str()?, m))).collect();
    let mut usage = WorkloadUsage::default();
    let mut newest: Option<(Time, Option<i64>)> = None;
    for pod in pods {
        let phase = pod["status"]["phase"].as_str().unwrap_or_default();
        if pod["metadata"]["deletionTimestamp"].is_string() || matches!(phase, "Succeeded" | "Failed") {
            continue;
        }
        usage.pods += 1;
        if !ready(pod) {
            continue;
        }
        usage.ready_pods += 1;
        let Some(metric) = pod["metadata"]["name"].as_str().and_then(|n| by_name.get(n)) else { continue };
        let (cpu, memory) = container_sums(&metric["containers"], "usage");
        let (cpu_requests, memory_requests) = container_sums(&pod["spec"]["containers"], "resources");
        usage.pods_with_metrics += 1;
        usage.cpu_usage_millicores += cpu;
        usage.memory_usage_bytes += memory;
        usage.cpu_requests_millicores += cpu_requests;
        usage.memory_requests_bytes += memory_requests;
        if let Ok(time) = serde_json::from_value::<Time>(metric["timestamp"].clone()) {
            if newest.as_ref().is_none_or(|(t, _)| time.0 > t.0) {
                newest = Some((time, window_seconds(metric["window"].as_str().unwrap_or_default())));
            }
        }
    }
    if let Some((time, window)) = newest {
        usage.metrics_time = Some(time);
        usage.window_seconds = window;
    }
    usage
}

fn ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Summed cpu (millicores) and memory (bytes) of containers' `usage`
/// (PodMetrics) or `resources.requests` (a pod spec).
fn container_sums(containers: &Value, field: &str) -> (i64, i64) {
    let mut sums = (0i64, 0i64);
    for c in containers.as_array().into_iter().flatten() {
        let values = if field == "usage" { &c["usage"] } else { &c["resources"]["requests"] };
        if let Some(cpu) = values["cpu"].as_str() {
            sums.0 += cpu_millicores(cpu);
        }
        if let Some(memory) = values["memory"].as_str() {
            sums.1 += quantity::units(memory).map_or(0, |b| i64::try_from(b).unwrap_or(i64::MAX));
        }
    }
    sums
}

/// CPU in millicores, rounded up; metrics-server writes nanocores (`n`)
/// and microcores (`u`), which requests never use.
pub fn cpu_millicores(q: &str) -> i64 {
    let scaled = |digits: &str, per_milli: u128| digits.parse::<u128>().ok().map(|v| v.div_ceil(per_milli));
    let millis = if let Some(digits) = q.strip_suffix('n') {
        scaled(digits, 1_000_000)
    } else if let Some(digits) = q.strip_suffix('u') {
        scaled(digits, 1_000)
    } else {
        quantity::millicores(q).ok()
    };
    millis.map_or(0, |m| i64::try_from(m).unwrap_or(i64::MAX))
}

/// `30s`, `1m0.5s` (a Go duration) in whole seconds.
fn window_seconds(window: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut number = String::new();
    for c in window.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value: f64 = number.parse().ok()?;
        number.clear();
        total += match c {
            'h' => value * 3600.0,
            'm' => value * 60.0,
            's' => value,
            _ => return None,
        };
    }
    number.is_empty().then_some(total.round() as i64)
}

#[cfg(test)]
mod tests {
    /// (case, workload, wanted (namespace, the selector's `app` label)).
    type SelectionCase = (&'static str, Value, Option<(&'static str, &'static str)>);

    #[test]
    fn usage_selection_covers_built_in_and_custom_workloads() {
        let cases: Vec<SelectionCase> = vec![
            (
                "deployment",
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "shop"},
                       "spec": {"selector": {"matchLabels": {"app": "web"}}}}),
                Some(("shop", "web")),
            ),
            (
                "custom kind with a selector",
                json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "metadata": {"namespace": "shop"},
                       "spec": {"selector": {"matchLabels": {"app": "clone"}}}}),
                Some(("shop", "clone")),
            ),
            (
                "custom kind without a namespace",
                json!({"apiVersion": "example.com/v1", "kind": "Widget",
                       "spec": {"selector": {"matchLabels": {"app": "w"}}}}),
                Some(("default", "w")),
            ),
            (
                "custom kind with an empty selector",
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"selector": {}}}),
                None,
            ),
            (
                "custom kind with a string selector",
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"selector": "app=w"}}),
                None,
            ),
            ("config map", json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}), None),
        ];
        for (name, object, want) in cases {
            let got = usage_selection(&object).map(|s| {
                let app = s.selector.match_labels.unwrap_or_default().get("app").cloned().unwrap_or_default();
                (s.namespace, app)
            });
            assert_eq!(got, want.map(|(ns, app)| (ns.to_string(), app.to_string())), "{name}");
        }
    }

    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, ready: bool, cpu: &str, memory: &str) -> Value {
        json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        })
    }

    fn metric(name: &str, cpu: &str, memory: &str, at: &str) -> Value {
        json!({"metadata": {"name": name}, "timestamp": at, "window": "10.5s",
               "containers": [{"name": "c", "usage": {"cpu": cpu, "memory": memory}}]})
    }

    #[test]
    fn summaries() {
        struct Case {
            name: &'static str,
            pods: Vec<Value>,
            metrics: Vec<Value>,
            want: (i32, i32, i32, i64, i64, i64, i64),
        }
        let t1 = "2026-01-01T00:00:10Z";
        let t2 = "2026-01-01T00:00:20Z";
        let cases = [
            Case { name: "nothing", pods: vec![], metrics: vec![], want: (0, 0, 0, 0, 0, 0, 0) },
            Case {
                name: "two ready pods with metrics, nanocores rounded up",
                pods: vec![
                    pod("a", "Running", true, "100m", "64Mi"),
                    pod("b", "Running", true, "100m", "64Mi"),
                ],
                metrics: vec![metric("a", "50000001n", "10Mi", t1), metric("b", "150m", "20Mi", t2)],
                want: (2, 2, 2, 201, 200, 30 << 20, 128 << 20),
            },
            Case {
                name: "a ready pod without metrics, an unready one, finished ones left out",
                pods: vec![
                    pod("a", "Running", true, "100m", "64Mi"),
                    pod("b", "Running", true, "100m", "64Mi"),
                    pod("c", "Pending", false, "100m", "64Mi"),
                    pod("d", "Succeeded", false, "100m", "64Mi"),
                    pod("e", "Failed", false, "100m", "64Mi"),
                ],
                metrics: vec![
                    metric("a", "500u", "1Ki", t1),
                    metric("c", "1", "1Mi", t1),
                    metric("zz", "1", "1", t1),
                ],
                want: (3, 2, 1, 1, 100, 1024, 64 << 20),
            },
        ];
        for c in cases {
            let u = summarize(&c.pods, &c.metrics);
            let got = (
                u.pods,
                u.ready_pods,
                u.pods_with_metrics,
                u.cpu_usage_millicores,
                u.cpu_requests_millicores,
                u.memory_usage_bytes,
                u.memory_requests_bytes,
            );
            assert_eq!(got, c.want, "{}", c.name);
            if c.name.starts_with("two") {
                assert_eq!(u.metrics_time.unwrap().0.as_second(), 1_767_225_620, "{}: newest", c.name);
                assert_eq!(u.window_seconds, Some(11), "{}", c.name);
            }
        }
    }

    #[test]
    fn windows_and_cpu_units() {
        for (window, want) in
            [("30s", Some(30)), ("1m0s", Some(60)), ("1m30.4s", Some(90)), ("x", None), ("5", None)]
        {
            assert_eq!(window_seconds(window), want, "{window}");
        }
        for (q, want) in [("1", 1000), ("250m", 250), ("1n", 1), ("2000000n", 2), ("1500u", 2), ("bad", 0)] {
            assert_eq!(cpu_millicores(q), want, "{q}");
        }
    }
}
