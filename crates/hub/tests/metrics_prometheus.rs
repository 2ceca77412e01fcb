#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A real Prometheus (Debian's package, installed by
//! `scripts/test-tools.sh`) scrapes a running fleet: the hub's `/metrics`
//! and one agent's (`AgentConfig::metrics_addr`), with Flotilla's alert
//! rules loaded. The test asks Prometheus's HTTP API for what it scraped:
//! clusters by condition, reconciles per controller, heartbeat age, queue
//! depth, the Work apply latency of a propagated ConfigMap, an agent's
//! certificate expiry, the rules
//! evaluating without error, and, once an agent stops, its cluster's
//! Available going Unknown and `FlotillaClusterUnreachable` pending.
//!
//! The hub's controllers and the agents run in the test process, which has
//! one registry: both endpoints serve it (queries pick `job="hub"` where
//! that matters).

use flotilla_testkit as support;

use std::time::Duration;

use flotilla_localkube::{wait_for, ManagedProcess, ProcessSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use serde_json::{json, Value};
use support::{agent_config, apply, create_namespace, Fleet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(120);
const NS: &str = "metrics";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_fleet_and_sees_a_cluster_go_unreachable() {
    let mut fleet = Fleet::start(&["eu", "us"], &[]).await;

    // The hub's endpoint, as `hub run --metrics-addr` serves it.
    let hub_metrics = flotilla_metrics::serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let hub_addr = hub_metrics.addr;
    tokio::spawn(hub_metrics.run());
    // m2's agent again, now with its endpoint (its credentials are kept in
    // its state directory).
    let agent_port = flotilla_localkube::ports::free_port().unwrap();
    fleet.agents.remove("m2").unwrap().abort();
    let mut config = agent_config("m2", &fleet.tmp.path().join("m2"), fleet.member("m2"), None);
    config.metrics_addr = Some(format!("127.0.0.1:{agent_port}").parse().unwrap());
    fleet.agents.insert("m2".into(), tokio::spawn(flotilla_agent::run(config, std::future::pending())));

    // A ConfigMap propagated to both members: binder reconciles, Works,
    // and an apply latency per member.
    let hub = fleet.hub.client();
    create_namespace(&hub, NS).await;
    apply(
        &hub,
        json!({
            "apiVersion": "policy.flotilla.io/v1alpha1", "kind": "PropagationPolicy",
            "metadata": {"name": "settings", "namespace": NS},
            "spec": {"resourceSelectors": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "settings"}],
                     "placement": {}},
        }),
    )
    .await;
    apply(
        &hub,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": NS},
               "data": {"colour": "blue"}}),
    )
    .await;
    for m in ["m1", "m2"] {
        let configmaps: Api<ConfigMap> = Api::namespaced(fleet.member(m).client(), NS);
        wait_for(&format!("the ConfigMap applied in {m}"), WAIT, || async {
            configmaps.get_opt("settings").await.ok().flatten().is_some()
        })
        .await;
    }

    let dir = tempfile::tempdir().unwrap();
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/flotilla-alerts.yaml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  \
             - job_name: hub\n    static_configs:\n      - targets: ['{hub_addr}']\n  \
             - job_name: agent\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n",
            rules.canonicalize().unwrap().display()
        ),
    )
    .unwrap();
    let port = flotilla_localkube::ports::free_port().unwrap();
    let _prometheus = ManagedProcess::spawn(
        ProcessSpec::new(
            "prometheus",
            which("prometheus").expect("prometheus (scripts/test-tools.sh)"),
            dir.path().join("prometheus.log"),
        )
        .args([
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ]),
    )
    .unwrap();
    let prometheus = Prometheus { addr: format!("127.0.0.1:{port}") };

    wait_for("both targets up", WAIT, || async {
        prometheus.values("up").await.iter().filter(|(_, v)| *v == 1.0).count() == 2
    })
    .await;
    wait_for("2 clusters Available in Prometheus", WAIT, || async {
        prometheus.value(r#"flotilla_clusters{job="hub",condition="Available",status="True"}"#).await
            == Some(2.0)
    })
    .await;
    let joined = prometheus.value(r#"flotilla_clusters{job="hub",condition="Joined",status="True"}"#).await;
    assert_eq!(joined, Some(2.0));
    let unknown =
        prometheus.value(r#"flotilla_clusters{job="hub",condition="Available",status="Unknown"}"#).await;
    assert_eq!(unknown, Some(0.0), "every pair is reported, zeros included");

    for controller in ["health", "registration", "binder", "status", "work-applier"] {
        let query = format!(r#"sum(flotilla_reconciles_total{{job="hub",controller="{controller}"}})"#);
        wait_for(&format!("reconciles of {controller} scraped"), WAIT, || async {
            prometheus.value(&query).await.is_some_and(|v| v > 0.0)
        })
        .await;
    }
    let ages = prometheus.values(r#"flotilla_cluster_heartbeat_age_seconds{job="hub"}"#).await;
    assert_eq!(ages.len(), 2, "one heartbeat age per pull-mode cluster: {ages:?}");
    assert!(ages.iter().all(|(_, age)| *age < 60.0), "heartbeats are fresh: {ages:?}");
    assert!(prometheus.value(r#"flotilla_queue_depth{job="hub",queue="binder"}"#).await.is_some());
    wait_for("an apply latency per member scraped from the agent", WAIT, || async {
        prometheus
            .value(r#"flotilla_work_apply_latency_seconds_count{job="agent"}"#)
            .await
            .is_some_and(|v| v >= 2.0)
    })
    .await;

    let certificate =
        r#"flotilla_client_certificate_expiry_seconds{job="agent",component="agent",name="m2"}"#;
    assert!(
        prometheus.value(certificate).await.is_some_and(|s| s > 0.0),
        "m2's agent reports its certificate"
    );

    // Every alert rule of the file evaluates against these series without
    // error.
    let rule_count = std::fs::read_to_string(&rules)
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(rule_count >= 10, "the rules file has its alerts: {rule_count}");
    wait_for("alert rules evaluated", WAIT, || async {
        let Some(body) = http_get(&prometheus.addr, "/api/v1/rules").await else { return false };
        let rules: Value = serde_json::from_str(&body).unwrap_or_default();
        let all: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        all.len() == rule_count && all.iter().all(|r| r["health"] == "ok")
    })
    .await;

    // m1's agent stops: its heartbeat ages, Available goes Unknown, and
    // the unreachable alert is pending (it fires after 2 minutes).
    fleet.agents.remove("m1").unwrap().abort();
    wait_for("m1 Unknown in Prometheus", WAIT, || async {
        prometheus.value(r#"flotilla_cluster_available{job="hub",cluster="m1",status="Unknown"}"#).await
            == Some(1.0)
    })
    .await;
    wait_for("FlotillaClusterUnreachable pending for m1", WAIT, || async {
        prometheus
            .value(r#"ALERTS{alertname="FlotillaClusterUnreachable",alertstate="pending",cluster="m1"}"#)
            .await
            == Some(1.0)
    })
    .await;
    let available =
        prometheus.value(r#"flotilla_clusters{job="hub",condition="Available",status="True"}"#).await;
    assert_eq!(available, Some(1.0));
    let m2 = prometheus.value(r#"ALERTS{alertname="FlotillaClusterUnreachable",cluster="m2"}"#).await;
    assert_eq!(m2, None, "m2 still heard from");
}

struct Prometheus {
    addr: String,
}

impl Prometheus {
    /// Each series of an instant query, as (its labels, its value).
    async fn values(&self, query: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", encode(query));
        let Some(body) = http_get(&self.addr, &path).await else { return Vec::new() };
        let Ok(answer) = serde_json::from_str::<Value>(&body) else { return Vec::new() };
        answer["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse().ok()?)))
            .collect()
    }

    /// The value of a query that has one series at most.
    async fn value(&self, query: &str) -> Option<f64> {
        let values = self.values(query).await;
        assert!(values.len() <= 1, "{query} has several series: {values:?}");
        values.first().map(|(_, v)| *v)
    }
}

/// Percent-encoding for a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// A plain HTTP GET's body (HTTP/1.0, so that no answer comes chunked).
async fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}
