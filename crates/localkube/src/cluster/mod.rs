//! A local Kubernetes cluster of real processes ([`Cluster`]): `config`
//! says what it is asked to be, `components` writes its files and command
//! lines, `health` starts them until they answer; this module starts,
//! restarts and stops them.

mod components;
mod config;
mod health;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_core::pki::{CertificateAuthority, LeafSpec};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use crate::etcd::{is_port_clash, Etcd};
use crate::ports::free_port;
use crate::process::{ManagedProcess, ProcessSpec};
use crate::{Binaries, Error, Result};
use components::{
    apiserver_spec, controller_manager_spec, node_scratch_dir, render_kubeconfig, scheduler_spec, write,
    write_static_pki,
};
use health::{
    client_for, config_from_kubeconfig, start_health_checked, wait_apiserver_ready, Component, START_ATTEMPTS,
};

pub(crate) use components::write as write_private;
pub use config::{ClusterConfig, ControllerSet, NodeConfig};
pub use health::node_is_ready;

/// Where the cluster's files live.
#[derive(Debug)]
enum ClusterDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl ClusterDir {
    fn path(&self) -> &Path {
        match self {
            ClusterDir::Temp(t) => t.path(),
            ClusterDir::Kept(p) => p,
        }
    }
}

/// A description of a running cluster, for state files and status output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterInfo {
    pub name: String,
    pub server: String,
    pub kubeconfig: PathBuf,
    pub dir: PathBuf,
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessInfo {
    pub name: String,
    pub pid: Option<u32>,
    pub log: PathBuf,
    /// `https://127.0.0.1:<port>` of its health endpoint, if it has one.
    pub health_url: Option<String>,
}

