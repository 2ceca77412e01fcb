//! Starting a component until it answers its health check, and clients
//! that give up fast on a server still starting.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::etcd::is_port_clash;
use crate::ports::free_port;
use crate::process::{log_tail, ManagedProcess, ProcessSpec};
use crate::{Error, Result};

pub const START_ATTEMPTS: usize = 3;

pub struct Component {
    pub process: ManagedProcess,
    pub health_port: Option<u16>,
}

pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Starts a component that serves `/healthz` on `port` and waits until it
/// answers; on a port clash, tries again on another port.
pub async fn start_health_checked(
    root: &Path,
    admin_config: &kube::Config,
    name: &str,
    timeout: Duration,
    make_spec: impl Fn(&Path, u16) -> Result<ProcessSpec>,
) -> Result<Component> {
    let mut last_error = None;
    for _ in 0..START_ATTEMPTS {
        let port = free_port().map_err(|e| Error::io(root, e))?;
        let mut process = ManagedProcess::spawn(make_spec(root, port)?)?;
        let mut health_config = admin_config.clone();
        health_config.cluster_url = format!("https://127.0.0.1:{port}")
            .parse()
            .map_err(|e| Error::Config(format!("health URL: {e}")))?;
        let health = client_for(health_config)?;
        match wait_healthz(&mut process, &health, "/healthz", timeout).await {
            Ok(()) => return Ok(Component { process, health_port: Some(port) }),
            Err(e) if is_port_clash(&e) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Config(format!("{name} never started"))))
}

pub async fn config_from_kubeconfig(path: &Path) -> Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Client(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Client(e.to_string()))
}

pub fn client_for(mut config: kube::Config) -> Result<Client> {
    // Fail fast while polling a server that is still starting.
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

pub async fn wait_apiserver_ready(
    process: &mut ManagedProcess,
    client: &Client,
    timeout: Duration,
) -> Result<()> {
    wait_healthz(process, client, "/readyz", timeout).await
}

/// Polls `path` until it answers `ok`, failing early (with the log tail) if
/// the process exits.
pub async fn wait_healthz(
    process: &mut ManagedProcess,
    client: &Client,
    path: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        process.check_running()?;
        let request = http::Request::get(path).body(Vec::new()).map_err(|e| Error::Client(e.to_string()))?;
        let last = match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("{} {path}", process.name()),
                seconds: timeout.as_secs(),
                detail: format!(
                    "; last answer: {last}; last lines of {}:\n{}",
                    process.log_path().display(),
                    log_tail(process.log_path(), 15)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
