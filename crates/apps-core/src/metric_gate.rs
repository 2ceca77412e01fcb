//! Metric gates: a PromQL query per cluster and the bound its value must
//! keep. The hub asks Prometheus (`GET /api/v1/query`); here: the query for
//! a cluster, and the verdict from Prometheus's answer.

use flotilla_api::rollout::MetricGate;
use serde_json::Value;

/// What a metric gate says of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    /// The value broke the bound: why, for the rollout's status.
    Fail(String),
    /// No value (no series, an error): the wave waits for one and its
    /// deadline decides.
    NoData(String),
}

/// The gate's query for `cluster` (`{{cluster}}` replaced).
pub fn query_for(gate: &MetricGate, cluster: &str) -> String {
    gate.query.replace("{{cluster}}", cluster)
}

/// The one number in a Prometheus `/api/v1/query` answer: a scalar, or a
/// vector's single sample (several samples: the largest with `max`, the
/// smallest with `min`, so the worst one is judged).
fn value(answer: &Value, prefer_largest: bool) -> Result<Option<f64>, String> {
    if answer.get("status").and_then(Value::as_str) != Some("success") {
        let error = answer.get("error").and_then(Value::as_str).unwrap_or("no status in the answer");
        return Err(format!("Prometheus refused the query: {error}"));
    }
    let data = answer.get("data").ok_or("no data in the answer")?;
    let number = |v: &Value| -> Option<f64> { v.get(1)?.as_str()?.parse::<f64>().ok() };
    match data.get("resultType").and_then(Value::as_str) {
        Some("scalar") => Ok(data.get("result").and_then(number)),
        Some("vector") => {
            let samples: Vec<f64> = data
                .get("result")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(|s| s.get("value").and_then(number)).collect())
                .unwrap_or_default();
            let worst = samples.into_iter().filter(|v| !v.is_nan()).reduce(|a, b| {
                if prefer_largest {
                    a.max(b)
                } else {
                    a.min(b)
                }
            });
            Ok(worst)
        }
        other => Err(format!("the query must give one number (a scalar or a vector), not {other:?}")),
    }
}

/// The gate's verdict on `cluster` from Prometheus's `answer`.
pub fn judge(gate: &MetricGate, cluster: &str, answer: &Value) -> Verdict {
    let value = match value(answer, gate.max.is_some()) {
        Ok(Some(v)) => v,
        Ok(None) => return Verdict::NoData(format!("metric gate {}: no value for {cluster} yet", gate.name)),
        Err(why) => return Verdict::NoData(format!("metric gate {}: {why}", gate.name)),
    };
    if let Some(max) = gate.max.filter(|max| value > *max) {
        return Verdict::Fail(format!("{cluster}: metric gate {}: {value} is above {max}", gate.name));
    }
    if let Some(min) = gate.min.filter(|min| value < *min) {
        return Verdict::Fail(format!("{cluster}: metric gate {}: {value} is below {min}", gate.name));
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gate(max: Option<f64>, min: Option<f64>) -> MetricGate {
        MetricGate {
            name: "errors".into(),
            prometheus: "http://prom:9090".into(),
            query: r#"max(app_error_ratio{cluster="{{cluster}}"})"#.into(),
            max,
            min,
        }
    }

    fn vector(values: &[&str]) -> Value {
        let result: Vec<Value> =
            values.iter().map(|v| json!({"metric": {}, "value": [1_700_000_000.0, v]})).collect();
        json!({"status": "success", "data": {"resultType": "vector", "result": result}})
    }

    #[test]
    fn the_query_names_the_cluster() {
        assert_eq!(query_for(&gate(Some(0.1), None), "eu-1"), r#"max(app_error_ratio{cluster="eu-1"})"#);
    }

    #[test]
    fn judge_table() {
        let scalar = json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "0.5"]}});
        let refused = json!({"status": "error", "errorType": "bad_data", "error": "parse error at char 4"});
        let matrix = json!({"status": "success", "data": {"resultType": "matrix", "result": []}});
        let cases: &[(&str, MetricGate, Value, &str)] = &[
            ("under the max", gate(Some(0.1), None), vector(&["0.01"]), "pass"),
            ("above the max", gate(Some(0.1), None), vector(&["0.5"]), "fail: m1: metric gate errors: 0.5 is above 0.1"),
            ("the worst sample is judged", gate(Some(0.1), None), vector(&["0.01", "0.3"]), "fail: m1: metric gate errors: 0.3 is above 0.1"),
            ("below the min", gate(None, Some(0.9)), vector(&["0.95", "0.5"]), "fail: m1: metric gate errors: 0.5 is below 0.9"),
            ("a scalar", gate(Some(1.0), None), scalar, "pass"),
            ("no series", gate(Some(0.1), None), vector(&[]), "no data: metric gate errors: no value for m1 yet"),
            ("NaN is no value", gate(Some(0.1), None), vector(&["NaN"]), "no data: metric gate errors: no value for m1 yet"),
            ("refused", gate(Some(0.1), None), refused, "no data: metric gate errors: Prometheus refused the query: parse error at char 4"),
            ("a range", gate(Some(0.1), None), matrix, "no data: metric gate errors: the query must give one number (a scalar or a vector), not Some(\"matrix\")"),
        ];
        for (name, gate, answer, want) in cases {
            let got = match judge(gate, "m1", answer) {
                Verdict::Pass => "pass".to_string(),
                Verdict::Fail(why) => format!("fail: {why}"),
                Verdict::NoData(why) => format!("no data: {why}"),
            };
            assert_eq!(got, *want, "{name}");
        }
    }
}
