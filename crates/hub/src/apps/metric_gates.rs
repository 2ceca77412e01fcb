//! Metric gates, asked of Prometheus: one instant query per gate and
//! cluster (`GET <prometheus>/api/v1/query`), judged by
//! `flotilla_apps_core::metric_gate`.

use std::time::Duration;

use flotilla_api::rollout::MetricGate;
use flotilla_apps_core::metric_gate::{judge, query_for, Verdict};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long one query may take before the gate says it has no data.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Percent-encodes a query string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn ask(prometheus: &str, query: &str) -> Result<serde_json::Value, String> {
    let url = format!("{}/api/v1/query?query={}", prometheus.trim_end_matches('/'), encode(query));
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = tokio::time::timeout(QUERY_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| format!("{prometheus} did not answer within {}s", QUERY_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{prometheus}: {e}"))?;
    let body = response.into_body().collect().await.map_err(|e| format!("{prometheus}: {e}"))?.to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("{prometheus} answered what is not JSON: {e}"))
}

/// Every gate on `cluster`: the first failure, else the first missing
/// value, else a pass.
pub(super) async fn check(gates: &[MetricGate], cluster: &str) -> Verdict {
    let answers = futures::future::join_all(gates.iter().map(|gate| async move {
        match ask(&gate.prometheus, &query_for(gate, cluster)).await {
            Ok(answer) => judge(gate, cluster, &answer),
            Err(why) => Verdict::NoData(format!("metric gate {}: {why}", gate.name)),
        }
    }))
    .await;
    let failed = answers.iter().find(|v| matches!(v, Verdict::Fail(_)));
    let missing = answers.iter().find(|v| matches!(v, Verdict::NoData(_)));
    failed.or(missing).cloned().unwrap_or(Verdict::Pass)
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_percent_encoded() {
        let cases = [
            (r#"max(x{cluster="m1"})"#, "max%28x%7Bcluster%3D%22m1%22%7D%29"),
            ("a b+c", "a%20b%2Bc"),
            ("plain-name_1.0~", "plain-name_1.0~"),
        ];
        for (query, want) in cases {
            assert_eq!(super::encode(query), want);
        }
    }
}
