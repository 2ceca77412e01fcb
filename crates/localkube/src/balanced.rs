//! Load spread over several kube-apiserver endpoints the way a
//! health-checking load balancer spreads it: every endpoint's `/readyz` is
//! checked often, and each request goes (round robin) to an endpoint whose
//! last check passed. Nothing is retried: a request that fails, or that
//! finds no ready endpoint, counts as failed. Tests and benchmarks use it to
//! show that rolling a control plane refuses no client request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// How often each endpoint's `/readyz` is checked.
pub const READY_CHECK_EVERY: Duration = Duration::from_millis(100);
/// Failures kept word for word in a [`LoadReport`].
const KEPT_FAILURES: usize = 10;

/// A client of the cluster behind `kubeconfig` that talks to `url` only,
/// with kube's own retries off (a retry would hide a refused request).
pub async fn endpoint_client(kubeconfig: &str, url: &str) -> Result<Client> {
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| Error::Client(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
    config.cluster_url = url.parse().map_err(|e| Error::Client(format!("{url}: {e}")))?;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    config.default_retry = false;
    Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

/// What one endpoint was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointLoad {
    pub url: String,
    pub sent: u64,
    pub failed: u64,
}

/// The outcome of a [`BalancedLoad`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub endpoints: Vec<EndpointLoad>,
    /// Requests that found no endpoint ready (a load balancer answers 503).
    pub without_endpoint: u64,
    /// The first failures, for the message of a failed assertion.
    pub failures: Vec<String>,
}

impl LoadReport {
    /// Every request made, including those that found no endpoint.
    pub fn requests(&self) -> u64 {
        self.endpoints.iter().map(|e| e.sent).sum::<u64>() + self.without_endpoint
    }

    /// Failed requests, including those that found no endpoint.
    pub fn failed(&self) -> u64 {
        self.endpoints.iter().map(|e| e.failed).sum::<u64>() + self.without_endpoint
    }
}

/// Requests running in the background until [`BalancedLoad::stop`].
pub struct BalancedLoad {
    stop: Arc<AtomicBool>,
    checkers: Vec<JoinHandle<()>>,
    /// Taken by `stop`.
    sender: Option<JoinHandle<LoadReport>>,
}

impl BalancedLoad {
    /// Sends `GET path` every `every` over `endpoints` (url, client) that
    /// are ready, after checking each once. Start it once at least one
    /// endpoint is ready, or the first requests find none.
    pub async fn start(endpoints: Vec<(String, Client)>, path: &str, every: Duration) -> BalancedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let mut ready = Vec::new();
        for (_, client) in &endpoints {
            ready.push(Arc::new(AtomicBool::new(endpoint_ready(client).await)));
        }
        let checkers = endpoints
            .iter()
            .zip(&ready)
            .map(|((_, client), ready)| {
                tokio::spawn(check_ready(client.clone(), ready.clone(), stop.clone()))
            })
            .collect();
        let sender = tokio::spawn(send(endpoints, ready, path.to_string(), every, stop.clone()));
        BalancedLoad { stop, checkers, sender: Some(sender) }
    }

    /// Stops sending and checking; what was sent.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for checker in std::mem::take(&mut self.checkers) {
            let _ = checker.await;
        }
        match self.sender.take() {
            Some(sender) => sender.await.unwrap_or_default(),
            None => LoadReport::default(),
        }
    }
}

impl Drop for BalancedLoad {
    fn drop(&mut self) {
        // Also when dropped without `stop` (a failed test): no task outlives it.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether the endpoint's `/readyz` passes now.
pub async fn endpoint_ready(client: &Client) -> bool {
    get(client, "/readyz").await.is_ok()
}

async fn get(client: &Client, path: &str) -> Result<(), String> {
    let request = http::Request::get(path).body(Vec::new()).map_err(|e| e.to_string())?;
    // The read timeout is the client's own; this bounds a stuck connect too.
    match tokio::time::timeout(Duration::from_secs(6), client.request_text(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 6s".to_string()),
    }
}

async fn check_ready(client: Client, ready: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let ok = endpoint_ready(&client).await;
        ready.store(ok, Ordering::Relaxed);
        tokio::time::sleep(READY_CHECK_EVERY).await;
    }
}

async fn send(
    endpoints: Vec<(String, Client)>,
    ready: Vec<Arc<AtomicBool>>,
    path: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> LoadReport {
    let mut report = LoadReport {
        endpoints: endpoints
            .iter()
            .map(|(url, _)| EndpointLoad { url: url.clone(), ..Default::default() })
            .collect(),
        ..Default::default()
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let n = endpoints.len();
        let Some(chosen) = (0..n).map(|i| (next + i) % n.max(1)).find(|&i| ready[i].load(Ordering::Relaxed))
        else {
            report.without_endpoint += 1;
            if report.failures.len() < KEPT_FAILURES {
                report.failures.push("no endpoint was ready".to_string());
            }
            continue;
        };
        next = chosen + 1;
        let (url, client) = &endpoints[chosen];
        let load = &mut report.endpoints[chosen];
        load.sent += 1;
        if let Err(e) = get(client, &path).await {
            load.failed += 1;
            if report.failures.len() < KEPT_FAILURES {
                report.failures.push(format!("{url}: {e}"));
            }
        }
    }
    report
}
