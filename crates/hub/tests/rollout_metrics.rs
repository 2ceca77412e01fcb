#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A metric gate against a real Prometheus (Debian's package, installed by
//! `scripts/test-tools.sh`) scraping a real endpoint the test serves: the
//! error ratio each member reports. A new revision reaches wave 1 (m1) and
//! soaks; m1's error ratio goes over the gate's bound; the rollout rolls
//! back with the gate's reason, and m2 and m3 never see the revision.
//! While it soaks, the hub's scrape times the soak against its limit.

use flotilla_testkit as support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_api::rollout::Rollout;
use flotilla_localkube::{wait_for, ManagedProcess, ProcessSpec};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::json;
use support::rollout::{roll_out_web_in_waves, rollout_until, web_deployment};
use support::{apply, Fleet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "shop";
const WAIT: Duration = Duration::from_secs(120);

/// Serves `app_error_ratio{cluster=...}` in Prometheus's text format, the
/// values as the test sets them.
async fn serve_metrics(ratios: Arc<Mutex<Vec<(String, f64)>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { continue };
            let ratios = ratios.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let body: String = ratios
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(cluster, ratio)| format!("app_error_ratio{{cluster=\"{cluster}\"}} {ratio}\n"))
                    .collect();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

async fn image_in(fleet: &Fleet, member: &str) -> Option<String> {
    let d = Api::<Deployment>::namespaced(fleet.member(member).client(), NS).get_opt("web").await.ok()??;
    d.spec.template.spec?.containers.into_iter().next()?.image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_gate_over_its_bound_in_prometheus_rolls_the_wave_back() {
    let ratios =
        Arc::new(Mutex::new(vec![("m1".to_string(), 0.0), ("m2".to_string(), 0.0), ("m3".to_string(), 0.0)]));
    let metrics_port = serve_metrics(ratios.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    \
             static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        ),
    )
    .unwrap();
    let prometheus_port = flotilla_localkube::ports::free_port().unwrap();
    let prometheus_bin = which("prometheus").expect("prometheus (scripts/test-tools.sh installs it)");
    let _prometheus = ManagedProcess::spawn(
        ProcessSpec::new("prometheus", prometheus_bin, dir.path().join("prometheus.log")).args([
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        ]),
    )
    .unwrap();
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    wait_for("Prometheus scraping the endpoint", WAIT, || async {
        let url = format!("{prometheus}/api/v1/query?query=app_error_ratio");
        http_get(&url).await.is_some_and(|body| body.contains("\"m1\""))
    })
    .await;

    let fleet = Fleet::start(&["eu", "eu", "eu"], &[]).await;
    let hub = fleet.hub.client();
    roll_out_web_in_waves(&hub, NS, false, json!({"waves": {"ratio": "1:1:1"}, "soakSeconds": 60, "progressDeadlineSeconds": 120, "metricGates": [{"name": "errors", "prometheus": prometheus, "query": "max(app_error_ratio{cluster=\"{{cluster}}\"})", "max": 0.1}]})).await;
    let rollouts: Api<Rollout> = Api::namespaced(hub.clone(), NS);
    apply(&hub, web_deployment(NS, "web:1")).await;
    rollout_until(&rollouts, WAIT, "completed revision 1", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "Complete" && s.revision_number == 1)
    })
    .await;

    // Wave 1 healthy on web:2 and soaking: the gate passes (ratio 0).
    apply(&hub, web_deployment(NS, "web:2")).await;
    rollout_until(&rollouts, WAIT, "soaked wave 1", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "Soaking" && s.wave == 1 && s.revision_number == 2)
    })
    .await;
    assert_eq!(image_in(&fleet, "m1").await.as_deref(), Some("web:2"));
    // The hub's gauges time the soak against its 60 s (what the
    // FlotillaRolloutStuck alert reads); a Complete rollout has none.
    let scrape = flotilla_metrics::encode().unwrap();
    let soaking = |metric: &str| {
        scrape
            .lines()
            .find(|l| {
                l.starts_with(&format!("{metric}{{"))
                    && l.contains("namespace=\"shop\"")
                    && l.contains("phase=\"Soaking\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {metric} for the soaking rollout:\n{scrape}"))
    };
    assert_eq!(soaking("flotilla_rollout_step_limit_seconds"), 60.0);
    assert!((0.0..60.0).contains(&soaking("flotilla_rollout_step_seconds")), "{scrape}");

    // m1's errors go over the bound: rolled back within a few scrapes.
    ratios.lock().unwrap()[0].1 = 0.5;
    let back = rollout_until(&rollouts, WAIT, "rolled back", |r| {
        r.status.as_ref().is_some_and(|s| s.phase == "RolledBack")
    })
    .await;
    let failure = back.status.unwrap().failure.unwrap();
    assert_eq!(failure.cluster.as_deref(), Some("m1"));
    assert_eq!(failure.reason, "m1: metric gate errors: 0.5 is above 0.1");
    wait_for("m1 back on web:1", WAIT, || async { image_in(&fleet, "m1").await.as_deref() == Some("web:1") })
        .await;
    for m in ["m2", "m3"] {
        assert_eq!(image_in(&fleet, m).await.as_deref(), Some("web:1"), "{m} never sees web:2");
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// A plain HTTP GET's body (the test's own check that Prometheus scrapes).
async fn http_get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}