/// A running Kubernetes cluster made of real processes. Dropping it stops
/// them all and removes its temporary directory.
pub struct Cluster {
    name: String,
    server: String,
    /// The API's address for clients in other network namespaces.
    serve_on: Option<std::net::Ipv4Addr>,
    kubeconfig_path: PathBuf,
    ca: CertificateAuthority,
    admin_config: kube::Config,
    client: Client,
    /// apiserver first, then controller-manager, scheduler, nodes.
    processes: Vec<Component>,
    etcd: Option<Etcd>,
    nodes: Vec<NodeConfig>,
    /// Short-path scratch space for hollow kubelets: their fake runtime's
    /// unix socket lives in their root directory, and socket paths are
    /// limited to 108 bytes.
    node_scratch: tempfile::TempDir,
    dir: ClusterDir,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts etcd (unless shared), kube-apiserver, the controller-manager and
    /// scheduler (if configured) and the hollow nodes, and returns when the
    /// API is ready and every node is Ready.
    pub async fn start(config: ClusterConfig) -> Result<Cluster> {
        config.validate()?;
        let binaries = match &config.binaries {
            Some(b) => b.clone(),
            None => Binaries::locate()?,
        };
        let dir = match &config.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
                ClusterDir::Kept(d.clone())
            }
            None => ClusterDir::Temp(
                tempfile::Builder::new()
                    .prefix(&format!("flotilla-{}-", config.name))
                    .tempdir()
                    .map_err(|e| Error::io(&std::env::temp_dir(), e))?,
            ),
        };
        let root = dir.path().to_path_buf();
        let started = Instant::now();

        let ca = CertificateAuthority::generate(&format!("{}-ca", config.name))?;
        let files = write_static_pki(&root, &ca)?;

        let etcd = match &config.etcd_url {
            Some(_) => None,
            // A throw-away cluster keeps its etcd data in memory.
            None if config.dir.is_none() => Some(Etcd::start_in_memory(&binaries, &root).await?),
            None => Some(Etcd::start(&binaries, &root).await?),
        };
        let etcd_url = match (&config.etcd_url, &etcd) {
            (Some(url), _) => url.clone(),
            (None, Some(e)) => e.client_url().to_string(),
            (None, None) => unreachable!("etcd started above when no URL is given"),
        };
        let etcd_prefix = config.etcd_prefix.clone().unwrap_or_else(|| format!("/{}", config.name));

        // kube-apiserver
        let mut apiserver = None;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port().map_err(|e| Error::io(&root, e))?;
            let server = format!("https://127.0.0.1:{port}");
            let spec = apiserver_spec(&binaries, &root, &config, &files, &ca, port, &etcd_url, &etcd_prefix)?;
            let kubeconfig_path = root.join("admin.kubeconfig");
            let admin = ca.issue(&LeafSpec::client("flotilla-admin", &["system:masters"]))?;
            write(&kubeconfig_path, &render_kubeconfig(&config.name, &server, &ca, admin))?;
            let mut process = ManagedProcess::spawn(spec)?;
            let admin_config = config_from_kubeconfig(&kubeconfig_path).await?;
            let client = client_for(admin_config.clone())?;
            match wait_apiserver_ready(&mut process, &client, config.ready_timeout).await {
                Ok(()) => {
                    apiserver = Some((process, port, server, kubeconfig_path, admin_config, client));
                    break;
                }
                Err(e) if is_port_clash(&e) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        let Some((process, port, server, kubeconfig_path, admin_config, client)) = apiserver else {
            return Err(last_error.unwrap_or_else(|| Error::Config("apiserver never started".into())));
        };
        tracing::info!(cluster = %config.name, %server, elapsed_ms = started.elapsed().as_millis() as u64, "kube-apiserver ready");

        let mut cluster = Cluster {
            name: config.name.clone(),
            server,
            serve_on: config.serve_on,
            kubeconfig_path,
            ca,
            admin_config,
            client,
            processes: vec![Component { process, health_port: Some(port) }],
            etcd,
            nodes: config.nodes.clone(),
            node_scratch: node_scratch_dir()?,
            dir,
        };

        // Controller-manager, scheduler and nodes start together; none of
        // them needs another to come up.
        for node in &config.nodes {
            let spec = cluster.node_spec(&binaries, node)?;
            let process = ManagedProcess::spawn(spec)?;
            cluster.processes.push(Component { process, health_port: None });
        }
        let admin = cluster.admin_config.clone();
        let ca = cluster.ca.clone();
        let timeout = config.ready_timeout;
        let controller_manager = async {
            match config.controllers {
                Some(set) => {
                    start_health_checked(&root, &admin, "kube-controller-manager", timeout, |dir, port| {
                        controller_manager_spec(&binaries, dir, &config, &files, &ca, set, port)
                    })
                    .await
                    .map(Some)
                }
                None => Ok(None),
            }
        };
        let scheduler = async {
            if config.scheduler {
                start_health_checked(&root, &admin, "kube-scheduler", timeout, |dir, port| {
                    scheduler_spec(&binaries, dir, &ca, port)
                })
                .await
                .map(Some)
            } else {
                Ok(None)
            }
        };
        let (controller_manager, scheduler, ()) =
            tokio::try_join!(controller_manager, scheduler, cluster.wait_nodes_ready(&binaries, timeout))?;
        tracing::info!(cluster = %cluster.name, elapsed_ms = started.elapsed().as_millis() as u64, "nodes ready");
        // Keep the order apiserver, controller-manager, scheduler, nodes.
        for component in [scheduler, controller_manager].into_iter().flatten() {
            cluster.processes.insert(1, component);
        }
        if config.wait_for_default_service_account && config.controllers == Some(ControllerSet::All) {
            cluster.wait_default_service_account(timeout).await?;
        }
        tracing::info!(cluster = %cluster.name, nodes = config.nodes.len(), elapsed_ms = started.elapsed().as_millis() as u64, "cluster ready");
        Ok(cluster)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client with cluster-admin rights (group `system:masters`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin client configuration (to derive other clients from).
    pub fn admin_config(&self) -> &kube::Config {
        &self.admin_config
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `https://127.0.0.1:<port>` of the kube-apiserver.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// `https://<serve_on>:<port>`: the API as clients in other network
    /// namespaces reach it (`None` when it serves loopback only).
    pub fn external_server(&self) -> Option<String> {
        let port = self.server.rsplit_once(':').map(|(_, p)| p)?;
        self.serve_on.map(|address| format!("https://{address}:{port}"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The cluster CA (it also signs CertificateSigningRequests).
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    pub fn etcd(&self) -> Option<&Etcd> {
        self.etcd.as_ref()
    }

    /// A kubeconfig for `user` in `groups`, signed by the cluster CA.
    pub fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<String> {
        let cert = self.ca.issue(&LeafSpec::client(user, groups))?;
        Ok(render_kubeconfig(&self.name, &self.server, &self.ca, cert))
    }

    /// A client authenticated as `user` in `groups`.
    pub async fn client_for(&self, user: &str, groups: &[&str]) -> Result<Client> {
        let yaml = self.kubeconfig_for(user, groups)?;
        let kubeconfig = Kubeconfig::from_yaml(&yaml).map_err(|e| Error::Client(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Client(e.to_string()))?;
        client_for(config)
    }

    /// Names of the cluster's processes (`etcd` when it has its own).
    pub fn process_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.processes.iter().map(|c| c.process.name().to_string()).collect();
        if self.etcd.is_some() {
            names.insert(0, "etcd".into());
        }
        names
    }

    /// The process named `name` (`kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, a node's name, or `etcd`).
    pub fn process_mut(&mut self, name: &str) -> Option<&mut ManagedProcess> {
        if name == "etcd" {
            return self.etcd.as_mut().map(Etcd::process_mut);
        }
        self.processes.iter_mut().find(|c| c.process.name() == name).map(|c| &mut c.process)
    }

    /// Stops one process (it stays stopped until [`restart`](Self::restart)).
    pub fn stop(&mut self, name: &str) -> Result<()> {
        let process =
            self.process_mut(name).ok_or_else(|| Error::Config(format!("no process named {name:?}")))?;
        process.stop(Duration::ZERO);
        Ok(())
    }

    /// Starts a process again with its previous command line; for the
    /// apiserver, waits until it is ready again.
    pub async fn restart(&mut self, name: &str) -> Result<()> {
        let process =
            self.process_mut(name).ok_or_else(|| Error::Config(format!("no process named {name:?}")))?;
        process.restart()?;
        if name == "kube-apiserver" {
            let client = self.client.clone();
            let timeout = Duration::from_secs(60);
            let process = self.process_mut(name).ok_or_else(|| Error::Config(name.into()))?;
            wait_apiserver_ready(process, &client, timeout).await?;
        }
        Ok(())
    }

    /// What is running, for state files and `flotilla status`.
    pub fn info(&self) -> ClusterInfo {
        let mut processes: Vec<ProcessInfo> = Vec::new();
        if let Some(etcd) = &self.etcd {
            processes.push(ProcessInfo {
                name: "etcd".into(),
                pid: etcd.process().pid(),
                log: etcd.process().log_path().to_path_buf(),
                health_url: Some(etcd.client_url().to_string()),
            });
        }
        for c in &self.processes {
            processes.push(ProcessInfo {
                name: c.process.name().to_string(),
                pid: c.process.pid(),
                log: c.process.log_path().to_path_buf(),
                health_url: c.health_port.map(|p| format!("https://127.0.0.1:{p}")),
            });
        }
        ClusterInfo {
            name: self.name.clone(),
            server: self.server.clone(),
            kubeconfig: self.kubeconfig_path.clone(),
            dir: self.dir.path().to_path_buf(),
            processes,
        }
    }

    /// Stops everything, giving each process `grace` to exit after SIGTERM.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop_all(grace);
    }

    fn stop_all(&mut self, grace: Duration) {
        // Nodes and controllers first, the apiserver last, then etcd.
        for c in self.processes.iter_mut().rev() {
            c.process.stop(grace);
        }
        if let Some(etcd) = self.etcd.as_mut() {
            etcd.process_mut().stop(grace);
        }
    }

    fn node_spec(&self, binaries: &Binaries, node: &NodeConfig) -> Result<ProcessSpec> {
        let root = self.dir.path();
        let node_dir = root.join("nodes").join(&node.name);
        std::fs::create_dir_all(&node_dir).map_err(|e| Error::io(&node_dir, e))?;
        let cert =
            self.ca.issue(&LeafSpec::client(format!("system:node:{}", node.name), &["system:nodes"]))?;
        let kubeconfig_path = node_dir.join("kubelet.kubeconfig");
        write(&kubeconfig_path, &render_kubeconfig(&self.name, &self.server, &self.ca, cert))?;
        let index = self.nodes.iter().position(|n| n.name == node.name).unwrap_or(self.nodes.len());
        let scratch = self.node_scratch.path().join(format!("n{index}"));
        std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        let kubelet_port = free_port().map_err(|e| Error::io(root, e))?;
        let read_only_port = free_port().map_err(|e| Error::io(root, e))?;
        let labels: Vec<String> = node.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut spec = ProcessSpec::new(
            node.name.clone(),
            binaries.path("kubemark"),
            root.join("logs").join(format!("{}.log", node.name)),
        )
        .args([
            "--morph=kubelet".to_string(),
            format!("--name={}", node.name),
            format!("--kubeconfig={}", kubeconfig_path.display()),
            format!("--kubelet-port={kubelet_port}"),
            format!("--kubelet-read-only-port={read_only_port}"),
            format!("--node-cpu={}", node.cpu),
            format!("--node-memory={}", node.memory),
            format!("--max-pods={}", node.max_pods),
            // Report Ready within ~1s of registering (upstream: 10s). Only
            // changes are posted, so this costs the API server little.
            "--node-status-update-frequency=1s".to_string(),
            // JSON is what our API server speaks best; protobuf works too.
            "--kube-api-content-type=application/vnd.kubernetes.protobuf".to_string(),
        ])
        // The hollow kubelet keeps its root directory under TMPDIR.
        .env("TMPDIR", scratch.display().to_string());
        if !labels.is_empty() {
            spec = spec.arg(format!("--node-labels={}", labels.join(",")));
        }
        if !node.taints.is_empty() {
            spec = spec.arg(format!("--register-with-taints={}", node.taints.join(",")));
        }
        Ok(spec)
    }

    /// Waits until every configured node is registered and Ready.
    async fn wait_nodes_ready(&mut self, binaries: &Binaries, timeout: Duration) -> Result<()> {
        if self.nodes.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        let nodes_api: Api<Node> = Api::all(self.client.clone());
        let mut respawns = 0;
        loop {
            // A hollow node that lost a port race is started again on new ports.
            for i in 0..self.processes.len() {
                let Some(node) =
                    self.nodes.iter().find(|n| n.name == self.processes[i].process.name()).cloned()
                else {
                    continue;
                };
                if let Err(e) = self.processes[i].process.check_running() {
                    if is_port_clash(&e) && respawns < START_ATTEMPTS {
                        respawns += 1;
                        let spec = self.node_spec(binaries, &node)?;
                        self.processes[i].process = ManagedProcess::spawn(spec)?;
                    } else {
                        return Err(e);
                    }
                }
            }
            let ready = match nodes_api.list(&ListParams::default()).await {
                Ok(list) => list.items.iter().filter(|n| node_is_ready(n)).count(),
                Err(_) => 0,
            };
            if ready >= self.nodes.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("{} nodes of cluster {} to be Ready", self.nodes.len(), self.name),
                    seconds: timeout.as_secs(),
                    detail: format!(" ({ready} Ready)"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_default_service_account(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        loop {
            if let Ok(Some(_)) = api.get_opt("default").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "the default service account".into(),
                    seconds: timeout.as_secs(),
                    detail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `count` nodes are Ready (e.g. after restarting some).
    pub async fn wait_ready_nodes(&self, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let nodes_api: Api<Node> = Api::all(self.client.clone());
        loop {
            let ready = match nodes_api.list(&ListParams::default()).await {
                Ok(list) => list.items.iter().filter(|n| node_is_ready(n)).count(),
                Err(_) => 0,
            };
            if ready >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("{count} Ready nodes in cluster {}", self.name),
                    seconds: timeout.as_secs(),
                    detail: format!(" ({ready} Ready)"),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all(Duration::ZERO);
    }
}
